"""A circuit folded into a GGUF file, for llama.cpp and Ollama, with every other tensor left byte-identical.

The source is a GGUF (a zoo model's, or a user's file). The copy has the same metadata and tensors; only the
down-projections (``blk.{L}.ffn_down.weight``) of the circuit's layers are replaced by their folded values:
dequantized to float32, the circuit's input columns multiplied by ``m``, stored as F16 (default) or BF16.
Every other tensor is copied byte for byte, with its quantization. The export's description is stored in
the file's metadata under ``neurogate.export`` (JSON). Tensors are streamed one at a time, so memory stays
at about one layer's down-projection.

GGUF keeps ``ffn_down`` as ``[n_embd, n_ff]`` in row-major order (llama.cpp's ``ne = {n_ff, n_embd}``), the
same orientation as a transformers ``nn.Linear`` weight, so neuron ``j`` is column ``j``. A circuit found on
a mixture-of-experts model folds into the experts' 3-D ``ffn_down_exps`` (and the shared expert's
``ffn_down_shexp``) instead: :mod:`neurogate.export.gguf_experts`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

from neurogate.atomic import atomic_path
from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import CircuitError, ConfigError, ModelLoadError
from neurogate.export.gguf_experts import GGUF_ARCH, Edit, apply_edits, moe_width, targets
from neurogate.export.output import check_file_target, check_finite, multiplier_json

logger = logging.getLogger(__name__)

STORE_TYPES = {"f16": GGMLQuantizationType.F16, "bf16": GGMLQuantizationType.BF16}
_TORCH = {"f16": torch.float16, "bf16": torch.bfloat16}
_HEADER = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def read_gguf(path: str | os.PathLike[str]) -> GGUFReader:
    """Open a GGUF file for reading (memory-mapped); a clear error when it is missing or not a GGUF."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"GGUF file {str(p)!r} does not exist: check the path")
    try:
        return GGUFReader(p)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{p} is not a readable GGUF file ({exc})") from exc


def field_value(reader: GGUFReader, key: str) -> Any:
    """The value of metadata ``key``, or ``None``."""
    found = reader.get_field(key)
    return None if found is None else found.contents()


def gguf_shape(reader: GGUFReader) -> dict[str, Any]:
    """The architecture name and the circuit-relevant shape of a GGUF model."""
    arch = str(field_value(reader, "general.architecture") or "")
    moe = moe_width(lambda key: field_value(reader, key), arch)
    return {
        "arch": arch,
        "n_layers": field_value(reader, f"{arch}.block_count"),
        "d_mlp": moe if moe is not None else field_value(reader, f"{arch}.feed_forward_length"),
        "d_model": field_value(reader, f"{arch}.embedding_length"),
    }


def check_circuit(circuit: Circuit, reader: GGUFReader, source: str) -> None:
    """Raise :class:`CircuitError` unless the circuit was found on a model of this GGUF's shape."""
    theirs = gguf_shape(reader)
    mine = circuit.shape
    diffs = [
        f"{k}: circuit {mine.get(k)!r} vs GGUF {theirs[k]!r}"
        for k in ("n_layers", "d_mlp", "d_model")
        if mine.get(k) != theirs[k]
    ]
    names = {str(mine.get(k, "")).removesuffix("_text") for k in ("family", "model_type")}
    names |= {GGUF_ARCH[name] for name in names if name in GGUF_ARCH}
    if theirs["arch"] not in names:
        diffs.append(f"architecture: circuit {mine.get('family')!r} vs GGUF {theirs['arch']!r}")
    if diffs:
        raise CircuitError(
            f"this circuit was found on {circuit.model.get('spec', '?')} and does not fit {source} ("
            + "; ".join(diffs)
            + ")"
        )


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter) -> None:
    for name, field in reader.fields.items():
        if name in _HEADER or name == "general.architecture" or not field.types:
            continue
        if name == "general.alignment":
            writer.add_custom_alignment(int(field.contents()))
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        if sub == GGUFValueType.ARRAY:
            raise ConfigError(f"metadata {name!r} is an array of arrays, which this copier cannot write")
        writer.add_key_value(name, field.contents(), main, sub_type=sub)


def _folded(tensor: Any, edits: list[Edit], store: str) -> np.ndarray:
    """The tensor dequantized, its edited columns scaled (per expert slice in a 3-D tensor), in the storage
    type's bytes."""
    values = torch.from_numpy(np.ascontiguousarray(quants.dequantize(tensor.data, tensor.tensor_type)))
    if values.dim() == 3:
        values = apply_edits(values.clone(), edits)
    else:
        values = apply_edits(values.reshape(-1, values.shape[-1]).clone(), edits)
    check_finite(values, _TORCH[store], f"the folded {tensor.name}")
    if store == "f16":
        return values.numpy().astype(np.float16)
    return np.asarray(quants.quantize(values.numpy(), GGMLQuantizationType.BF16))


def export_gguf(
    source: str | os.PathLike[str],
    circuit: Circuit,
    multiplier: Multiplier,
    out_path: str | os.PathLike[str],
    *,
    store: str = "f16",
    overwrite: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Copy the GGUF ``source`` to ``out_path`` with ``multiplier`` folded into the circuit's
    down-projections (stored as ``store``: ``"f16"`` or ``"bf16"``); every other tensor is unchanged.
    ``extra_meta`` adds keys to the stored description. Mean-ablation's constant has no place in this file:
    :func:`neurogate.export.mean_constant.export_gguf_mean` adds a control vector for it."""
    if store not in STORE_TYPES:
        raise ConfigError(f"the folded tensors are stored as f16 or bf16, not {store!r}")
    reader = read_gguf(source)
    check_circuit(circuit, reader, str(source))
    out = check_file_target(out_path, overwrite, inputs=(str(source),))
    scales = circuit.scales(multiplier)
    edits = targets(circuit, scales)
    tensors = {t.name: t for t in reader.tensors}
    missing = sorted(set(edits) - set(tensors))
    if missing:
        raise ConfigError(
            f"{source} has no tensor {missing[0]}; neurogate folds into llama.cpp's ffn_down (dense layers) "
            "or ffn_down_exps / ffn_down_shexp (experts stored as one 3-D tensor per layer)"
        )
    meta = {
        "source_model": str(source),
        "neurons": len(circuit),
        "per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        "multiplier": multiplier_json(circuit, multiplier),
        "stored_as": store,
        "circuit": circuit.to_dict(),
        **(extra_meta or {}),
    }
    with atomic_path(out) as tmp:
        writer = GGUFWriter(tmp, str(field_value(reader, "general.architecture")))
        _copy_metadata(reader, writer)
        writer.add_string("neurogate.export", json.dumps(meta))
        for t in reader.tensors:
            if t.name in edits:
                lead = tuple(int(n) for n in reversed(t.shape[2:]))  # the experts axis of a 3-D tensor
                rows, cols = int(t.shape[1]), int(t.shape[0])  # ne = {cols, rows[, experts]}
                nbytes = int(np.prod(lead, dtype=np.int64)) * rows * cols * 2
                shape = (*lead, rows, cols) if store == "f16" else (*lead, rows, cols * 2)
                dtype = np.dtype(np.float16) if store == "f16" else np.dtype(np.uint8)
                raw = None if store == "f16" else STORE_TYPES[store]
                writer.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=raw)
            else:
                writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            edit = edits.get(t.name)
            data = t.data if edit is None else _folded(t, edit, store)
            writer.write_tensor_data(data)
        writer.close()
    logger.info("wrote %s with %d folded down-projections", out, len(edits))
    return out


def changed_tensors(source: str | os.PathLike[str], exported: str | os.PathLike[str]) -> list[str]:
    """Names of the tensors whose type or bytes differ between two GGUF files (a check for tests and
    users: an export should list only the circuit's down-projections)."""
    a = {t.name: t for t in read_gguf(source).tensors}
    b = {t.name: t for t in read_gguf(exported).tensors}
    if set(a) != set(b):
        raise ConfigError("the two GGUF files do not hold the same tensor names")
    return [
        name
        for name in a
        if a[name].tensor_type != b[name].tensor_type or a[name].data.tobytes() != b[name].data.tobytes()
    ]

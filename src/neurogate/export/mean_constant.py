"""Mean-ablation's constant for llama.cpp: the folded GGUF plus a control vector that adds the constant.

Mean-ablation moves each circuit neuron toward its negative-prompt mean, ``a_i <- m_i a_i + (1 - m_i)
mean_neg_i``. Through the down-projection that is the fold (column ``i`` of ``W_down`` scaled by ``m_i``,
as for ``cna``) plus a constant ``c_L = sum_i (1 - m_i) mean_neg_i W_down[:, i]`` added to layer ``L``'s MLP
output at every position: a down-projection bias, which llama.cpp's ``ffn_down`` does not have.

llama.cpp adds a control vector's ``direction.{L}`` to the residual stream at the end of decoder layer ``L``
(:mod:`neurogate.export.control_vector`). In a block whose MLP output is added straight to the residual
stream (Llama, Qwen2, Mistral, GPT-2, GPT-NeoX, ...), that addition is the last thing layer ``L`` does to
the stream, so adding ``c_L`` to the MLP output or to the stream at the end of layer ``L`` is the same sum:
the file holds ``direction.{L} = c_L``. Two cases have no such slot and are refused with what to do
instead: a constant in layer 0 (llama.cpp has no control vector there), and families that normalise the
MLP output before adding it (Gemma 2/3, OLMo 2: llama.cpp's ``blk.{L}.post_ffw_norm``), where a constant
added after the norm is not the same as one added before it.

``c_L`` is computed in float32 from the source GGUF's own dequantized ``ffn_down`` (the weights llama.cpp
runs), from the columns before folding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader, quants

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import ConfigError
from neurogate.export.control_vector import write_control_vector
from neurogate.export.gguf import check_circuit, export_gguf, gguf_shape, read_gguf
from neurogate.export.output import check_file_target, check_finite

VECTOR_SUFFIX = ".control.gguf"
LAYER_ZERO = (
    "the circuit's mean-ablation writes a constant in layer 0, and llama.cpp's control vectors have no slot "
    "for layer 0; restrict the circuit to layers 1 and later (tune with a layer window that starts at 1 or "
    "later), export --kind cna, or export --format lora (PEFT) or --format dir"
)


def vector_path(out: str | os.PathLike[str]) -> Path:
    """Where the control vector goes beside the GGUF ``out``: ``steered.gguf`` -> ``steered.control.gguf``."""
    path = Path(out).expanduser()
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return path.with_name(stem + VECTOR_SUFFIX)


def gguf_constants(reader: GGUFReader, circuit: Circuit, multiplier: Multiplier) -> dict[int, np.ndarray]:
    """``{layer: c_L}`` (float32 ``[n_embd]``) from the GGUF's dequantized ``ffn_down`` columns, for every
    circuit layer whose constant is not all zero."""
    tensors = {t.name: t for t in reader.tensors}
    out: dict[int, np.ndarray] = {}
    for layer, scale in circuit.scales(multiplier, "mean").items():
        assert scale.offset is not None
        if not bool(scale.offset.any()):
            continue
        name = f"blk.{layer}.ffn_down.weight"
        if name not in tensors:
            raise ConfigError(f"the GGUF has no tensor {name}; neurogate folds into llama.cpp's ffn_down")
        t = tensors[name]
        values = torch.from_numpy(np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type)))
        columns = values.reshape(-1, values.shape[-1]).float()[:, scale.index]  # [n_embd, k]
        constant = columns @ scale.offset
        check_finite(constant, torch.float32, f"layer {layer}'s mean-ablation constant")
        out[layer] = constant.numpy().astype(np.float32)
    return out


def check_slots(reader: GGUFReader, constants: dict[int, np.ndarray]) -> None:
    """Refuse constants llama.cpp's control vector cannot add exactly (see the module docstring)."""
    if 0 in constants:
        raise ConfigError(LAYER_ZERO)
    names = {t.name for t in reader.tensors}
    normed = sorted(layer for layer in constants if f"blk.{layer}.post_ffw_norm.weight" in names)
    if normed:
        raise ConfigError(
            "this model normalises its MLP output before adding it to the residual stream (layer "
            f"{normed[0]} has post_ffw_norm), so a control vector cannot stand in for mean-ablation's "
            "constant; export --format lora (its bias acts before the norm, in PEFT) or --kind cna"
        )


def export_gguf_mean(
    source: str | os.PathLike[str],
    circuit: Circuit,
    multiplier: Multiplier,
    out_path: str | os.PathLike[str],
    *,
    store: str = "f16",
    overwrite: bool = False,
    vector_out: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Mean-ablation at ``multiplier`` for llama.cpp: the folded GGUF at ``out_path`` (exactly the
    :func:`~neurogate.export.gguf.export_gguf` of the same multiplier) and a control vector holding each
    layer's constant at ``vector_out`` (default: :func:`vector_path`). Both are checked before either is
    written; returns ``(gguf, control vector)``. Run with ``llama-server -m GGUF --control-vector VECTOR``."""
    reader = read_gguf(source)
    check_circuit(circuit, reader, str(source))
    constants = gguf_constants(reader, circuit, multiplier)
    check_slots(reader, constants)
    if not constants:
        raise ConfigError(
            "mean-ablation at this multiplier writes no constant (every neuron's (1 - m) * mean is 0); "
            "export --kind cna for the same model"
        )
    vec_out = vector_path(out_path) if vector_out is None else Path(vector_out).expanduser()
    out = check_file_target(out_path, overwrite, inputs=(str(source),))
    vec = check_file_target(vec_out, overwrite, inputs=(str(source), str(out)))
    if vec == out:
        raise ConfigError("the control vector and the GGUF need two different file names")
    shape = gguf_shape(reader)
    note = {"toward": "mean", "model": out.name, "layers": sorted(constants)}
    write_control_vector(
        constants, vec, n_layers=int(shape["n_layers"]), model_hint=str(shape["arch"]), note=json.dumps(note)
    )
    try:
        extra = {"toward": "mean", "control_vector": vec.name}
        export_gguf(source, circuit, multiplier, out, store=store, overwrite=overwrite, extra_meta=extra)
    except BaseException:
        vec.unlink(missing_ok=True)
        raise
    return out, vec

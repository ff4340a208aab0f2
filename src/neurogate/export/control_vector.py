"""CAA as a llama.cpp control vector: the GGUF that ``llama-cli`` / ``llama-server --control-vector`` read.

llama.cpp adds tensor ``direction.{L}`` (float32, ``[n_embd]``) to the residual stream at the end of
decoder layer ``L`` (counted from 0, as neurogate counts), at every position; it has no slot for layer 0.
CAA at strength ``s`` subtracts ``s * v`` after layer ``L`` at every position, so the file holds
``direction.{L} = -s * v`` and nothing else (llama.cpp treats missing layers as zero). ``--control-vector``
applies it as exported; ``--control-vector-scaled FILE:k`` applies ``k`` times it.

The layer-0 gap is llama.cpp's own: its loader (``src/llama-adapter.cpp``, ``llama_control_vector_init``
and ``llama_control_vector_apply``) creates no tensor for layer 0 and lays the file's vectors out from
layer 1 on, so a ``direction.0`` would never be added. :func:`write_control_vector` writes any set of
layers (mean-ablation's constants, :mod:`neurogate.export.mean_constant`, use it too).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from neurogate.atomic import atomic_path
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.export.output import check_file_target

ARCH = "controlvector"


def control_vector(
    directions: ResidualDirections, strength: float = 1.0, layer: int | None = None
) -> np.ndarray:
    """The vector llama.cpp adds after ``layer`` for CAA at ``strength``: ``-strength * v``, float32."""
    chosen = directions.best_layer if layer is None else directions.check_layer(layer)
    if chosen == 0:
        raise ConfigError(
            "llama.cpp control vectors cannot act after layer 0; pick --layer 1 or later for the GGUF export"
        )
    vec = (-float(strength) * directions.vector(chosen)).numpy().astype(np.float32)
    if not np.isfinite(vec).all():
        raise ConfigError(f"the control vector at strength {strength} is not finite")
    return vec


def export_control_vector(
    directions: ResidualDirections,
    out_path: str | os.PathLike[str],
    *,
    strength: float = 1.0,
    layer: int | None = None,
    model_hint: str = "",
    overwrite: bool = False,
) -> Path:
    """Write CAA at ``strength`` after ``layer`` (default: the directions' best layer) as a llama.cpp
    control-vector GGUF. ``model_hint``: the GGUF architecture it is meant for (``llama``, ``qwen2``, ...)."""
    chosen = directions.best_layer if layer is None else directions.check_layer(layer)
    vec = control_vector(directions, strength, chosen)
    out = check_file_target(out_path, overwrite)
    hint = model_hint or str(directions.model.get("shape", {}).get("family", ""))
    note = f"caa s={float(strength):g} layer={chosen}"
    return write_control_vector({chosen: vec}, out, n_layers=directions.n_layers, model_hint=hint, note=note)


def write_control_vector(
    vectors: dict[int, np.ndarray], out: Path, *, n_layers: int, model_hint: str, note: str
) -> Path:
    """Write ``{layer: vector}`` (float32 ``[n_embd]`` each, layers 1 and later) to the checked file target
    ``out`` as a llama.cpp control-vector GGUF, with ``note`` under ``neurogate.export``."""
    if 0 in vectors:
        raise ConfigError("llama.cpp control vectors have no slot for layer 0")
    with atomic_path(out) as tmp:
        writer = GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", n_layers)
        writer.add_string("neurogate.export", note)
        for layer, vec in sorted(vectors.items()):
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(vec, dtype=np.float32))
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def read_control_vector(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """The ``{layer: vector}`` a control-vector GGUF holds (read back the way llama.cpp reads it)."""
    from neurogate.export.gguf import read_gguf

    out: dict[int, np.ndarray] = {}
    for tensor in read_gguf(path).tensors:
        prefix, _, number = tensor.name.partition(".")
        if prefix != "direction" or not number.isdigit():
            continue
        out[int(number)] = np.array(tensor.data, dtype=np.float32).reshape(-1)
    return out

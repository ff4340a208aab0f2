"""Choosing a dtype and a device: bf16 where the hardware runs it fast, float32 elsewhere."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from neurogate.errors import ConfigError

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 BF16 units, where bf16 matmuls beat float32 several-fold."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    words = set(flags.split())
    return bool(words & {"amx_bf16", "avx512_bf16"})


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when present, else CPU; anything else is parsed by torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible: use --device cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA and on CPUs with fast bf16 units, float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dev = device or resolve_device("auto")
        if dev.type == "cuda" or (dev.type == "cpu" and cpu_has_fast_bf16()):
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown dtype {dtype!r}: use 'auto', " + ", ".join(sorted(set(_DTYPES)))
        ) from None


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a torch dtype (``torch.bfloat16`` -> ``"bfloat16"``)."""
    return str(dtype).removeprefix("torch.")

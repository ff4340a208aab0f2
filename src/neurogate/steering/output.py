"""What every export format shares: safe targets, staged writes renamed into place, finite weights, and
the description of what was folded in.

Rules: a target is written beside itself (a temporary name in the same folder) and renamed into place, so
a crash never leaves half an export; an existing target is replaced only when it is empty or is an export
neurogate wrote (it carries :data:`MARKER`), never a folder or file neurogate did not create; and every
changed weight is checked to be finite in the dtype it is stored in before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import ConfigError

MARKER = "neurogate_export.json"
GGUF_MAGIC = b"GGUF"


def _is_neurogate_export(path: Path) -> bool:
    try:
        meta = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == "neurogate.export"


def check_dir_target(out: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty folder unless ``overwrite`` and neurogate wrote it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(
            f"{out} is not empty; pass overwrite=True (--overwrite) to replace it, or pick a new --out"
        )
    if not _is_neurogate_export(out):
        raise ConfigError(
            f"{out} is not empty and is not a neurogate export (no {MARKER}), so --overwrite will not "
            "replace it: neurogate never deletes what it did not write. Pick a new --out."
        )


@contextmanager
def staged_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; when the block succeeds it takes ``out_dir``'s place.

    The folder must end up holding :data:`MARKER` (the block writes it), which is what later lets
    ``overwrite`` replace it. On failure the temporary folder is removed and ``out_dir`` is untouched.
    """
    out = Path(out_dir).expanduser().resolve()
    check_dir_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it private; an export is an ordinary folder
    try:
        yield tmp
        if not (tmp / MARKER).is_file():
            raise RuntimeError(f"an export must write {MARKER}")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_file_target(out: Path, overwrite: bool, magic: bytes = GGUF_MAGIC) -> None:
    """Refuse a target that is a folder, or an existing file unless ``overwrite`` and it starts with
    ``magic`` (a file of the format neurogate writes, not some other file that happens to be there)."""
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give a file name for --out (e.g. steered.gguf)")
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(
            f"{out} exists; pass overwrite=True (--overwrite) to replace it, or pick a new --out"
        )
    with out.open("rb") as fh:
        if fh.read(len(magic)) != magic:
            raise ConfigError(f"{out} exists and is not a {magic.decode()} file, so it will not be replaced")


def check_finite(values: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Raise unless ``values`` stay finite once stored as ``dtype`` (a large multiplier can overflow)."""
    stored = values.to(dtype)
    if not bool(torch.isfinite(stored).all()):
        worst = float(values.float().abs().max())
        raise ConfigError(
            f"{what} is not finite once stored as {str(dtype).removeprefix('torch.')} (largest magnitude "
            f"{worst:.3g}); use a smaller multiplier or a wider dtype"
        )


def describe_multiplier(circuit: Circuit, multiplier: Multiplier) -> str:
    """``"0 for every neuron"`` or the range of per-neuron multipliers."""
    if isinstance(multiplier, int | float):
        return f"{float(multiplier):g} for every neuron"
    factors = circuit.factors(multiplier)
    return f"per neuron, {min(factors):g} to {max(factors):g} (listed in {MARKER})"


def multiplier_json(circuit: Circuit, multiplier: Multiplier) -> float | list[dict[str, Any]]:
    """The multiplier as JSON: one number, or one entry per neuron."""
    if isinstance(multiplier, int | float):
        return float(multiplier)
    return [
        {"layer": n.layer, "index": n.index, "multiplier": f}
        for n, f in zip(circuit.neurons, circuit.factors(multiplier), strict=True)
    ]


def write_meta(
    folder: Path, fmt: str, source: str, circuit: Circuit, multiplier: Multiplier, **extra: Any
) -> None:
    """Write :data:`MARKER` (what was exported, from what) and the circuit beside it."""
    meta = {
        "kind": "neurogate.export",
        "format": fmt,
        "source_model": source,
        "neurons": len(circuit),
        "per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        "multiplier": multiplier_json(circuit, multiplier),
        **extra,
    }
    (folder / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    circuit.save(folder / "neurogate_circuit.json")


def circuit_lines(circuit: Circuit, multiplier: Multiplier, total_neurons: int) -> list[str]:
    """README bullet lines describing the circuit and multiplier."""
    per_layer = ", ".join(f"L{layer}: {count}" for layer, count in circuit.per_layer().items())
    return [
        f"- Circuit: {len(circuit)} neurons ({100 * len(circuit) / total_neurons:.3f}% of "
        f"{total_neurons:,}), found on `{circuit.model.get('spec', '?')}` by "
        f"`{circuit.method.get('score', '?')}`",
        f"- Neurons per layer: {per_layer}",
        f"- Multiplier: {describe_multiplier(circuit, multiplier)} (0 ablates, 1 leaves unchanged)",
        "- The circuit is in `neurogate_circuit.json`.",
    ]

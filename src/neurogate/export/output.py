"""What every export format shares: staged writes renamed into place, safe file targets, finite weights,
and the description of what was folded in.

The folder rules are :mod:`neurogate.outputs`' (and :func:`neurogate.export.model.check_target`'s): a
target is written in a temporary folder this process owns beside it and renamed into place, so a crash
never leaves half an export; an existing target is replaced only when it is an earlier neurogate export (it
carries :data:`MARKER`). File formats (GGUF) replace only a file of their own format. Every changed weight is
checked to be finite in the dtype it is stored in before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import ConfigError
from neurogate.outputs import OWNER, TEMP_PREFIX, apply_umask, owned_tempdir, release, sweep
from neurogate.outputs import check_file_target as check_file_path
from neurogate.outputs import check_target as check_target_path

MARKER = "neurogate_export.json"
GGUF_MAGIC = b"GGUF"


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside the checked target ``out``; when the block succeeds it takes
    ``out``'s place (an earlier export there is moved aside first and put back if the rename fails). The
    block must write :data:`MARKER`. On failure the temporary folder goes and ``out`` is untouched."""
    sweep(out.parent, TEMP_PREFIX)
    with owned_tempdir(out.parent, f"{TEMP_PREFIX}{out.name}-") as tmp:
        yield tmp
        if not (tmp / MARKER).is_file():
            raise RuntimeError(f"an export must write {MARKER}")
        apply_umask(tmp)
        release(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return
        with owned_tempdir(out.parent, f"{TEMP_PREFIX}{out.name}-old-") as old:
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:  # put the earlier export back rather than lose both
                os.replace(old / out.name, out)
                raise


def check_file_target(
    out: str | os.PathLike[str], overwrite: bool, magic: bytes = GGUF_MAGIC, inputs: tuple[str, ...] = ()
) -> Path:
    """Refuse an unsafe file target (:func:`neurogate.outputs.check_target`: no symlinks, not an input), a
    folder, or an existing file unless ``overwrite`` and it starts with ``magic`` (a file of the format
    neurogate writes, not some other file that happens to be there); return it resolved."""
    check_file_path(out, "--out", example="steered.gguf")
    target = check_target_path(out, inputs=inputs)
    if not target.exists():
        return target
    if not overwrite:
        raise ConfigError(
            f"{out} exists; pass overwrite=True (--overwrite) to replace it, or pick a new --out"
        )
    with target.open("rb") as fh:
        if fh.read(len(magic)) != magic:
            raise ConfigError(f"{out} exists and is not a {magic.decode()} file, so it will not be replaced")
    return target


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
    """Write the circuit and :data:`MARKER` (what was exported, from what, and every file in the folder,
    which is what later lets ``overwrite`` replace it): call it last."""
    meta = {
        "kind": "neurogate.export",
        "format": fmt,
        "source_model": source,
        "neurons": len(circuit),
        "per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        "multiplier": multiplier_json(circuit, multiplier),
        **extra,
    }
    circuit.save(folder / "neurogate_circuit.json")
    meta["files"] = sorted(p.name for p in folder.iterdir() if p.name != OWNER)
    (folder / MARKER).write_text(json.dumps(meta, indent=1) + "\n")


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

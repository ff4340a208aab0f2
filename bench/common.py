"""What the benchmark scripts share: the machine's name and the development prompt sets."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

# The public prompt sets beside the repository (../shared/data), or wherever NEUROGATE_BENCH_DATA points.
DATA = Path(os.environ.get("NEUROGATE_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (or what platform knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def read(name: str, n: int) -> list[str]:
    """The first ``n`` instructions of a development prompt file (a JSON list of {"instruction": ...})."""
    path = DATA / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: set NEUROGATE_BENCH_DATA to the folder holding {name}")
    return [row["instruction"] for row in json.loads(path.read_text())[:n]]

"""bench/gpu.py in its CPU mode: tiny random shapes, the offline tokenizer, every part, every ratio."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_runs_on_cpu_with_tiny_shapes(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = [
        sys.executable,
        str(ROOT / "bench" / "gpu.py"),
        *("--device", "cpu", "--shape", "tiny", "--tokenizer", "tiny", "--dtype", "float32"),
        *("--n", "8", "--gen-prompts", "8", "--new-tokens", "6", "--gen-batch", "8", "--sweep", "4,8"),
        *("--repeats", "1", "--processes", "2", "--out", str(out)),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NEUROGATE_COMPILE": "auto"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["model"] == "random:qwen2.5-tiny" and result["dtype"] == "float32"
    ratios = {**result["discovery"]["ratios"], **result["generation"]["ratios"]}
    expected = ("discover_vs_forward", "steered_vs_unsteered", "folded_vs_unsteered", "caa_vs_unsteered")
    assert all(name in ratios for name in expected)
    assert any(name.startswith("auto_vs_best_fixed") for name in ratios)
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    for name in ratios:
        assert f"{name} = " in done.stdout  # every ratio is printed, not only stored
    assert result["batch"]["agree"] and result["batch"]["sizes"] == [8, 8]
    # float32 eager decoding: neurogate's length-sorted batches give transformers' replies token for token
    assert result["generation"]["greedy_agreement"] == 1.0
    assert set(result["phases"]["shares"]) == {"capture", "statistics", "rest"}

"""A damaged file in a run folder is computed again with a warning, not a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.scoring import Evidence
from neurogate.discovery.stats import SiteStats
from neurogate.study.stages import StageFiles


def small_circuit() -> Circuit:
    shape = {"n_layers": 1, "d_mlp": 4}
    return Circuit(neurons=[Neuron(0, 1, 1.0, 1.0, 1.0, 0.0)], model={"spec": "x", "shape": shape})


def small_evidence() -> Evidence:
    sides = []
    for value in (1.0, 0.0):
        stats = SiteStats.zeros(1, 4)
        stats.update(torch.full((2, 1, 4), value, dtype=torch.float64))
        sides.append({"mlp.post": stats})
    return Evidence(*sides)


@pytest.mark.parametrize(
    ("name", "make", "load", "save", "damage"),
    [
        ("c.json", small_circuit, Circuit.load, Circuit.save, b'{"schema_version": 2, "neur'),
        ("c.json", small_circuit, Circuit.load, Circuit.save, b"\xff\xfe\x00\x80 not utf-8"),
        ("s.safetensors", small_evidence, Evidence.load, Evidence.save, b"\x10\x00\x00\x00garbage"),
    ],
)
def test_damaged_stage_file_is_recomputed(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    make: Callable[[], Any],
    load: Callable[[Path], Any],
    save: Callable[[Any, Path], Any],
    damage: bytes,
) -> None:
    files = StageFiles(tmp_path)
    calls: list[int] = []

    def compute() -> Any:
        calls.append(1)
        return make()

    files.load_or_compute(name, compute, load, save)
    (tmp_path / name).write_bytes(damage)
    with caplog.at_level(logging.WARNING):
        value = files.load_or_compute(name, compute, load, save)
    assert calls == [1, 1] and "unreadable" in caplog.text
    assert type(value) is type(make())
    assert type(files.load_or_compute(name, compute, load, save)) is type(value) and calls == [1, 1]

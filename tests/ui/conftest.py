"""Shared explorer fixtures: a real circuit (with profiles) and a real quick study, both made on the tiny
random-weight Llama, and an app around them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.discover import discover
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.study import StudyConfig, run_study
from neurogate.tuning import TuneConfig, run_tune
from study.test_results import QUICK as STUDY_QUICK  # tests/ is on the path, as for `reference`
from tuning.test_tune import SMALL as TUNE_SMALL

# the study tests' quick settings, with two values per method so each curve has several points
QUICK: dict[str, Any] = {
    **STUDY_QUICK,
    "prompts": {"n_discovery": 8, "n_eval": 4, "n_benign": 3},
    "multipliers": (0.0, 0.5),
    "strengths": (0.5, 1.0),
    "match_caa": False,  # so that CAA is swept over the strengths and gets a curve of its own
    "evaluation": {**STUDY_QUICK["evaluation"], "max_new_tokens": 6},
}


@pytest.fixture(scope="session")
def shared_lm() -> LoadedModel:
    """One tiny model for the explorer tests (the app shares one model the same way)."""
    return tiny_lm("llama")


@pytest.fixture(scope="session")
def explorer_data(tmp_path_factory: pytest.TempPathFactory, shared_lm: LoadedModel) -> dict[str, Path]:
    """A circuit file (with per-neuron profiles), a second smaller circuit, and a runs folder holding one
    quick study and one small tuning search."""
    root = tmp_path_factory.mktemp("explorer")
    circuits = root / "circuits"
    circuits.mkdir()
    lm = shared_lm
    main = discover(
        lm, "builtin:harmful", "builtin:benign", fraction=0.05, universal_filter=False, progress=False
    )
    main.save(circuits / "circuit.json")
    main.top(5).save(circuits / "top5.json")
    runs = root / "runs"
    run_study(StudyConfig.from_mapping(QUICK), runs, lm=lm)
    run_tune(TuneConfig.from_mapping(TUNE_SMALL), runs, lm=lm)
    (root / "secret.txt").write_text("outside every allowed folder")
    return {"root": root, "circuit": circuits / "circuit.json", "top5": circuits / "top5.json", "runs": runs}


@pytest.fixture(scope="session")
def main_circuit(explorer_data: dict[str, Path]) -> Circuit:
    return Circuit.load(explorer_data["circuit"])

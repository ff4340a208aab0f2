"""StudyResults: what results.json holds round-trips exactly, the report renders from a loaded file, and
files of another kind or schema version are refused."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from neurogate.errors import NeurogateError
from neurogate.models.tiny import tiny_lm
from neurogate.study import StudyConfig, StudyResults, run_study
from neurogate.study.report import render_html, render_markdown, write_reports
from neurogate.study.results import SCHEMA_VERSION

QUICK: dict[str, Any] = {
    "model": "tiny:llama",
    "prompts": {"n_discovery": 10, "n_eval": 3, "n_benign": 2},
    "multipliers": (0.0,),
    "strengths": (1.0,),
    "sparsity": (0.01,),
    "random_seeds": (0,),
    "controls": ("cooking-vs-gardening",),
    "validation": 4,
    "corpus": "builtin",
    "examples": 2,
    "discovery": {"fraction": 0.02, "universal_filter": False, "batch_size": 4},
    "evaluation": {"max_new_tokens": 3, "kl_tokens": 2, "batch_size": 4, "judges": ["keyword"]},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyResults, Path]:
    """One quick study on a tiny random model (every section filled: sweep of three kinds, sparsity, a
    contrast and a magnitude-matched control, two layer profiles, residual directions and their selection)."""
    out = tmp_path_factory.mktemp("study")
    result = run_study(StudyConfig.from_mapping(QUICK), out, lm=tiny_lm("llama"))
    return result, out / result.run_id


def test_to_dict_from_dict_round_trip(study: tuple[StudyResults, Path]) -> None:
    result, _ = study
    data = result.to_dict()
    assert data["kind"] == "neurogate.study" and data["schema_version"] == SCHEMA_VERSION
    # every part of the study is present, so the round trip exercises each typed field
    assert result.sparsity and len(result.controls) == 2 and len(result.layers) == 2
    assert result.directions is not None and result.direction_selection is not None
    assert len(result.conditions) > 4 and result.baseline.corpus_nll
    again = StudyResults.from_dict(json.loads(json.dumps(data)))
    assert again == result
    assert again.to_dict() == data
    assert isinstance(next(iter(again.circuit.per_layer)), int)  # JSON's string keys become layers again
    assert again.baseline.refusal == result.baseline.refusal
    # results stored before CAA's vector was chosen by effect (no record of it, a match without the
    # prompts it ran on) still load, and say they were matched on the evaluation prompts
    assert result.caa_selection is not None and result.caa_match is not None
    old = json.loads(json.dumps(data))
    del old["caa_selection"]
    old["caa_match"] = {k: v for k, v in old["caa_match"].items() if k not in ("prompts", "reference")}
    earlier = StudyResults.from_dict(old)
    assert earlier.caa_selection is None and earlier.caa_match is not None
    assert earlier.caa_match.prompts == "evaluation"
    assert "the first 4 evaluation prompts (a run stored by an earlier version)" not in render_markdown(
        result
    )
    assert "evaluation prompts (a run stored by an earlier version)" in render_markdown(earlier)


def test_report_renders_from_a_loaded_results_json(study: tuple[StudyResults, Path], tmp_path: Path) -> None:
    result, run_dir = study
    loaded = StudyResults.load(run_dir / "results.json")
    assert loaded == result
    assert render_markdown(loaded) == (run_dir / "report.md").read_text()
    assert render_html(loaded) == (run_dir / "report.html").read_text()
    md, page = write_reports(loaded, tmp_path)
    assert md.read_text() == (run_dir / "report.md").read_text()
    assert page.read_text().count("<svg") == (run_dir / "report.html").read_text().count("<svg") > 0
    for key in loaded.sweep:
        assert f"| {loaded.conditions[key].label} |" in md.read_text()


def test_from_dict_refuses_another_kind_or_schema_version(study: tuple[StudyResults, Path]) -> None:
    result, _ = study
    good = result.to_dict()
    for kind in ("neurogate.circuit", None):
        data = copy.deepcopy(good)
        data["kind"] = kind
        with pytest.raises(NeurogateError, match="is not a neurogate study result"):
            StudyResults.from_dict(data, source="x.json")
    with pytest.raises(NeurogateError, match="is not a neurogate study result"):
        StudyResults.from_dict([good])  # type: ignore[arg-type]
    for version in (SCHEMA_VERSION - 1, SCHEMA_VERSION + 1, None, str(SCHEMA_VERSION)):
        data = copy.deepcopy(good)
        data["schema_version"] = version
        with pytest.raises(NeurogateError, match=f"study schema version {version!r}; this neurogate reads"):
            StudyResults.from_dict(data, source="x.json")
    data = copy.deepcopy(good)
    del data["conditions"]
    with pytest.raises(NeurogateError, match=r"x\.json is a damaged study result"):
        StudyResults.from_dict(data, source="x.json")
    assert StudyResults.from_dict(copy.deepcopy(good)) == result  # the untouched data still loads


def test_load_refuses_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(NeurogateError, match="cannot read study results"):
        StudyResults.load(path)
    with pytest.raises(NeurogateError, match="cannot read study results"):
        StudyResults.load(tmp_path / "missing.json")
    path.write_text(json.dumps({"kind": "neurogate.circuit", "schema_version": 2}))
    with pytest.raises(NeurogateError, match=re.escape(f"{path} is not a neurogate study result")):
        StudyResults.load(path)

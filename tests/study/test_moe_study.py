"""The quick study end to end on a tiny random mixture-of-experts model (Qwen2-MoE with a shared expert):
discovery, the steering sweep, sparsity, controls and the report all run on expert neurons."""

from __future__ import annotations

from pathlib import Path

from neurogate.models.tiny import tiny_lm
from neurogate.study import StudyConfig, run_study
from neurogate.study.report import write_reports
from study.test_results import QUICK  # tests/ is on the path


def test_quick_study_runs_on_a_tiny_moe(tmp_path: Path) -> None:
    lm = tiny_lm("qwen2_moe")
    result = run_study(StudyConfig.from_mapping({**QUICK, "model": "tiny:qwen2_moe"}), tmp_path, lm=lm)
    assert result.model["shape"]["moe"]["n_experts"] == 4
    assert result.sparsity and len(result.conditions) > 4 and result.baseline.corpus_nll
    written = write_reports(result, tmp_path / result.run_id)
    assert all(Path(p).is_file() for p in written)

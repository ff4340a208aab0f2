"""The study: the paper's experiments end to end (discovery, sweep, sparsity, controls, layers) as
resumable stages, a typed and versioned result, and the Markdown/HTML report."""

from neurogate.study.config import StudyConfig
from neurogate.study.pipeline import run_study
from neurogate.study.report import write_reports
from neurogate.study.results import StudyResults

__all__ = ["StudyConfig", "StudyResults", "run_study", "write_reports"]

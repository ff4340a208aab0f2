"""``run_tune``: load, search, choose, check, report — the whole of ``neurogate tune``."""

from __future__ import annotations

import time
from pathlib import Path

from neurogate import prompts
from neurogate.models.loading import LoadedModel, load_model
from neurogate.tuning.config import TuneConfig
from neurogate.tuning.final import TuneResults, finish
from neurogate.tuning.report import write_reports
from neurogate.tuning.search import Event, Search


def tune_dir(config: TuneConfig, out: str | Path) -> Path:
    """Where ``config``'s search lives (a rerun with the same settings resumes it)."""
    digests = {
        name: prompts.load(getattr(config, name)).sha256
        for name in ("positive", "negative", "harmful", "benign", "final_harmful", "final_benign")
    }
    return Path(out) / config.run_id(digests)


def run_tune(
    config: TuneConfig,
    out: str | Path = "runs",
    *,
    lm: LoadedModel | None = None,
    on_event: Event | None = None,
) -> TuneResults:
    """Search (or resume) under ``out/<run id>/`` until the budget, then check the chosen point on the
    held-out prompts and write ``tune.json``, ``tuned-circuit.json`` and the report."""
    root = tune_dir(config, out)
    started = time.perf_counter()
    model = lm or load_model(config.model, dtype=config.dtype, device=config.device)
    search = Search(model, config, root, on_event)
    study = search.run()
    results = finish(search, study, root.name, started)
    write_reports(results, root)
    return results

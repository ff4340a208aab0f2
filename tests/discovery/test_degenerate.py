"""A contrast that cannot carry a behaviour is refused, and the CLI checks --out before any forward pass."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_discovery import NEGATIVE, POSITIVE, save_tiny_model
from typer.testing import CliRunner

from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import discover, gather_evidence, resolve_prompts
from neurogate.discovery.scoring import Evidence
from neurogate.errors import DegenerateError
from neurogate.models.loading import LoadedModel


def test_same_prompts_in_another_order_are_refused(lm: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    shuffled = [f"  {p} " for p in reversed(POSITIVE)]
    with pytest.raises(DegenerateError, match="hold the same prompts"):
        discover(lm, POSITIVE, shuffled, top_k=3, universal_filter=False, progress=False)
    with caplog.at_level(logging.WARNING):
        circuit = discover(
            lm, POSITIVE, shuffled, top_k=3, universal_filter=False, progress=False, allow_degenerate=True
        )
    assert len(circuit) == 3 and "DEGENERATE CONTRAST" in caplog.text


def test_all_zero_scores_are_refused(lm: LoadedModel) -> None:
    config = DiscoverConfig(top_k=3, universal_filter=False)
    pos, neg = resolve_prompts(POSITIVE, "positive"), resolve_prompts(NEGATIVE, "negative")
    real = gather_evidence(lm, pos, neg, config, progress=False)
    flat = Evidence(real.positive, real.positive)  # both sides the same: every difference is 0
    with pytest.raises(DegenerateError, match="every neuron scores 0"):
        discover(lm, POSITIVE, NEGATIVE, config, progress=False, evidence=flat)
    assert len(discover(lm, POSITIVE, NEGATIVE, config, progress=False, evidence=real)) == 3


def test_cli_refuses_an_unusable_out_before_loading(tmp_path: Path) -> None:
    from neurogate.cli.main import app

    model_dir = save_tiny_model(tmp_path / "model")
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n".join(POSITIVE))
    neg.write_text("\n".join(reversed(POSITIVE)))
    base = ["discover", "--model", str(model_dir), "-p", str(pos), "-n", str(neg), "--quiet"]
    base += ["--no-universal-filter", "--top-k", "2", "--dtype", "float32", "--device", "cpu"]
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    for out, message in ((tmp_path, "is a directory"), (blocked / "c.json", "is a file")):
        result = CliRunner().invoke(app, [*base, "--out", str(out)])
        assert result.exit_code != 0 and message in str(result.exception), result.output
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "c.json")])
    assert isinstance(result.exception, DegenerateError)
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "c.json"), "--allow-degenerate"])
    assert result.exit_code == 0 and (tmp_path / "c.json").is_file()

"""Progress in the units of what is counted, and as plain lines when stderr is a log or a pipe (not a
terminal): a zoo pull, and the long commands' stages."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.models import zoo
from neurogate.progress import PlainProgress, amount

runner = CliRunner()


def test_amounts_are_in_the_units_counted() -> None:
    assert amount(1, 2, "packages") == "1/2 packages"
    assert amount(412 * 2**20, 1040 * 2**20, "bytes") == "412/1,040 MiB"
    assert amount(0, 1, "step") == "" and amount(1, 1, "step") == "done"
    assert amount(3, 12) == "3/12" and amount(0, None) == ""


def test_plain_progress_says_each_stage_and_the_end_not_every_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = PlainProgress(interval=3600)
    task = plain.add_task("starting", total=None)
    plain.update(task, description="conditions", total=40, completed=0)
    for _ in range(40):
        plain.update(task, advance=1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "starting",
        "conditions: 0/40",
        "conditions: 40/40",
    ]
    assert all(line.endswith("(0:00)") for line in lines)


@pytest.fixture
def local_zoo_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The smallest zoo model's GGUF served as a local one-package zoo entry, with an empty model cache."""
    gguf = zoo.ensure_gguf(zoo.TEST_MODEL)
    real = zoo.ZOO[zoo.TEST_MODEL]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    member = "ngtest_small/data/small.gguf"
    info = "ngtest_small-1.0.dist-info"
    with zipfile.ZipFile(wheels / "ngtest_small-1.0-py3-none-any.whl", "w") as zf:
        zf.write(gguf, member)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: ngtest-small\nVersion: 1.0\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    entry = zoo.ZooModel(
        "small", "test", (zoo.ZooPart("ngtest-small", "1.0", member),), real.gguf_name, real.size, real.sha256
    )
    monkeypatch.setitem(zoo.ZOO, "small", entry)
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEUROGATE_ZOO_FIND_LINKS", str(wheels))
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == real.sha256
    return "small"


def test_a_pull_into_a_log_counts_packages_mib_and_a_conversion(local_zoo_model: str) -> None:
    result = runner.invoke(app, ["models", "pull", local_zoo_model])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "small: download packages: 1/1 packages" in err
    assert f"small: assemble + verify: {amount(zoo.ZOO['small'].size, zoo.ZOO['small'].size, 'bytes')}" in err
    assert "small: convert to safetensors: done" in err
    assert "bytes" not in err  # packages and the conversion were once counted as bytes ("22/22 bytes")
    assert "Converting and de-quantizing" not in err  # transformers' own bar stays off in a log
    assert len(err.splitlines()) < 20
    assert "ready: zoo:small" in result.stdout


@pytest.fixture
def tiny_setup(tmp_path: Path) -> dict[str, str]:
    from neurogate.models.tiny import tiny_model, tiny_tokenizer

    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    (tmp_path / "pos.txt").write_text("\n".join(f"do a bad thing number {i}" for i in range(6)) + "\n")
    (tmp_path / "neg.txt").write_text("\n".join(f"say a kind word to person {i}" for i in range(6)) + "\n")
    return {"model": str(model_dir), "pos": str(tmp_path / "pos.txt"), "neg": str(tmp_path / "neg.txt")}


def test_discover_and_sweep_say_their_progress_as_plain_lines(
    tiny_setup: dict[str, str], tmp_path: Path
) -> None:
    s = tiny_setup
    common = ["--model", s["model"], "--dtype", "float32", "--positive", s["pos"], "--negative", s["neg"]]
    found = runner.invoke(
        app, ["discover", *common, "--top-k", "8", "--no-universal-filter", "--out", f"{tmp_path}/c.json"]
    )
    assert found.exit_code == 0, found.output
    assert "capturing activations: 12/12" in found.stderr
    (tmp_path / "eval.txt").write_text("how to pick a lock\nhow to steal a car\n")
    (tmp_path / "benign.txt").write_text("name a river\nname a colour\n")
    args = ["sweep", *common, "--circuit", f"{tmp_path}/c.json", "--methods", "cna", "--multipliers", "1,0"]
    args += ["--eval", f"{tmp_path}/eval.txt", "--benign", f"{tmp_path}/benign.txt", "--max-new-tokens", "2"]
    swept = runner.invoke(app, args)
    assert swept.exit_code == 0, swept.output
    lines = [line for line in swept.stderr.splitlines() if line.startswith(("conditions", "cna"))]
    assert lines[0].startswith("conditions") and any(": 2/2 (" in line for line in lines), swept.stderr
    for out in (found.stderr, swept.stderr):
        assert "━" not in out and "\r" not in out and "\x1b[" not in out  # lines, not a redrawn bar


def test_a_study_stage_and_its_count_share_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study announces how many conditions follow just before naming their stage: the count is shown
    with the new stage, never as the finished stage's ("caa direction (by effect): 0/8")."""
    from neurogate.cli import evaluation_options, study

    monkeypatch.setattr(evaluation_options, "on_terminal", lambda: False)
    monkeypatch.setattr(evaluation_options, "PlainProgress", lambda: PlainProgress(interval=0))
    with study._study_progress(quiet=False) as on_event:
        assert on_event is not None
        on_event("stage", {"name": "caa direction (by effect)"})
        on_event("plan", {"total": 8})
        on_event("stage", {"name": "conditions"})
    lines = [line.rsplit(" (", 1)[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["starting", "caa direction (by effect)", "conditions: 0/8"]

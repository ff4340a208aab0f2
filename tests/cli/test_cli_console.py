"""Text in square brackets reaches the terminal as written: the rich console must not read a user's path,
prompt or an install hint's extra (``neurogate[ui]``) as markup and drop it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli import app as cli
from neurogate.cli.main import app, interrupted_message, main
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

runner = CliRunner()


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the real entry point (which prints neurogate errors) and return its stderr."""
    monkeypatch.setattr(sys, "argv", ["neurogate", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def test_an_error_naming_a_bracketed_path_keeps_the_brackets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _run_main(monkeypatch, capsys, "info", "--model", str(tmp_path / "model[ui]"))
    assert "model[ui]" in err and "does not exist" in err


def test_the_explorer_install_hint_keeps_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "uvicorn" or m.startswith(("uvicorn.", "neurogate.ui."))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as when the web packages are not installed
    err = _run_main(monkeypatch, capsys, "ui", "--no-model")
    assert "pip install 'neurogate[ui]'" in err and "uvicorn is missing" in err


def test_a_prompt_with_brackets_prints_whole(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    neurons = [Neuron(0, i, 1.0, 1.0, 1.0, 0.0) for i in range(4)]
    circuit = Circuit(neurons=neurons, model={"spec": str(model_dir), "shape": tiny_lm("llama").shape})
    path = circuit.save(tmp_path / "c.json")
    args = ["steer", "--model", str(model_dir), "--circuit", str(path), "--dtype", "float32"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "2", "--prompt", "[b]x[/b]"])
    assert result.exit_code == 0, result.output
    assert "[b]x[/b]" in result.stdout


def test_the_resume_line_keeps_bracketed_arguments() -> None:
    cli.RunState.saved = ["results under runs/[draft]"]
    try:
        text = interrupted_message(["sweep", "--out", "runs/[draft]"])
    finally:
        cli.RunState.saved = []
    console = cli.Console(record=True, width=200)
    console.print(text, highlight=False)
    shown = console.export_text()
    assert "results under runs/[draft]" in shown
    assert "resume with the same command: neurogate sweep --out 'runs/[draft]'" in shown

"""The CLI checks paths, settings and the model before the expensive steps, asks before a large pull, and
says on Ctrl-C what was kept and how to resume."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli import app as cli
from neurogate.cli.main import app, main
from neurogate.errors import ConfigError, ModelLoadError
from neurogate.models import zoo

runner = CliRunner()
SMALL = "zoo:smollm2-135m-instruct"


@pytest.fixture
def empty_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_default_model_is_never_pulled_silently(empty_zoo: Path) -> None:
    result = runner.invoke(app, ["info"])  # no --model, not interactive, default not pulled
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "--model was not given" in message and "--yes" in message and "MiB" in message
    assert not (empty_zoo / "zoo" / zoo.DEFAULT_MODEL).exists()


def test_a_model_named_explicitly_or_confirmed_is_not_asked_about(empty_zoo: Path) -> None:
    cli.preflight_model(f"zoo:{zoo.DEFAULT_MODEL}", explicit=True)  # returns: the pull may go ahead
    cli.RunState.yes = True
    try:
        cli.preflight_model(f"zoo:{zoo.DEFAULT_MODEL}", explicit=False)
    finally:
        cli.RunState.yes = False
    with pytest.raises(ModelLoadError, match="does not exist"):
        cli.preflight_model("./no/such/model", explicit=True)


@pytest.mark.parametrize("command", [["sweep", "--methods", "caa"], ["run", "--quick"], ["tune"]])
def test_out_that_is_a_file_fails_before_the_model_loads(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "results.json"
    blocker.write_text("{}")
    result = runner.invoke(app, [*command, "--model", "./no/such/model", "--out", str(blocker)])
    assert isinstance(result.exception, ConfigError), result.output
    assert "is a file" in str(result.exception)


def test_unknown_judge_fails_before_the_model_loads(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", "--model", "./no/such/model", "--judge", "keywrd"])
    assert isinstance(result.exception, ConfigError)
    assert "unknown judge 'keywrd'" in str(result.exception)


def test_base_vs_instruct_checks_both_models_first(tmp_path: Path) -> None:
    args = ["base-vs-instruct", "--instruct", SMALL, "--base", str(tmp_path / "missing-base")]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ModelLoadError) and "missing-base" in str(result.exception)


def test_ctrl_c_says_what_was_kept_and_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_sweep() -> None:
        cli.note_saved("finished conditions are stored under runs/x; a rerun skips them")
        raise KeyboardInterrupt

    monkeypatch.setattr("neurogate.cli.main.app", interrupted_sweep)
    monkeypatch.setattr(sys, "argv", ["neurogate", "sweep", "--out", "runs/x", "--eval", "my set.json"])
    cli.RunState.saved = []
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 130
    assert "finished conditions are stored under runs/x" in err
    assert "resume with the same command: neurogate sweep --out runs/x --eval 'my set.json'" in err
    cli.RunState.saved = []
    monkeypatch.setattr("neurogate.cli.main.app", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(sys, "argv", ["neurogate", "discover", "--out", "c.json"])
    with pytest.raises(SystemExit):
        main()
    assert "nothing partial was written" in capsys.readouterr().err


def test_ctrl_c_inside_a_real_command_prints_the_resume_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typer turns a KeyboardInterrupt inside a command into a silent exit 130; main() still explains it."""

    def interrupted_load(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted_load)
    monkeypatch.setattr(sys, "argv", ["neurogate", "info", "--model", "some-model"])
    cli.RunState.saved = []
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    assert "run it again with: neurogate info --model some-model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["discover", "-o", "/proc/neurogate-test/c.json"], "cannot write in /proc"),
        (["discover", "-o", "{tmp}/newdir/"], "is a directory"),
        (["export", "--circuit", "{tmp}/c.json", "--out", "{tmp}/notes.txt/steered"], "is a file"),
        (["export", "--circuit", "{tmp}/c.json", "--out", "/proc/neurogate-test"], "cannot write in /proc"),
    ],
)
def test_unusable_output_paths_fail_before_the_model_loads(
    tmp_path: Path, command: list[str], message: str
) -> None:
    """Found by the reliability battery: these ended in tracebacks (or, for a trailing slash, in a file named
    like the folder); the check probes by writing, since permission bits say nothing for root or /proc."""
    from neurogate.discovery.circuit import Circuit, Neuron
    from neurogate.models.tiny import tiny_lm

    (tmp_path / "notes.txt").write_text("mine")
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    neuron = Neuron(0, 1, 1.0, 1.0, 1.0, 0.0)
    Circuit(neurons=[neuron], model={"spec": str(tmp_path / "model"), "shape": lm.shape}).save(
        tmp_path / "c.json"
    )
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    result = runner.invoke(app, [*args, "--model", str(tmp_path / "model")])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "newdir").exists()


@pytest.mark.parametrize(
    ("command", "example"),
    [
        (["discover"], "circuit.json"),
        (["export", "--format", "gguf", "--circuit", "{tmp}/c.json"], "steered.gguf"),
        (["export", "--format", "control-vector"], "steered.gguf"),
        (["base-vs-instruct", "--instruct", "{model}", "--base", "{model}"], "base-vs-instruct.json"),
    ],
)
def test_a_file_output_ending_in_a_slash_is_refused_naming_a_file(
    tmp_path: Path, command: list[str], example: str
) -> None:
    """A path ending in a slash names a folder everywhere: where a file is written it is refused before any
    work (``export --format gguf --out DIR/`` once wrote a file called DIR), with a file name to give."""
    from neurogate.discovery.circuit import Circuit, Neuron
    from neurogate.models.tiny import tiny_lm

    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    model = str(tmp_path / "model")
    Circuit(neurons=[Neuron(0, 1, 1.0, 1.0, 1.0, 0.0)], model={"spec": model, "shape": lm.shape}).save(
        tmp_path / "c.json"
    )
    args = [part.replace("{tmp}", str(tmp_path)).replace("{model}", model) for part in command]
    if "--instruct" not in args:
        args += ["--model", model]
    result = runner.invoke(app, [*args, "--out", f"{tmp_path}/made/"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "is a directory; give a file name" in message and f"made/{example}" in message
    assert not (tmp_path / "made").exists()


@pytest.mark.parametrize("fmt", ["dir", "lora"])
def test_a_folder_output_ending_in_a_slash_is_that_folder(tmp_path: Path, fmt: str) -> None:
    from neurogate.discovery.circuit import Circuit, Neuron
    from neurogate.models.tiny import tiny_lm

    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    model = str(tmp_path / "model")
    circuit = Circuit(neurons=[Neuron(0, 1, 1.0, 1.0, 1.0, 0.0)], model={"spec": model, "shape": lm.shape})
    circuit.save(tmp_path / "c.json")
    args = ["export", "--format", fmt, "--circuit", f"{tmp_path}/c.json", "--dtype", "float32"]
    result = runner.invoke(app, [*args, "--out", f"{tmp_path}/made/"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "made").is_dir() and any((tmp_path / "made").iterdir())

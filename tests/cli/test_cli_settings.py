"""Settings are built alike in every command (defaults, then a --config file, then the flags given), and
every command that judges replies offers the same judge options."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from neurogate.cli import app as cli
from neurogate.cli.config_file import Flag, layered, nest
from neurogate.cli.main import app
from neurogate.errors import ConfigError

runner = CliRunner(env={"COLUMNS": "200"})
JUDGE_FLAGS = ("--judge", "--local-judge-model", "--local-judge-rubric", "--endpoint-url", "--endpoint-model")


class Settings:
    """A stand-in settings class that records what it was built from."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    @classmethod
    def from_mapping(cls, data: Any, *, base: Settings | None = None) -> Settings:
        unknown = set(data) - {"a", "b", "inner"}
        if unknown:
            raise ConfigError(f"unknown setting {sorted(unknown)[0]!r}")
        merged = dict(base.values if base is not None else {"a": 0, "b": 0})
        merged.update(data)
        return cls(merged)


def test_nest_turns_dotted_keys_into_tables() -> None:
    assert nest({"evaluation.judges": ["local"], "model": "m"}) == {
        "evaluation": {"judges": ["local"]},
        "model": "m",
    }


def test_the_file_overrides_defaults_and_plain_values_override_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[part]\na = 5\nb = 6\n")
    # outside a command no Flag counts as given: a Flag is the command's default, the file wins over it
    built = layered(Settings, {"a": Flag("a", 1), "b": 7}, config=toml, section="part")  # type: ignore[arg-type]
    assert built.values == {"a": 5, "b": 7}
    built = layered(Settings, {"a": Flag("a", 1), "b": None}, config=None, section="part")  # type: ignore[arg-type]
    assert built.values == {"a": 1, "b": 0}


def test_a_file_without_the_section_is_read_from_its_top_level(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("a = 3\n")
    assert layered(Settings, {}, config=toml, section="part").values["a"] == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [("c = 1\n", "unknown setting 'c'"), ("a = \n", "is not valid TOML"), (None, "does not exist")],
)
def test_bad_files_are_clear_errors(tmp_path: Path, text: str | None, message: str) -> None:
    toml = tmp_path / "s.toml"
    if text is not None:
        toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        layered(Settings, {}, config=toml, section="part")  # type: ignore[arg-type]


def test_discover_reads_its_config_and_the_flags_given_win(tmp_path: Path, monkeypatch: Any) -> None:
    discovery = importlib.import_module("neurogate.discovery.discover")  # the module, not the function
    seen: dict[str, Any] = {}

    def fake_discover(lm: Any, positive: str, negative: str, config: Any, **kwargs: Any) -> Any:
        seen["config"] = config
        raise ConfigError("stop here")

    monkeypatch.setattr(cli, "load", lambda *args, **kwargs: None)
    monkeypatch.setattr(discovery, "discover", fake_discover)
    toml = tmp_path / "s.toml"
    toml.write_text('[discovery]\ntop_k = 7\nscore = "effect-size"\nsign = "positive"\n')
    args = ["discover", "--out", str(tmp_path / "c.json"), "--config", str(toml), "--sign", "both"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError), result.output
    config = seen["config"]
    assert (config.top_k, config.score, config.sign) == (7, "effect-size", "both")
    assert config.positions == "last"  # neither the file nor a flag: the default


def test_an_unknown_key_in_a_commands_config_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[discovery]\ntopk = 7\n")
    result = runner.invoke(app, ["discover", "--out", str(tmp_path / "c.json"), "--config", str(toml)])
    assert isinstance(result.exception, ConfigError)
    assert "topk" in str(result.exception) and "top_k" in str(result.exception)


@pytest.mark.parametrize("command", ["sparsity", "base-vs-instruct"])
def test_the_experiments_read_their_evaluation_table_first(command: str, tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[evaluation]\nmax_new_tokenz = 7\n")
    result = runner.invoke(app, [command, "--config", str(toml)])
    assert isinstance(result.exception, ConfigError)
    assert "max_new_tokenz" in str(result.exception) and "max_new_tokens" in str(result.exception)
    toml.write_text("[evaluation]\nmax_new_tokens = 0\n")  # read from the file, and checked
    result = runner.invoke(app, [command, "--config", str(toml)])
    assert isinstance(result.exception, ConfigError) and "max_new_tokens" in str(result.exception)


@pytest.mark.parametrize("command", ["run", "sweep", "tune", "sparsity", "base-vs-instruct"])
def test_every_judging_command_offers_the_same_judge_options(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for flag in JUDGE_FLAGS:
        assert flag in result.stdout, (command, flag)


@pytest.mark.parametrize("old", ["--judge-url", "--judge-model"])
def test_the_renamed_judge_flags_are_refused_by_name(old: str) -> None:
    result = runner.invoke(app, ["sparsity", old, "x"])
    assert isinstance(result.exception, ConfigError)
    assert "--endpoint-" in str(result.exception)


def test_ui_reads_its_config_and_checks_it_before_serving(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[ui]\nport = 99999\n")
    result = runner.invoke(app, ["ui", "--no-model", "--config", str(toml)])
    assert isinstance(result.exception, ConfigError)
    assert "--port must be at most 65535" in str(result.exception)
    toml.write_text("[ui]\nprot = 8000\n")
    result = runner.invoke(app, ["ui", "--no-model", "--config", str(toml)])
    assert isinstance(result.exception, ConfigError)
    assert "unknown ui setting 'prot' (did you mean 'port'?)" in str(result.exception)

"""``--threads`` reaches torch: real command lines run in a fresh process, where torch's thread counts are
read back after each command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

# Runs each command line in turn in one fresh process, with the environment given beside it, and prints
# torch's thread counts after each as the last line, in JSON.
SCRIPT = """
import json, os, sys, torch
from neurogate.cli.main import app
seen = []
for args, env in json.loads(sys.argv[1]):
    os.environ.pop("NEUROGATE_THREADS", None)
    os.environ.update(env)
    app(args, standalone_mode=False)
    seen.append([torch.get_num_threads(), torch.get_num_interop_threads()])
print(json.dumps(seen))
"""


def run_commands(cases: list[tuple[list[str], dict[str, str]]], config_home: Path) -> list[list[int]]:
    env = {k: v for k, v in os.environ.items() if k not in ("NEUROGATE_THREADS", "OMP_NUM_THREADS")}
    env["XDG_CONFIG_HOME"] = str(config_home)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_setting_reaches_torch_flag_over_env_over_file(tmp_path: Path) -> None:
    folder = tmp_path / "neurogate"
    folder.mkdir()
    (folder / "settings.toml").write_text("threads = 3\n")
    cases = [
        (["models", "list"], {}),  # the settings file
        (["models", "list"], {"NEUROGATE_THREADS": "5"}),  # the environment over the file
        (["models", "list", "--threads", "2"], {"NEUROGATE_THREADS": "5"}),  # the flag over both
        (["--threads", "4", "models", "list"], {"NEUROGATE_THREADS": "5"}),  # the root flag too
        (["--threads", "4", "models", "list", "--threads", "6"], {}),  # the command's flag wins
    ]
    seen = run_commands(cases, tmp_path)
    assert [intra for intra, _ in seen] == [3, 5, 2, 4, 6]
    assert all(interop == 1 for _, interop in seen)  # set once, before any inter-op work


def test_auto_is_the_default_and_stays_within_the_cores(tmp_path: Path) -> None:
    ((intra, _),) = run_commands([(["models", "list"], {})], tmp_path)
    assert 1 <= intra <= len(os.sched_getaffinity(0))


def test_a_bad_value_is_one_error_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NEUROGATE_THREADS"}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "neurogate", "models", "list", "--threads", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --threads must be a whole number >= 1 or 'auto', got '0'"
    assert done.stdout == ""


def test_steer_and_chat_print_tokens_per_second_on_stderr(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for index in range(0, 96, 5)]
    spec = {"spec": str(model_dir), "shape": tiny_lm("llama").shape}
    circuit = str(Circuit(neurons=neurons, model=spec).save(tmp_path / "circuit.json"))
    base = ["--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--circuit", circuit]
    runner = CliRunner()
    steer = runner.invoke(app, ["steer", *base, "--max-new-tokens", "5", "--prompt", "hi", "--threads", "1"])
    assert steer.exit_code == 0, steer.output
    lines = [line for line in steer.stderr.splitlines() if "tok/s" in line]
    assert [line.split(":")[0] for line in lines] == ["unsteered", "cna m=0"]
    assert all(" tokens in " in line and line.endswith("tok/s on 1 thread") for line in lines)
    assert "tok/s" not in steer.stdout
    chat = runner.invoke(app, ["chat", *base, "--max-new-tokens", "4"], input="hello\n/quit\n")
    assert chat.exit_code == 0, chat.output
    assert chat.stderr.count("tok/s on 1 thread)") == 1

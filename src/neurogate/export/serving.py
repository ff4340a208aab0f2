"""Serving steered models with stock vLLM: one LoRA adapter per (circuit, multiplier) on one base model.

:func:`adapter_name` names each adapter, :func:`export_adapters` writes them, and :class:`VllmPlan` builds the
command that serves the base model with every adapter enabled (vLLM's OpenAI-compatible server; requests
pick an adapter by its name in the ``model`` field). The folded alternative serves an exported model
directory (:func:`neurogate.export.model.export_model`) with no adapter: the fast path on CPUs, where
vLLM's LoRA kernels cost more than they save; on GPUs the LoRA path batches many adapters in one server.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from neurogate.discovery.circuit import Circuit
from neurogate.errors import ConfigError
from neurogate.export.lora import ENGINE_RANKS, export_lora
from neurogate.models import zoo
from neurogate.models.loading import LoadedModel

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
BASE_NAME = "base"


def adapter_name(multiplier: float, prefix: str = "cna") -> str:
    """``cna-m0``, ``cna-m0.5``, ``cna-m-1``: the served name of the adapter for ``multiplier``."""
    return f"{prefix}-m{multiplier:g}"


def model_source(spec: str) -> str:
    """What vLLM loads for ``--model SPEC``: a zoo model's converted directory, else the spec itself."""
    return str(zoo.model_dir(spec.removeprefix("zoo:"))) if spec.startswith("zoo:") else spec


@dataclass
class VllmPlan:
    """A vLLM server for ``model`` with ``adapters`` (``{name: folder}``); :meth:`command` is its argv."""

    model: str
    adapters: dict[str, Path] = field(default_factory=dict)
    max_lora_rank: int = 0
    python: str = "python"
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"
    max_model_len: int | None = 4096
    extra: Sequence[str] = ()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """``python -m vllm.entrypoints.openai.api_server ...`` (the same server as ``vllm serve``)."""
        argv = [self.python, "-m", SERVER_MODULE, "--model", self.model, "--served-model-name", BASE_NAME]
        argv += ["--host", self.host, "--port", str(self.port), "--dtype", self.dtype]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.adapters:
            argv += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank)]
            argv += ["--max-loras", str(len(self.adapters)), "--lora-modules"]
            argv += [f"{name}={path}" for name, path in self.adapters.items()]
        return [*argv, *self.extra]

    def shell(self) -> str:
        """:meth:`command` as one copy-paste shell line."""
        return shlex.join(self.command())

    def start(self, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start the server in its own process group, its output going to ``log``; stop it with
        :func:`stop_server`. ``env`` adds to the environment (e.g. ``VLLM_CPU_KVCACHE_SPACE``)."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )


def stop_server(proc: subprocess.Popen[bytes], grace: float = 60.0) -> None:
    """Stop a server started by :meth:`VllmPlan.start` and the workers it spawned (its process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def engine_rank(rank: int) -> int:
    """The ``--max-lora-rank`` vLLM accepts that covers ``rank``."""
    for size in ENGINE_RANKS:
        if rank <= size:
            return size
    raise ConfigError(
        f"an adapter of rank {rank} exceeds vLLM's largest LoRA rank ({ENGINE_RANKS[-1]}); serve the folded "
        "model instead (neurogate serve --folded) or use a smaller circuit"
    )


def export_adapters(
    lm: LoadedModel, circuit: Circuit, multipliers: Sequence[float], folder: str | Path
) -> tuple[dict[str, Path], int]:
    """One LoRA adapter per multiplier under ``folder`` (earlier neurogate exports there are replaced);
    returns ``({name: path}, the largest rank)``."""
    if not multipliers:
        raise ConfigError("give at least one --multiplier")
    root = Path(folder).expanduser().resolve()
    adapters: dict[str, Path] = {}
    for m in multipliers:
        name = adapter_name(m)
        if name in adapters:
            raise ConfigError(f"multiplier {m:g} is given twice")
        adapters[name] = export_lora(lm, circuit, m, root / name, overwrite=True)
    rank = max(int(json.loads((path / "adapter_config.json").read_text())["r"]) for path in adapters.values())
    return adapters, rank

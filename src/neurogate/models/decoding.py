"""How :func:`neurogate.models.generation.generate` decodes: eager with a growing cache, or compiled.

On CUDA, decoding a model of a few billion parameters is bound by per-step launch latency, not arithmetic:
a static key/value cache lets transformers compile the decoding step with ``torch.compile`` (CUDA graphs,
``mode="reduce-overhead"``), which replays a whole step as one graph. A compiled step only runs the hooks
it was traced with, so the compiled engine is used only when the model carries no hooks but neurogate's
neuron gains (:mod:`neurogate.models.gains`): neuron steering then changes gain values, never the graph. A
model with any other hook (residual-stream steering, a user's hook) decodes eagerly for that call.

On CPU the static cache measured no faster than the growing one (``bench/gpu.py --device cpu``), so CPU
decoding stays eager. ``NEUROGATE_COMPILE`` = ``auto`` (default: compile on CUDA for jobs of at least
:data:`COMPILE_MIN_TOKENS` new tokens), ``on`` (compile whenever the hooks allow, on any device) or ``off``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import CompileConfig

from neurogate.errors import ConfigError
from neurogate.models.gains import gains_of, install_gains
from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)

COMPILE_ENV = "NEUROGATE_COMPILE"
COMPILE_MIN_TOKENS = 4096  # below this a first compilation (tens of seconds) costs more than it saves
COMPILE_BACKEND = "inductor"
ROW_MULTIPLE = 16  # compiled batches are padded to a multiple of this many rows (fewer distinct shapes)
CACHE_STEP = 64  # the static cache length is rounded up to this

CompileMode = Literal["auto", "on", "off"]
_LOGGED: set[tuple[object, ...]] = set()


@dataclass(frozen=True)
class Engine:
    """The decoding engine of one call: ``compiled`` (static cache + compiled step) or eager."""

    compiled: bool
    reason: str

    def options(self, device: torch.device, cache_len: int) -> dict[str, Any]:
        """Keyword options for ``model.generate`` that select this engine."""
        if not self.compiled:
            return {}
        cuda = device.type == "cuda"
        # CUDA graphs replay a whole decoding step at once; on CPU there is no launch latency to hide.
        config = CompileConfig(backend=COMPILE_BACKEND, mode="reduce-overhead" if cuda else "default")
        if not cuda:
            config._compile_all_devices = True  # type: ignore[assignment]  # else accelerators only
        return {
            "cache_implementation": "static",
            "max_cache_len": cache_len,
            "compile_config": config,
        }

    def batch_rows(self, rows: int) -> int:
        """How many rows a batch of ``rows`` prompts runs with (compiled: padded to fixed shapes)."""
        return -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE if self.compiled else rows


def compile_mode() -> CompileMode:
    """The ``NEUROGATE_COMPILE`` setting."""
    value = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "on", "off"):
        raise ConfigError(f"{COMPILE_ENV} must be 'auto', 'on' or 'off', got {value!r}")
    return value  # type: ignore[return-value]


def _single_device(model: nn.Module) -> bool:
    device_map = getattr(model, "hf_device_map", None)
    return not device_map or len(set(device_map.values())) <= 1


def choose_engine(lm: LoadedModel, new_tokens: int) -> Engine:
    """The engine for a call that generates about ``new_tokens`` tokens in all (before hooks are seen)."""
    mode = compile_mode()
    if mode == "off":
        return Engine(False, f"{COMPILE_ENV}=off")
    if not getattr(lm.model, "_can_compile_fullgraph", False) or not _single_device(lm.model):
        return Engine(False, "the model cannot be compiled with a static cache (or spans devices)")
    if lm.adapter.moe is not None:  # steering replaces the sparse blocks' forward with a routed loop
        return Engine(False, "mixture-of-experts: expert neurons are steered in an eager loop")
    if mode == "auto" and lm.device.type != "cuda":
        return Engine(False, "eager on CPU")
    if mode == "auto" and new_tokens < COMPILE_MIN_TOKENS and gains_of(lm) is None:
        return Engine(False, f"a small job ({new_tokens} new tokens) on a model not compiled yet")
    return Engine(True, "static cache, compiled decoding step")


def prepare(lm: LoadedModel, engine: Engine) -> None:
    """Install the neuron gains before anything is attached, so neuron steering becomes gain values.

    A model whose forward transformers compiled before the gains existed holds graphs traced without
    their hooks, which torch would keep running; those graphs are dropped (``torch._dynamo.reset``).
    """
    if not engine.compiled or gains_of(lm) is not None:
        return
    install_gains(lm)
    if getattr(lm.model, "_compiled_call", None) is not None:
        logger.info("%s: dropping graphs compiled before neuron gains were installed", lm.spec)
        torch._dynamo.reset()
        del lm.model._compiled_call


def foreign_hooks(lm: LoadedModel) -> list[str]:
    """Names of the modules (``"<global>"`` for process-wide hooks) carrying forward hooks other than the
    neuron gains."""
    table = gains_of(lm)
    allowed = table.hook_ids if table is not None else set()
    found: list[str] = []
    modules = nn.modules.module
    if modules._global_forward_hooks or modules._global_forward_pre_hooks:
        found.append("<global>")
    for name, module in lm.model.named_modules():
        ids = set(module._forward_pre_hooks) | set(module._forward_hooks)
        if ids - allowed:
            found.append(name or "<model>")
    return found


def settle(lm: LoadedModel, engine: Engine) -> Engine:
    """The engine once the call's intervention is attached: eager when hooks a compiled step would not
    follow are present."""
    if not engine.compiled:
        return engine
    hooked = foreign_hooks(lm)
    if not hooked:
        return engine
    key = (lm.spec, tuple(hooked))
    if key not in _LOGGED:
        _LOGGED.add(key)
        more = f" and {len(hooked) - 3} more modules" if len(hooked) > 3 else ""
        logger.info(
            "%s: decoding eagerly because hooks sit on %s%s (only neuron steering keeps the compiled step)",
            lm.spec,
            ", ".join(hooked[:3]),
            more,
        )
    return Engine(False, "hooks other than neuron gains are attached")

"""Live steering: one model, loaded once in the background and shared by every request; requests wait
their turn (:class:`~neurogate.ui.stream.TurnQueue`) so two generations never run on top of each other.

A request streams the steered reply first (so its first token comes at once), then the unsteered one
(cached per prompt: greedy decoding makes it the same every time), then each reply's class (degenerate by
the reply rule, else the judge's verdict) and the steered reply's KL from the unsteered model, measured by
teacher-forcing the unsteered reply (:func:`neurogate.evaluation.metrics.kl_divergence`). Steering hooks
are attached for the steered generation and the KL pass only. A reasoning model's reply is judged by its
answer after the thinking block, as the evaluation judges it; the thinking goes to the page apart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from neurogate import prompts, threads
from neurogate.discovery.directions import ResidualDirections, compute_directions
from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.engine import Classifier
from neurogate.evaluation.judges import get_judge
from neurogate.evaluation.metrics import kl_divergence
from neurogate.evaluation.replies import degeneracy
from neurogate.evaluation.thinking import thought_class
from neurogate.models.generation import Generation
from neurogate.models.loading import LoadedModel, load_model
from neurogate.models.thinking import ThinkingFormat, split_reply, thinking_format
from neurogate.steering.base import Intervention
from neurogate.steering.registry import get_kind, make
from neurogate.ui.catalog import Catalog
from neurogate.ui.settings import MAX_NEW_TOKENS, UISettings
from neurogate.ui.stream import TurnQueue, stream_reply

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
Loader = Callable[[], LoadedModel]
UNSTEERED_CACHE = 64
MAX_PROMPT_CHARS = 4000
VALUE_LIMIT = 10.0
DIRECTION_SETS = ("builtin:harmful", "builtin:benign")


@dataclass(frozen=True)
class SteerRequest:
    """One live comparison: ``method`` at ``value`` on its own scale, with ``circuit`` (a catalog id) for
    the neuron methods; each reply stops after ``max_new_tokens`` (``None``: the explorer's default)."""

    prompt: str
    method: str
    value: float
    circuit: str | None = None
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ConfigError("type a prompt first")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
        scale = get_kind(self.method).scale
        if not -VALUE_LIMIT <= self.value <= VALUE_LIMIT:
            raise ConfigError(f"{scale.symbol} must be between -{VALUE_LIMIT:g} and {VALUE_LIMIT:g}")
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ConfigError(f"the reply length must be between 1 and {MAX_NEW_TOKENS} tokens")


class LiveSteering:
    """The shared model and everything live steering keeps between requests."""

    def __init__(self, settings: UISettings, catalog: Catalog, loader: Loader | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.classifier = Classifier([get_judge(settings.judge)])
        self.turns = TurnQueue()
        self.lm: LoadedModel | None = None
        #: The model's thinking format (``None``: not a reasoning model): replies are judged by the answer.
        self.thinking: ThinkingFormat | None = None
        self.state = "off" if settings.model is None and loader is None else "loading"
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._loader = loader or (
            lambda: load_model(str(settings.model), dtype=settings.dtype, device=settings.device)
        )
        self._ready = threading.Event()
        self._directions: ResidualDirections | None = None
        self._directions_source = ""
        self._unsteered: OrderedDict[tuple[str, int], Generation] = OrderedDict()

    # -- the model -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model in a background thread (the page is usable meanwhile)."""
        if self.state == "off":
            return
        threading.Thread(target=self._load, name="neurogate-ui-load", daemon=True).start()

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            self.lm = self._loader()
            self.thinking = thinking_format(self.lm)
            self.state = "ready"
        except Exception as exc:  # one line on the page and on stderr; the rest of the explorer keeps working
            self.state, self.error = "failed", _one_line(exc)
            logger.error("the model could not be loaded: %s", self.error)
            logger.info("loading the model failed", exc_info=True)  # the traceback, with neurogate -v
        finally:
            self.load_seconds = time.perf_counter() - start
            self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def status(self) -> dict[str, Any]:
        lm = self.lm
        return {
            "state": self.state,
            "model": lm.spec if lm is not None else self.settings.model,
            "shape": lm.shape if lm is not None else None,
            "error": self.error,
            "load_seconds": self.load_seconds,
            "queue": self.turns.length,
            "judge": self.classifier.names[0],
            "max_new_tokens": self.settings.max_new_tokens,
            "max_new_tokens_limit": MAX_NEW_TOKENS,
        }

    def _model(self, emit: Emit) -> LoadedModel:
        if self.state == "off":
            raise ConfigError("live steering is off: start the explorer with --model")
        if not self._ready.is_set():
            emit({"event": "status", "text": "loading the model"})
            self._ready.wait()
        if self.lm is None:
            raise NeurogateError(f"the model could not be loaded: {self.error}")
        return self.lm

    # -- one request -----------------------------------------------------------------------------------

    def run(self, req: SteerRequest, emit: Emit, cancel: threading.Event) -> None:
        """Serve one request in the caller's thread, after every earlier one; always ends with ``end``."""
        received = time.perf_counter()
        try:
            with self.turns.turn(lambda ahead: emit({"event": "queued", "ahead": ahead})):
                if not cancel.is_set():
                    self._compare(req, emit, cancel, received)
        except NeurogateError as exc:
            emit({"event": "error", "text": str(exc)})
        except Exception as exc:  # the page shows it; the server keeps serving
            logger.exception("live steering failed")
            emit({"event": "error", "text": f"{type(exc).__name__}: {exc}"})
        finally:
            emit({"event": "end"})

    def _compare(self, req: SteerRequest, emit: Emit, cancel: threading.Event, received: float) -> None:
        lm = self._model(emit)
        threads.refresh()  # under auto, count the idle cores again: the load may have changed since start
        iv = self._intervention(lm, req, emit)
        max_new = min(req.max_new_tokens or self.settings.max_new_tokens, MAX_NEW_TOKENS)
        key = (req.prompt, max_new)
        emit(
            {
                "event": "start",
                "label": iv.label,
                "scale": iv.scale.name,
                "symbol": iv.scale.symbol,
                "detail": self._detail(iv),
                "max_new_tokens": max_new,
                "unsteered_cached": key in self._unsteered,
            }
        )

        def tokens(side: str) -> Callable[[str], None]:
            return lambda text: emit(
                {"event": "token", "side": side, "text": text, "t": time.perf_counter() - received}
            )

        def counts(side: str) -> Callable[[int], None]:
            return lambda n: emit(
                {
                    "event": "progress",
                    "side": side,
                    "n": n,
                    "max": max_new,
                    "t": time.perf_counter() - received,
                }
            )

        handle = iv.attach()
        started = time.perf_counter()
        try:
            steered = stream_reply(lm, req.prompt, max_new, tokens("steered"), cancel, counts("steered"))
        finally:
            handle.remove()
        emit({**self._done("steered", req.prompt, steered), **_speed(steered, started)})
        plain = self._unsteered.get(key)
        cached = plain is not None
        started = time.perf_counter()
        if plain is None:
            plain = stream_reply(lm, req.prompt, max_new, tokens("unsteered"), cancel, counts("unsteered"))
            if not cancel.is_set():
                self._remember(key, plain)
        speed = {} if cached else _speed(plain, started)
        emit({**self._done("unsteered", req.prompt, plain), "cached": cached, **speed})
        if cancel.is_set():
            return
        kl = kl_divergence(lm, [req.prompt], [plain.token_ids], iv, n_tokens=len(plain.token_ids) + 1)
        emit(
            {
                "event": "kl",
                "side": "steered",
                "first": kl.first_token,
                "mean": kl.mean_token,
                "n_tokens": kl.n_tokens,
            }
        )

    def _done(self, side: str, prompt: str, reply: Generation) -> dict[str, Any]:
        """The reply with its class: degenerate by the reply rule (never judged), else the judge's verdict.
        A reasoning model's answer (after its thinking block) is what is judged; the event then also holds
        ``thinking``, ``answer`` and ``thought`` (the thinking's own class)."""
        split = split_reply(reply.text, self.thinking)
        (classes,) = self.classifier.classify([prompt], [split.answer])
        cls = classes[self.classifier.names[0]]
        thinking = (
            {"thinking": split.thinking, "answer": split.answer, "thought": thought_class(split.thinking)}
            if self.thinking is not None
            else {}
        )
        return {
            "event": "done",
            "side": side,
            "text": reply.text,
            "n_tokens": reply.n_generated,
            "finished": reply.finished,
            "verdict": None if cls == "degenerate" else cls,
            "class": cls,
            "degenerate": degeneracy(split.answer).reason,
            **thinking,
        }

    def _remember(self, key: tuple[str, int], reply: Generation) -> None:
        self._unsteered[key] = reply
        while len(self._unsteered) > UNSTEERED_CACHE:
            self._unsteered.popitem(last=False)

    def _detail(self, iv: Intervention) -> str:
        """What a residual method steers along: its layer, how that layer was chosen, and where the
        direction came from (empty for the neuron methods, whose circuit the page names)."""
        d = self._directions
        layer = getattr(iv, "layer", None)
        if get_kind(iv.kind).source != "directions" or d is None or layer is None:
            return ""
        accuracy = d.separation[layer] if layer < len(d.separation) else math.nan
        how = [
            *(["the best-separating layer"] if layer == d.best_layer else []),
            *([f"held-out accuracy {accuracy:.2f}"] if math.isfinite(accuracy) else []),
        ]
        where = f"layer {layer} (of 0-{d.n_layers - 1}{''.join('; ' + h for h in how)})"
        what = (
            f"Subtracts s times the direction after {where}."
            if iv.kind == "caa"
            else f"Removes s times the unit direction of {where} at every residual site."
        )
        return f"{what} Direction: the mean residual stream on {self._directions_source}."

    def _intervention(self, lm: LoadedModel, req: SteerRequest, emit: Emit) -> Intervention:
        kind = get_kind(req.method)
        if kind.source == "circuit":
            if not req.circuit:
                raise ConfigError(f"{req.method} steers a circuit: choose one first")
            circuit = self.catalog.circuit(req.circuit)
            circuit.check_model(lm)
            return make(req.method, lm, circuit, req.value, **({"seed": 0} if "seed" in kind.options else {}))
        return make(req.method, lm, self._residual_directions(lm, emit), req.value)

    def _residual_directions(self, lm: LoadedModel, emit: Emit) -> ResidualDirections:
        """Directions stored in a run for this model, else computed once from the built-in sets."""
        if self._directions is None:
            shape = (lm.adapter.n_layers, lm.adapter.d_model)
            stored = self.catalog.directions(
                lambda d: tuple(d.diffs.shape) == shape and d.model.get("spec") == lm.spec
            )
            if stored is None:
                pos, neg = DIRECTION_SETS
                emit({"event": "status", "text": f"computing residual directions ({pos} vs {neg})"})
                found = compute_directions(lm, list(prompts.load(pos)), list(prompts.load(neg)))
                source = f"{pos} minus that on {neg}"
            else:
                found, run = stored
                source = f"run {run}'s positive prompts minus that on its negative ones"
            counts = f" ({found.n_positive} and {found.n_negative} prompts)" if found.n_positive else ""
            self._directions_source = source + counts
            self._directions = found
        return self._directions


def _one_line(exc: Exception) -> str:
    """An exception as one line for a person: a neurogate error's own message, else its type and the first
    line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NeurogateError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _speed(reply: Generation, started: float) -> dict[str, Any]:
    """How fast a reply was generated (tokens/s since ``started``) and on how many CPU threads, so a slow
    thread setting shows on the page."""
    seconds = time.perf_counter() - started
    rate = reply.n_generated / seconds if seconds > 0 else None
    return {"seconds": seconds, "tokens_per_s": rate, "threads": torch.get_num_threads()}

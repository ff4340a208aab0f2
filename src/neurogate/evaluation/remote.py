"""Generation through an OpenAI-compatible endpoint (vLLM, llama.cpp's server, ...), for evaluation at scale.

:func:`generate_remote` takes the prompts and options of :func:`neurogate.models.generation.generate` that
apply to a server (``max_new_tokens``, ``greedy``/``temperature``/``top_p``/``seed``, ``system_prompt``,
``chat``, ``stop_at_eos``) and returns the same ``list[Generation]`` in prompt order. Each condition of a
study is one served model name: the base model, a folded export, or a LoRA adapter (vLLM multi-LoRA:
``--lora-modules NAME=PATH``, then ``model=NAME`` per call). The server applies the chat template
(``chat=True`` uses ``/chat/completions``; ``chat=False`` sends the raw text to ``/completions``).

Requests run ``concurrency`` at a time (the server batches them); transient failures (connection errors,
HTTP 408/429/5xx) are retried with exponential backoff, anything else raises :class:`EndpointError` with
the server's message. Token ids come from the server when it returns them (vLLM's ``return_token_ids``,
sent by default through :attr:`Endpoint.extra_body`); otherwise ``tokenizer`` re-encodes the reply text
(close to, but not always exactly, the generated ids), or they are left empty. Only replies cross the
wire: KL divergence and perplexity need the model's logits, so they stay local.

Only the standard library is used (``urllib``, threads), so the client adds no dependency.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from neurogate.errors import ConfigError, EndpointError
from neurogate.export.serving import VllmPlan, stop_server
from neurogate.models.generation import Generation, check_sampling
from neurogate.progress import progress_bar

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
VLLM_EXTRAS: Mapping[str, Any] = {"return_token_ids": True, "repetition_penalty": 1.0}
"""Sent with every request by default: token ids back, and no repetition penalty from the model's
generation config (vLLM applies one by default when the config names it; neurogate's generate uses 1.0).
Servers that reject unknown fields need ``extra_body={}``."""


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the server.

    ``base_url``: up to and including ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``). ``api_key``: sent as a
    bearer token (default: ``$OPENAI_API_KEY``, else none). ``concurrency``: requests in flight at once.
    ``retries``: extra tries of a request after a transient failure. ``timeout``: seconds per request.
    """

    base_url: str
    api_key: str | None = None
    concurrency: int = 16
    retries: int = 3
    timeout: float = 600.0
    backoff: float = 0.5
    extra_body: Mapping[str, Any] = field(default_factory=lambda: dict(VLLM_EXTRAS))

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        for name, low in (("concurrency", 1), ("retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not self.timeout > 0 or self.backoff < 0:
            raise ConfigError(f"timeout must be > 0 and backoff >= 0, got {self.timeout}, {self.backoff}")

    def headers(self) -> dict[str, str]:
        key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return {"Content-Type": "application/json", **auth}


def _server_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    err = data.get("error", data) if isinstance(data, dict) else data
    message = err.get("message", err) if isinstance(err, dict) else err
    return str(message)[:500]


def request(endpoint: Endpoint, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """One JSON request (GET without ``body``, POST with it), retried on transient failures."""
    url = f"{endpoint.base_url}/{path.lstrip('/')}"
    data = None if body is None else json.dumps(body).encode()
    last = ""
    for attempt in range(endpoint.retries + 1):
        if attempt:
            time.sleep(endpoint.backoff * 2 ** (attempt - 1) * (1 + random.random() / 2))
        req = urllib.request.Request(url, data=data, headers=endpoint.headers())
        try:
            with urllib.request.urlopen(req, timeout=endpoint.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            message = _server_message(exc)
            if exc.code not in RETRY_STATUS:
                raise EndpointError(f"{url} answered HTTP {exc.code}: {message or exc.reason}") from None
            last = f"HTTP {exc.code}: {message or exc.reason}"
        except TimeoutError:  # the server is busy, not gone: sending the request again adds to its load
            raise EndpointError(
                f"{url} did not answer within {endpoint.timeout:g} s; raise Endpoint.timeout for long "
                "generations or lower concurrency"
            ) from None
        except (urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise EndpointError(f"{url} did not answer within {endpoint.timeout:g} s") from None
            last = f"{type(reason).__name__}: {reason}"
        except ValueError as exc:
            raise EndpointError(f"{url} did not answer with JSON ({exc})") from None
    raise EndpointError(
        f"could not get an answer from {url} after {endpoint.retries + 1} tries (last: {last}). Is the "
        "server running at that address? `neurogate serve` prints the command that starts vLLM."
    )


def served_models(endpoint: Endpoint) -> list[str]:
    """Names the server serves (the base model and every LoRA adapter), from ``GET /models``."""
    data = request(endpoint, "models")
    try:
        return [str(item["id"]) for item in data["data"]]
    except (KeyError, TypeError):
        raise EndpointError(f"{endpoint.base_url}/models did not list models: {str(data)[:200]}") from None


def _body(
    prompt: str, model: str, options: Mapping[str, Any], chat: bool, system: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, **options}
    if chat:
        messages = [] if system is None else [{"role": "system", "content": system}]
        body["messages"] = [*messages, {"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt if system is None else f"{system}\n\n{prompt}"
    return body


def _generation(prompt: str, data: Any, chat: bool, tokenizer: Tokenizer | None) -> Generation:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"the server's answer has no reply text: {str(data)[:300]}") from None
    text = str(text or "")
    finished = choice.get("finish_reason") == "stop"
    ids = choice.get("token_ids")
    if isinstance(ids, list):
        ids = [int(t) for t in ids]
        if finished and ids and choice.get("stop_reason") is None:
            ids = ids[:-1]  # stopped by the end-of-turn token, which ends the list; Generation leaves it out
    elif tokenizer is not None:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        ids = []
    return Generation(prompt=prompt, text=text.strip(), token_ids=ids, finished=finished)


def sampling_options(
    max_new_tokens: int, greedy: bool, temperature: float, top_p: float, seed: int, stop_at_eos: bool
) -> dict[str, Any]:
    """The request fields for these generation options (greedy is temperature 0)."""
    check_sampling(max_new_tokens, greedy, temperature, top_p)
    options: dict[str, Any] = {"max_tokens": max_new_tokens, "seed": seed}
    options.update(
        {"temperature": 0.0, "top_p": 1.0} if greedy else {"temperature": temperature, "top_p": top_p}
    )
    if not stop_at_eos:
        options["ignore_eos"] = True
    return options


def generate_remote(
    endpoint: Endpoint | str,
    prompts: Sequence[str],
    *,
    model: str | None = None,
    max_new_tokens: int = 128,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = False,
    stop_at_eos: bool = True,
    tokenizer: Tokenizer | None = None,
) -> list[Generation]:
    """Generate a reply to each prompt through ``endpoint``, in prompt order (see the module docstring).

    ``model``: the served name to use (the base model or an adapter); default: the first the server
    lists. ``endpoint`` may be a base URL. ``stop_at_eos=False`` asks for ``max_new_tokens`` tokens each
    (vLLM's ``ignore_eos``).
    """
    ep = Endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    if isinstance(prompts, str):
        raise ConfigError("generate_remote takes a sequence of prompts; wrap a single prompt in a list")
    options = {**sampling_options(max_new_tokens, greedy, temperature, top_p, seed, stop_at_eos)}
    options.update(ep.extra_body)
    prompts = list(prompts)
    if not prompts:
        return []
    name = model or _first_model(ep)
    path = "chat/completions" if chat else "completions"
    results: list[Generation | None] = [None] * len(prompts)

    def one(i: int) -> None:
        data = request(ep, path, _body(prompts[i], name, options, chat, system_prompt))
        results[i] = _generation(prompts[i], data, chat, tokenizer)

    pool = ThreadPoolExecutor(max_workers=min(ep.concurrency, len(prompts)))
    try:
        with progress_bar(progress, len(prompts), f"generating via {name}") as tick:
            pending: set[Future[None]] = {pool.submit(one, i) for i in range(len(prompts))}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                tick(len(done))
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    raise failed.exception()  # type: ignore[misc]
    finally:  # on an error or Ctrl-C, drop the queued requests and do not wait for those in flight
        pool.shutdown(wait=False, cancel_futures=True)
    return [r for r in results if r is not None]


def _first_model(endpoint: Endpoint) -> str:
    names = served_models(endpoint)
    if not names:
        raise EndpointError(f"{endpoint.base_url} serves no model")
    return names[0]


def wait_until_ready(
    endpoint: Endpoint | str, timeout: float = 300.0, alive: Callable[[], bool] | None = None
) -> list[str]:
    """Poll ``GET /models`` until the server answers (a starting vLLM takes about a minute on CPU) and
    return the served names; raise :class:`EndpointError` after ``timeout`` seconds, or as soon as
    ``alive()`` (e.g. "the server process still runs") turns false."""
    base = endpoint.base_url if isinstance(endpoint, Endpoint) else endpoint
    probe = Endpoint(base, retries=0, timeout=10.0, api_key=getattr(endpoint, "api_key", None))
    deadline = time.monotonic() + timeout
    while True:
        try:
            return served_models(probe)
        except EndpointError as exc:
            if alive is not None and not alive():
                raise EndpointError(f"the server at {base} stopped before it was ready") from exc
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"the server at {base} was not ready after {timeout:g} s ({exc})"
                ) from exc
        time.sleep(1.0)


@contextmanager
def local_server(
    plan: VllmPlan, log: Path, *, env: dict[str, str] | None = None, timeout: float = 420.0
) -> Iterator[Endpoint]:
    """Run the vLLM server of ``plan`` for the duration of the block and yield its endpoint once it
    answers; the server (and its workers) is stopped however the block ends. Its output goes to ``log``;
    the end of the log is part of the error when it fails to start."""
    proc = plan.start(log, env)
    try:
        try:
            wait_until_ready(plan.base_url, timeout=timeout, alive=lambda: proc.poll() is None)
        except EndpointError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise EndpointError(f"{exc}; the end of its log ({log}):\n{tail}") from None
        yield Endpoint(plan.base_url, concurrency=64)
    finally:
        stop_server(proc)

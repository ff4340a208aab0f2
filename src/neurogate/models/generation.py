"""Batched generation with left padding, per-sequence stopping at end of turn, and an optional intervention.

Prompts are sorted by token length and cut into batches (so little padding is wasted), generated with the
model's KV cache, and returned in the original order. Under greedy decoding a prompt's reply does not
depend on the batch it lands in (position ids follow the attention mask).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neurogate.errors import ConfigError
from neurogate.models.hooks import Attachable
from neurogate.models.inputs import check_batch_size, encode, left_padded, pad_id
from neurogate.models.loading import LoadedModel
from neurogate.progress import progress_bar

logger = logging.getLogger(__name__)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|eot|>")
CPU_BATCH_CANDIDATES = (8, 16, 32, 64)
CUDA_BATCH_CANDIDATES = (8, 16, 32, 64, 128, 256, 512)


@dataclass
class Generation:
    """One prompt's reply. ``token_ids`` are the generated ids without the end-of-turn token;
    ``finished`` says whether the model ended its turn (else it ran out of ``max_new_tokens``)."""

    prompt: str
    text: str
    token_ids: list[int]
    finished: bool

    @property
    def n_generated(self) -> int:
        """Tokens the model produced, the end-of-turn token included."""
        return len(self.token_ids) + int(self.finished)


def stop_token_ids(lm: LoadedModel) -> list[int]:
    """Ids that end a reply: the generation config's and tokenizer's eos, and known end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    ids += eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    if lm.tokenizer.eos_token_id is not None:
        ids.append(int(lm.tokenizer.eos_token_id))
    vocab = lm.tokenizer.get_vocab()
    ids += [vocab[tok] for tok in END_OF_TURN_TOKENS if tok in vocab]
    return sorted(set(ids))


def _bucket(length: int) -> int:
    return 1 << max(3, (length - 1).bit_length())


_AUTO_BATCH: dict[tuple[Any, ...], int] = {}


def _kv_bytes_per_token(lm: LoadedModel) -> int:
    cfg = lm.model.config
    n_heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None) or 1)
    heads = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or lm.adapter.d_model // n_heads)
    return 2 * lm.adapter.n_layers * int(heads) * int(head_dim) * lm.dtype.itemsize


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _cache_of(output: Any) -> Any:
    for name in ("cache", "past_key_values"):
        found = getattr(output, name, None)
        if found is not None:
            return found
    return None


@torch.no_grad()
def _decode_rate(lm: LoadedModel, batch: int, length: int, steps: int = 3) -> float:
    """Tokens per second of decoding ``batch`` sequences after a ``length``-token prefill."""
    ids = torch.full((batch, length), pad_id(lm) or 1, dtype=torch.long, device=lm.device)
    name = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    out = lm.model(input_ids=ids, use_cache=True)
    past, nxt = _cache_of(out), ids[:, -1:]
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    start = time.perf_counter()
    for _ in range(steps):
        out = lm.model(input_ids=nxt, use_cache=True, **{name: past})
        past = _cache_of(out)
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    return batch * steps / max(time.perf_counter() - start, 1e-9)


def auto_batch_size(lm: LoadedModel, prompt_tokens: int, max_new_tokens: int, n_prompts: int) -> int:
    """The batch size with the best decoding throughput that fits memory, probed once per model, device,
    dtype and prompt-length bucket (a power of two) and remembered for the process. A probe stops once
    doubling the batch gains less than 10%; on CUDA an out-of-memory error backs off to the last size
    that fitted. On CPU the probe decodes after an 8-token prefill, so it costs a few forward passes."""
    bucket = _bucket(prompt_tokens)
    cuda = lm.device.type == "cuda"
    # On CUDA the KV cache of the new tokens decides what fits, so their bucket is part of the key too.
    key = (id(lm.model), str(lm.device), str(lm.dtype), bucket, _bucket(max_new_tokens) if cuda else 0)
    if key in _AUTO_BATCH:
        return min(_AUTO_BATCH[key], max(1, n_prompts))
    budget = _free_memory(lm.device) // (2 if cuda else 4)
    per_seq = _kv_bytes_per_token(lm) * (bucket + max_new_tokens) + 4 * int(lm.model.config.vocab_size)
    sizes = CUDA_BATCH_CANDIDATES if cuda else CPU_BATCH_CANDIDATES
    candidates = [b for b in sizes if b * per_seq <= budget]
    best, best_rate = 1, 0.0
    probe_len = bucket + max_new_tokens if cuda else min(bucket, 8)
    for size in candidates or [1]:
        try:
            rate = _decode_rate(lm, size, probe_len)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if rate < best_rate * 1.1:
            if rate > best_rate:
                best = size
            break
        best, best_rate = size, rate
    logger.info("auto batch for %s, ~%d prompt tokens: %d (%.0f tok/s)", lm.spec, bucket, best, best_rate)
    _AUTO_BATCH[key] = best
    return min(best, max(1, n_prompts))


@contextmanager
def contiguous_head(lm: LoadedModel) -> Iterator[None]:
    """Make the output head's input contiguous while inside the block.

    transformers feeds the head ``hidden[:, -k:, :]`` (``logits_to_keep``), a strided view. On CPU in
    bf16, oneDNN's matmul then fails on that view and torch switches *every later bf16 matmul of the
    process* to a fallback about 7x slower (measured: a [64, 1536] x [1536, 8960] linear went from 5 ms to
    39 ms). A contiguous copy of the few kept rows avoids both costs.
    """
    head = lm.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Module):
        yield
        return

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    intervention: Attachable | None = None,
    max_new_tokens: int = 128,
    batch_size: int | Literal["auto"] = "auto",
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = False,
    stop_at_eos: bool = True,
    preformatted: bool = False,
) -> list[Generation]:
    """Generate a reply to each prompt, in prompt order, optionally under ``intervention``.

    ``greedy=False`` samples with ``temperature`` and ``top_p`` (seeded with ``seed``). ``stop_at_eos=False``
    suppresses end-of-turn tokens so every reply runs to ``max_new_tokens`` (for timing).
    ``preformatted=True``: the prompts are already model-ready text (e.g. a multi-turn conversation run
    through the chat template); they are tokenized as they are.
    """
    options = _options(lm, max_new_tokens, greedy, temperature, top_p, stop_at_eos)
    check_batch_size(batch_size)
    if isinstance(prompts, str):
        raise ConfigError("generate takes a sequence of prompts; wrap a single prompt in a list")
    prompts = list(prompts)
    if not prompts:
        return []
    seqs = encode(lm, prompts, system_prompt=system_prompt, chat=chat, preformatted=preformatted)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    stops = options["eos_token_id"]
    results: list[Generation | None] = [None] * len(seqs)
    torch.manual_seed(seed)
    attached = intervention.attach() if intervention is not None else nullcontext()
    with attached, contiguous_head(lm), progress_bar(progress, len(seqs), "generating") as tick:
        longest = len(seqs[order[-1]])
        size = (
            batch_size
            if isinstance(batch_size, int)
            else auto_batch_size(lm, longest, max_new_tokens, len(order))
        )
        start = 0
        while start < len(order):
            rows = order[start : start + size]
            batch = left_padded(lm, [seqs[i] for i in rows])
            with torch.no_grad():
                out = _generate_fn(lm)(batch.input_ids, attention_mask=batch.attention_mask, **options)
            new = out[:, batch.input_ids.shape[1] :].tolist()
            for row, ids in zip(rows, new, strict=True):
                results[row] = _finish(lm, prompts[row], ids, stops if stop_at_eos else [])
            start += len(rows)
            tick(len(rows))
    return [r for r in results if r is not None]


def check_sampling(max_new_tokens: int, greedy: bool, temperature: float, top_p: float) -> None:
    """Raise :class:`ConfigError` for a token budget or sampling settings no generator accepts."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise ConfigError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")


def _options(
    lm: LoadedModel, max_new_tokens: int, greedy: bool, temperature: float, top_p: float, stop_at_eos: bool
) -> dict[str, Any]:
    """Validated keyword options for ``model.generate``."""
    check_sampling(max_new_tokens, greedy, temperature, top_p)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": not greedy,
        "pad_token_id": pad_id(lm),
        "eos_token_id": stop_token_ids(lm),
        "repetition_penalty": 1.0,
    }
    if not greedy:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    if not stop_at_eos:
        options.update(min_new_tokens=max_new_tokens)
    return options


def _generate_fn(lm: LoadedModel) -> Any:
    return lm.model.generate


def _finish(lm: LoadedModel, prompt: str, ids: list[int], stops: Sequence[int]) -> Generation:
    stop_set = set(stops)
    cut = next((i for i, t in enumerate(ids) if t in stop_set), None)
    kept = ids if cut is None else ids[:cut]
    text = lm.tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(prompt=prompt, text=str(text).strip(), token_ids=kept, finished=cut is not None)

"""The generation batch size, from memory arithmetic instead of timing.

Decoding one more row costs its key/value cache (every layer, every position up to the prompt plus the
new tokens), its logits (one row of the vocabulary in the model's dtype, a float32 copy and the processed
scores) and, during the prefill, its activations. :func:`auto_batch_size` divides the memory left after
the weights by that per-row cost, with a safety factor, and caps the result: on CPU throughput stops
growing long before memory runs out; on CUDA the cap bounds the compiled shapes and the CUDA-graph pools.

Every input of the arithmetic is fixed by the model, the device *type and size* and the call's lengths,
never by a timing or by what the allocator happens to hold, so the same call gives the same size in every
process. Rows are split evenly over the batches, so the last batch is not a small remainder.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch

from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)

# On CPU, greedy decoding drops finished rows (models/ragged.py), so one large batch pays for its longest
# reply once rather than once per batch: on the 1.5B in bf16 (2 cores), 100 mostly-refused prompts took
# 74 s in one batch against 92 s in two of 50, and 48 long replies 53 s in one batch against 63 s in two.
CPU_MAX_BATCH = 128
CUDA_MAX_BATCH = 256
CUDA_USABLE = 0.90  # of the card's total memory; the rest is the CUDA context and fragmentation
CUDA_RESERVE = 2 << 30  # workspaces, compiled graphs and CUDA-graph pools
CPU_USABLE = 0.50  # of physical memory
SAFETY = 1.5  # per-row estimate x this; GPU peaks still to be measured with bench/gpu.py
LENGTH_STEP = 64  # prompt lengths are rounded up to this, so nearby lengths give the same plan

_LOGGED: set[tuple[object, ...]] = set()


@dataclass(frozen=True)
class BatchPlan:
    """How a generation call is batched: ``size`` rows per batch, from ``budget`` bytes at ``per_row``;
    ``limit`` names what bounded it (``"memory"``, ``"cap"`` or ``"prompts"``)."""

    size: int
    per_row: int
    budget: int
    limit: str


def round_up(n: int, step: int) -> int:
    return -(-max(n, 1) // step) * step


def kv_bytes_per_token(lm: LoadedModel) -> int:
    """Bytes of key/value cache one token takes over all layers."""
    cfg = lm.model.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    n_heads = int(getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None) or 1)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(text, "head_dim", None) or lm.adapter.d_model // n_heads)
    return 2 * lm.adapter.n_layers * kv_heads * head_dim * lm.dtype.itemsize


def row_bytes(lm: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> int:
    """Estimated peak bytes one generated row adds: cache, logits and prefill activations."""
    cache = kv_bytes_per_token(lm) * (prompt_tokens + max_new_tokens)
    vocab = int(getattr(lm.model.config, "vocab_size", 0) or 0)
    logits = vocab * (lm.dtype.itemsize + 8)
    cfg = lm.model.config
    heads = int(getattr(cfg, "num_attention_heads", None) or 1)
    activations = (3 * lm.adapter.d_mlp + 6 * lm.adapter.d_model) * lm.dtype.itemsize
    per_token = (
        activations + 4 * heads * prompt_tokens
    )  # + attention scores, should attention materialise them
    return int(SAFETY * (cache + logits + prompt_tokens * per_token))


def weight_bytes(lm: LoadedModel) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = [*lm.model.parameters(), *lm.model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_budget(lm: LoadedModel) -> int:
    """Bytes generation may use beyond the weights: a fixed share of the device's *total* memory."""
    device = lm.device
    if device.type == "cuda":
        total = int(torch.cuda.get_device_properties(device).total_memory)
        return int(total * CUDA_USABLE) - weight_bytes(lm) - CUDA_RESERVE
    try:
        total = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return int(total * CPU_USABLE) - weight_bytes(lm)


def plan_batch(lm: LoadedModel, prompt_tokens: int, max_new_tokens: int, n_prompts: int) -> BatchPlan:
    """The batch plan for ``n_prompts`` prompts of at most ``prompt_tokens`` tokens (see module doc)."""
    per_row = row_bytes(lm, round_up(prompt_tokens, LENGTH_STEP), max_new_tokens)
    budget = memory_budget(lm)
    cap = CUDA_MAX_BATCH if lm.device.type == "cuda" else CPU_MAX_BATCH
    fits = max(1, budget // per_row) if budget > 0 else 1
    largest, limit = min((fits, "memory"), (cap, "cap"), (max(1, n_prompts), "prompts"))
    batches = math.ceil(max(1, n_prompts) / largest)
    return BatchPlan(math.ceil(max(1, n_prompts) / batches), per_row, budget, limit)


def auto_batch_size(lm: LoadedModel, prompt_tokens: int, max_new_tokens: int, n_prompts: int) -> int:
    """Rows per generation batch for ``batch_size="auto"``: the largest that fits memory (with a safety
    factor) up to the device's cap, spread evenly over the batches. Deterministic; logged once."""
    plan = plan_batch(lm, prompt_tokens, max_new_tokens, n_prompts)
    key = (lm.spec, str(lm.device), lm.dtype, plan)
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.info(
            "generation batch for %s on %s: %d rows (%.1f MiB per row, %.1f GiB budget; bounded by %s)",
            lm.spec,
            lm.device,
            plan.size,
            plan.per_row / 2**20,
            plan.budget / 2**30,
            plan.limit,
        )
    return plan.size

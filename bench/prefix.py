"""Benchmark: teacher-forced passes and greedy generation with the chat template's shared prefix computed
once (models/prefix.py) against the plain left-padded pass, in one process, on the same prompts.

Measures, for the first ``--n`` prompts of advbench_dev.json (default chat template and system prompt):

- next-token log-probabilities (the pass direction selection repeats for every candidate direction);
- greedy generation of ``--new-tokens`` tokens (stopping at end of turn, finished rows dropped).

Prints seconds for both paths, their ratio, the prefix's share of the prompt tokens, and how far the
results differ (largest log-probability difference; replies that differ), since bf16 rounding depends on
the shapes of the matrix products.

Run: .venv/bin/python bench/prefix.py [--model zoo:qwen2.5-coder-1.5b-instruct] [--n 64]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from common import cpu_name, read
from neurogate.evaluation.metrics import next_token_logprobs
from neurogate.models import prefix as prefix_mod
from neurogate.models.devices import dtype_name
from neurogate.models.generation import generate
from neurogate.models.inputs import encode, template_prefix
from neurogate.models.loading import load_model


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="zoo:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    lm = load_model(args.model)
    prompts = read("advbench_dev.json", args.n)
    seqs = encode(lm, prompts)
    shared = template_prefix(lm)
    share = shared * len(seqs) / sum(len(s) for s in seqs)
    print(f"{args.model} ({dtype_name(lm.dtype)}) on {cpu_name()}: {len(prompts)} prompts")
    print(f"template prefix: {shared} tokens, {share:.0%} of the prompt tokens")
    next_token_logprobs(lm, prompts[:4])  # warm-up

    def both(fn: Callable[[], Any]) -> tuple[float, float, Any, Any]:
        t_prefix, a = timed(fn)
        saved = prefix_mod.MIN_PREFIX
        prefix_mod.MIN_PREFIX = 10**9
        try:
            t_plain, b = timed(fn)
        finally:
            prefix_mod.MIN_PREFIX = saved
        return t_prefix, t_plain, a, b

    t_p, t_0, a, b = both(lambda: next_token_logprobs(lm, prompts))
    diff = float((a - b).abs().max())
    same = int((a.argmax(-1) == b.argmax(-1)).sum())
    print(
        f"next-token pass: prefix {t_p:.2f} s, plain {t_0:.2f} s, ratio {t_p / t_0:.2f}; "
        f"max |dlogp| {diff:.3g}, same top token {same}/{len(prompts)}"
    )
    t_p, t_0, a, b = both(lambda: generate(lm, prompts, max_new_tokens=args.new_tokens))
    differ = sum(x.token_ids != y.token_ids for x, y in zip(a, b, strict=True))
    print(
        f"generation ({args.new_tokens} tokens): prefix {t_p:.2f} s, plain {t_0:.2f} s, ratio "
        f"{t_p / t_0:.2f}; replies that differ {differ}/{len(prompts)}"
    )


if __name__ == "__main__":
    main()

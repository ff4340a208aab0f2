"""Benchmark: neurogate discovery against one plain batched forward pass over the same prompts.

Both sides see the same chat-formatted prompts (``--n`` from each of the harmful and harmless files). The
baseline is what a user would write with transformers: batches of 32 in file order, left padding, the full
causal-LM forward (logits included) under ``torch.no_grad``. Discovery is
``neurogate.discover(..., universal_filter=False)``; the universal battery is timed once on its own.

Run: .venv/bin/python bench/discovery.py [--n 100] [--repeats 3] [--battery]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

import neurogate
from common import cpu_name, read
from neurogate.discovery import discover
from neurogate.discovery.universal import universal_neurons
from neurogate.models.inputs import encode, format_prompts
from neurogate.models.loading import LoadedModel


def baseline(lm: LoadedModel, prompts: list[str], batch: int = 32) -> None:
    """The plain way: unsorted batches, left padding, full model with logits."""
    texts = format_prompts(lm, prompts)
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = lm.tokenizer(
                texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(lm.device)
            lm.model(**enc)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, default=100, help="prompts from each file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--battery", action="store_true", help="also time the universal-neuron battery once")
    args = parser.parse_args()

    lm = neurogate.load_model(args.model, dtype=args.dtype, device="cpu")
    pos, neg = read("harmful_train.json", args.n), read("harmless_train.json", args.n)
    everything = pos + neg

    def run_discovery() -> None:
        discover(lm, pos, neg, universal_filter=False, progress=False)

    def run_baseline() -> None:
        baseline(lm, everything)

    # warm-up on a small slice of each side
    discover(lm, pos[:8], neg[:8], universal_filter=False, progress=False)
    baseline(lm, everything[:16])
    disc: list[float] = []
    base: list[float] = []
    for _ in range(args.repeats):
        base.append(timed(run_baseline))
        disc.append(timed(run_discovery))
        print(f"  baseline {base[-1]:.1f} s   discovery {disc[-1]:.1f} s", flush=True)
    t_base, t_disc = statistics.median(base), statistics.median(disc)
    seqs = encode(lm, everything)
    result = {
        "model": args.model,
        "dtype": args.dtype,
        "prompts": len(everything),
        "mean_tokens": sum(map(len, seqs)) / len(seqs),
        "cpu": cpu_name(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "baseline_s": base,
        "discovery_s": disc,
        "ratio": t_disc / t_base,
    }
    if args.battery:
        start = time.perf_counter()
        found = universal_neurons(lm, use_cache=False)
        result["battery_s"] = time.perf_counter() - start
        result["universal_neurons"] = len(found)
    print(json.dumps(result, indent=1))
    print(f"discovery / forward pass = {result['ratio']:.2f}x (median of {args.repeats})")


if __name__ == "__main__":
    main()

"""Benchmark: K circuits x N prompts as K batched generations (one per circuit, through its hooks) against
one mixed batch of K * N rows, each row under its own circuit (neurogate.steering.rows).

The circuits are random neuron sets of ``--neurons`` neurons each on the model (their choice does not
change the cost), at multipliers 0, -1, 2, 0.5, ... in turn, every other one from the third on toward the
mean (mean-ablation). Both
paths generate ``--new-tokens`` greedy tokens per prompt, stopping at end of turn (finished rows dropped).
Prints seconds for both, their ratio, how many replies differ (none expected in float32; bf16 rounding
depends on the batch's shape), the CPU and the machine's load average.

Run: .venv/bin/python bench/mixed_rows.py [--model zoo:smollm2-135m-instruct] [--k 4] [--n 8]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from common import DATA, cpu_name, read
from neurogate.discovery.circuit import Circuit, Neuron, Toward
from neurogate.models.devices import dtype_name
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel, load_model
from neurogate.models.tiny import tiny_lm
from neurogate.steering.rows import RowSpec, generate_rows

FALLBACK = ["Tell me about volcanoes.", "What is 2+2?", "Write a haiku about rain.", "Name three rivers."]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def random_circuits(lm: LoadedModel, k: int, size: int, seed: int = 0) -> list[Circuit]:
    """``k`` circuits of ``size`` random neurons each (means drawn at random, for mean-ablation rows)."""
    rng = random.Random(seed)
    shape = lm.shape
    total = shape["n_layers"] * shape["d_mlp"]
    circuits = []
    for _ in range(k):
        picks = rng.sample(range(total), min(size, total))
        neurons = [
            Neuron(p // shape["d_mlp"], p % shape["d_mlp"], 1.0, 1.0, 0.0, rng.uniform(-0.5, 0.5))
            for p in picks
        ]
        circuits.append(Circuit(neurons=neurons, model={"spec": lm.spec, "shape": shape}))
    return circuits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="zoo:smollm2-135m-instruct", help="a zoo spec or tiny:FAMILY")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--k", type=int, default=4, help="circuits")
    parser.add_argument("--n", type=int, default=8, help="prompts")
    parser.add_argument("--neurons", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    if args.model.startswith("tiny:"):
        lm = tiny_lm(args.model.removeprefix("tiny:"))
    else:
        lm = load_model(args.model, dtype=args.dtype, device="cpu")
    prompts = read("advbench_dev.json", args.n) if (DATA / "advbench_dev.json").is_file() else FALLBACK
    prompts = prompts[: args.n]
    circuits = random_circuits(lm, args.k, args.neurons)
    settings: list[tuple[Circuit, float, Toward]] = [
        (c, [0.0, -1.0, 2.0, 0.5][i % 4], "mean" if i % 2 == 0 and i > 0 else "zero")
        for i, c in enumerate(circuits)
    ]
    kw: dict[str, Any] = {"max_new_tokens": args.new_tokens}
    generate(lm, prompts[:2], **kw)  # warm-up

    def separate() -> list[Generation]:
        out: list[Generation] = []
        for circuit, m, toward in settings:
            with circuit.apply(lm, m, toward):
                out += generate(lm, prompts, **kw)
        return out

    specs: list[RowSpec] = [s for s in settings for _ in prompts]
    t_sep, a = timed(separate)
    t_mix, b = timed(lambda: generate_rows(lm, prompts * len(settings), specs, **kw))
    differ = sum(x.token_ids != y.token_ids for x, y in zip(a, b, strict=True))
    tokens = sum(g.n_generated for g in b)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{args.model} ({dtype_name(lm.dtype)}) on {cpu_name()}, {torch.get_num_threads()} torch threads, "
        f"load average {load}"
    )
    print(f"{len(settings)} circuits of {args.neurons} neurons x {len(prompts)} prompts, {tokens} tokens")
    print(
        f"separate batches {t_sep:.2f} s, one mixed batch {t_mix:.2f} s, ratio (mixed / separate) "
        f"{t_mix / t_sep:.2f}; replies that differ {differ}/{len(b)}"
    )


if __name__ == "__main__":
    main()

"""Benchmark: throughput of steered, folded and one-at-a-time generation against plain batched generation.

All conditions generate exactly ``--new-tokens`` tokens per prompt (end-of-turn suppressed), greedy, on the
first ``--n`` prompts of harmful_train.json, with one batch size (chosen once by ``auto_batch_size``). The
circuit is 0.1% of the model's MLP neurons from ``neurogate.discover`` (universal filter off, on the first
``--discover-n`` harmful vs harmless training prompts). Conditions:

- unsteered: batched, no intervention
- steered: batched, CNA multiplier 0 through forward pre-hooks
- folded: batched, multiplier 0 folded into the weights
- one-at-a-time: unsteered, batch size 1, on the first ``--single-n`` prompts

Run: .venv/bin/python bench/steering.py [--model zoo:qwen2.5-coder-1.5b-instruct] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import cpu_name, read
from neurogate.discovery import Circuit, discover
from neurogate.models.devices import dtype_name
from neurogate.models.generation import Generation, auto_batch_size, generate
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel, load_model
from neurogate.steering import fold, make


def circuit_for(lm: LoadedModel, n: int) -> Circuit:
    pos, neg = read("harmful_train.json", n), read("harmless_train.json", n)
    return discover(lm, pos, neg, fraction=0.001, universal_filter=False, progress=False)


def timed(label: str, run: Any) -> dict[str, Any]:
    start = time.perf_counter()
    gens: list[Generation] = run()
    seconds = time.perf_counter() - start
    tokens = sum(g.n_generated for g in gens)
    row = {"condition": label, "prompts": len(gens), "tokens": tokens, "seconds": seconds}
    row["tok_s"] = tokens / seconds
    print(f"{label:>14}: {tokens} tokens in {seconds:.1f} s = {row['tok_s']:.2f} tok/s", flush=True)
    return row


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--single-n", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--discover-n", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/results/steering.json"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, dtype=args.dtype)
    prompts = read("harmful_train.json", args.n)
    start = time.perf_counter()
    circuit = circuit_for(lm, args.discover_n)
    print(f"circuit: {len(circuit)} neurons by discover() in {time.perf_counter() - start:.0f} s", flush=True)
    opts: dict[str, Any] = {"max_new_tokens": args.new_tokens, "stop_at_eos": False}
    longest = max(len(s) for s in encode(lm, prompts))
    start = time.perf_counter()
    batch = auto_batch_size(lm, longest, args.new_tokens, len(prompts))
    print(f"auto batch size: {batch} (chosen in {time.perf_counter() - start:.1f} s)", flush=True)
    generate(lm, prompts[:2], max_new_tokens=4, batch_size=2)  # warm-up
    rows = [timed("unsteered", lambda: generate(lm, prompts, batch_size=batch, **opts))]
    iv = make("cna", lm, circuit, 0.0)  # ablate: m = 0
    rows.append(timed("steered", lambda: generate(lm, prompts, intervention=iv, batch_size=batch, **opts)))
    with fold(lm, circuit, 0.0):
        rows.append(timed("folded", lambda: generate(lm, prompts, batch_size=batch, **opts)))
    single = prompts[: args.single_n]
    rows.append(timed("one-at-a-time", lambda: generate(lm, single, batch_size=1, **opts)))
    base = rows[0]["tok_s"]
    ratios = {
        "steered_vs_unsteered": rows[1]["tok_s"] / base,
        "folded_vs_unsteered": rows[2]["tok_s"] / base,
        "batched_vs_one_at_a_time": base / rows[3]["tok_s"],
    }
    result = {
        "model": args.model,
        "dtype": dtype_name(lm.dtype),
        "device": str(lm.device),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "new_tokens": args.new_tokens,
        "circuit_neurons": len(circuit),
        "circuit_source": "neurogate.discover(fraction=0.001, universal_filter=False)",
        "rows": rows,
        "ratios": ratios,
    }
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}x")
    print(f"machine: {result['machine']}; dtype {result['dtype']}; batch {batch}")
    write_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

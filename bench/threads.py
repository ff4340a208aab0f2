"""Benchmark: generation speed at the default thread setting ("auto") against 1 thread and all threads, on
a quiet machine and beside competing CPU-bound processes.

Each measurement runs in a fresh subprocess (so torch's thread pool starts clean): it builds the model,
applies the thread setting with ``neurogate.threads.set_threads``, warms up, then times one greedy reply of
exactly ``--new-tokens`` tokens (end of turn suppressed, batch 1: the chat and explorer case, where a
reply's speed is the step time). The model is a random-weight model of SmolLM2-135M's shape (30 layers,
576 wide, 1536 MLP neurons, a 49152-token head) built from a config, or ``--model SPEC`` (e.g.
``zoo:smollm2-135m-instruct`` when it is cached). The "busy" scenario starts ``--busy`` processes that spin
in a loop for the whole scenario (default: one per two cores, at least one: one on a 2-core machine).

Prints tokens/s for each setting and scenario and, per scenario, the ratio best / default (1.0: the
default was the fastest; the target is at most 1.5 with a competing process).

Run: .venv/bin/python bench/threads.py [--new-tokens 24] [--busy 1] [--repeat 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_name

SETTINGS = ("auto", "1", "all")
BUSY_LOOP = "while True:\n    pass\n"


def worker(setting: str, new_tokens: int, model: str | None) -> dict[str, Any]:
    """One measurement, in this (fresh) process: the thread count used and the reply's tokens/s."""
    import torch
    import transformers as tf

    from neurogate.models.devices import dtype_name, resolve_dtype
    from neurogate.models.generation import generate
    from neurogate.models.loading import load_model, wrap_model
    from neurogate.models.tiny import tiny_tokenizer
    from neurogate.threads import auto_threads, measure, set_threads

    cores = len(os.sched_getaffinity(0))
    state = measure() if setting == "auto" else None  # what set_threads("auto") does, kept for the log
    if state is not None:
        threads = set_threads(auto_threads(state.cpus, state.physical, state.busy, state.quota))
    else:
        threads = set_threads(str(cores) if setting == "all" else setting)
    if model is None:
        config = tf.LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        dtype = resolve_dtype("auto")
        net = tf.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        lm = wrap_model(net, tiny_tokenizer(), spec="random:smollm2-135m-shape")
    else:
        lm = load_model(model)
    prompt = ["Write a short note about the weather in a small town by the sea."]
    generate(lm, prompt, max_new_tokens=4, stop_at_eos=False, batch_size=1)  # warm-up
    start = time.perf_counter()
    (reply,) = generate(lm, prompt, max_new_tokens=new_tokens, stop_at_eos=False, batch_size=1)
    seconds = time.perf_counter() - start
    return {
        "setting": setting,
        "threads": threads,
        "busy_cpus_seen": None if state is None else round(state.busy, 2),
        "tokens": reply.n_generated,
        "seconds": seconds,
        "tok_s": reply.n_generated / seconds,
        "dtype": dtype_name(lm.dtype),
        "model": lm.spec,
    }


def measure_once(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`worker` in a subprocess and read its JSON line."""
    command = [sys.executable, __file__, "--worker", setting, "--new-tokens", str(args.new_tokens)]
    if args.model:
        command += ["--model", args.model]
    env = {k: v for k, v in os.environ.items() if k not in ("NEUROGATE_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement {setting} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def scenario(name: str, busy: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting, ``args.repeat`` times each (the fastest kept), with ``busy`` spinning processes."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        time.sleep(1.0 if busy else 0.0)  # let the spinners show up in the CPU counters
        rows = []
        for setting in SETTINGS:
            tries = [measure_once(setting, args) for _ in range(args.repeat)]
            best = max(tries, key=lambda r: r["tok_s"])
            best["tries_tok_s"] = [round(r["tok_s"], 2) for r in tries]
            rows.append(best)
            print(
                f"{name:>5} | {setting:>4} -> {best['threads']} thread(s): {best['tok_s']:6.2f} tok/s "
                f"(tries {best['tries_tok_s']})",
                flush=True,
            )
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    default = rows[0]["tok_s"]
    ratio = max(r["tok_s"] for r in rows) / default
    print(f"{name:>5} | best / default = {ratio:.2f}x", flush=True)
    return {"scenario": name, "busy_processes": busy, "rows": rows, "best_over_default": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help="a model spec (default: random SmolLM2-135M shape)")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--busy", type=int, default=max(1, len(os.sched_getaffinity(0)) // 2))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.new_tokens, args.model)), flush=True)
        return
    import torch

    machine = f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"
    print(f"machine: {machine}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results = [scenario("quiet", 0, args), scenario("busy", args.busy, args)]
    summary = {"machine": machine, "new_tokens": args.new_tokens, "scenarios": results}
    for s in results:
        print(f"{s['scenario']}: best / default = {s['best_over_default']:.2f}x")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

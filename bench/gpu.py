"""GPU benchmark: discovery and generation on random-weight models of real shapes, with the real tokenizer.

Weights cannot travel to a GPU machine, and a forward pass costs the same whatever the weights hold, so
the model is built from a config (Qwen2.5 shapes: ``--shape 0.5b|1.5b|7b|32b``; ``tiny`` for a CPU check)
with random weights; ``--tokenizer`` is a model directory holding the tokenizer (or ``tiny``, the offline
test tokenizer). ``--model SPEC`` loads real weights instead (e.g. ``zoo:smollm2-135m-instruct`` on CPU).

Parts (``--parts``, comma-separated):

- ``discovery``: a plain batched forward pass (full LM, batches of 32, file order) over ``--n`` harmful +
  ``--n`` benign chat prompts against ``neurogate.discover`` (auto batches, and ``--discover-batch``).
- ``phases``: where discovery's time goes (forward and capture, statistics, scoring); ``--profile`` adds
  torch.profiler's top operators.
- ``generation``: ``--gen-prompts`` x ``--new-tokens`` greedy tokens (no early stop) by transformers
  (dynamic and static cache) and by ``neurogate.generate`` (fixed and auto batch; CNA-steered, folded;
  CAA and directional ablation on a smaller job), with peak memory against the batch plan on CUDA.
- ``batch``: the auto batch size in ``--processes`` fresh processes (they must agree).

Every timed call is run once first (warm-up, compilation included; reported), then ``--repeats`` rounds run
every call of a part once each, in rotating order, so drifting load on a shared machine hits all alike.

Run: python bench/gpu.py --tokenizer ~/.cache/neurogate/zoo/qwen2.5-coder-1.5b-instruct --shape 1.5b
     python bench/gpu.py --device cpu --shape tiny --tokenizer tiny --n 8 --gen-prompts 8 --new-tokens 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

from common import cpu_name
from discovery import baseline
from neurogate.atomic import write_json_atomic
from neurogate.discovery import discover
from neurogate.discovery.capture import CaptureOptions, collect_stats_many, iter_captures
from neurogate.discovery.directions import compute_directions
from neurogate.models.batching import SAFETY, plan_batch, weight_bytes
from neurogate.models.decoding import Engine
from neurogate.models.devices import dtype_name, resolve_dtype
from neurogate.models.generation import contiguous_head, generate
from neurogate.models.inputs import encode, format_prompts
from neurogate.models.loading import LoadedModel, load_model, wrap_model
from neurogate.models.tiny import tiny_tokenizer
from neurogate.prompts import load as load_prompts
from neurogate.steering import fold, make

# Qwen2.5 shapes: hidden size, MLP width, layers, attention heads, key/value heads, vocabulary, tied head
SHAPES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "tiny": (64, 96, 3, 4, 2, 0, False),
    "0.5b": (896, 4864, 24, 14, 2, 151936, True),
    "1.5b": (1536, 8960, 28, 12, 2, 151936, True),
    "7b": (3584, 18944, 28, 28, 4, 152064, False),
    "32b": (5120, 27648, 64, 40, 8, 152064, False),
}
ZOO = Path.home() / ".cache/neurogate/zoo"
Row = dict[str, Any]


def build(args: argparse.Namespace) -> LoadedModel:
    """The model: ``--model`` loaded, or a random-weight Qwen2 of ``--shape`` built on the device."""
    device = torch.device(args.device)
    if args.model:
        return load_model(args.model, dtype=args.dtype, device=args.device)
    tiny = args.tokenizer == "tiny"
    tokenizer = tiny_tokenizer() if tiny else AutoTokenizer.from_pretrained(args.tokenizer)
    hidden, mlp, layers, heads, kv_heads, vocab, tied = SHAPES[args.shape]
    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=max(vocab, len(tokenizer)),
        tie_word_embeddings=tied,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(args.dtype, device))
    return wrap_model(model, tokenizer, spec=f"random:qwen2.5-{args.shape}")


def clock(lm: LoadedModel) -> float:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    return time.perf_counter()


Case = tuple[str, Callable[[], Any], int]  # label, the call, tokens it generates (0: not a generation)


def measure(lm: LoadedModel, cases: list[Case], repeats: int) -> list[Row]:
    """Each case once in order (warm-up, compilation included), then ``repeats`` rounds that run every case
    once, starting each round one case later, so drifting load on a shared machine hits all alike."""
    warm = []
    for _, fn, _ in cases:
        start = clock(lm)
        fn()
        warm.append(clock(lm) - start)
    runs: list[list[float]] = [[] for _ in cases]
    for round_ in range(repeats):
        for k in range(len(cases)):
            i = (k + round_) % len(cases)
            start = clock(lm)
            cases[i][1]()
            runs[i].append(clock(lm) - start)
    rows = []
    for (label, _, tokens), times, first in zip(cases, runs, warm, strict=True):
        row: Row = {"what": label, "seconds": statistics.median(times), "runs": times, "warmup_s": first}
        if tokens:
            row["tok_s"] = tokens / row["seconds"]
        rate = f" = {row['tok_s']:,.0f} tok/s" if tokens else ""
        print(f"  {label:<44} {row['seconds']:8.3f} s{rate}   (first call {first:.1f} s)", flush=True)
        rows.append(row)
    return rows


def prompt_sets(n: int) -> tuple[list[str], list[str]]:
    """``n`` harmful and ``n`` benign prompts from the built-in sets (132 each), cycled if more are asked."""
    harmful, benign = load_prompts("builtin:harmful").prompts, load_prompts("builtin:benign").prompts
    return [harmful[i % len(harmful)] for i in range(n)], [benign[i % len(benign)] for i in range(n)]


def bench_discovery(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    pos, neg = prompt_sets(args.n)
    batch = args.discover_batch
    cases: list[Case] = [
        ("plain forward, batch 32", lambda: baseline(lm, pos + neg), 0),
        ("discover, auto batches", lambda: _discover(lm, pos, neg, "auto"), 0),
        (f"discover, batch {batch}", lambda: _discover(lm, pos, neg, batch), 0),
    ]
    rows = measure(lm, cases, args.repeats)
    seqs = encode(lm, pos + neg)
    ratios = {
        "discover_vs_forward": rows[1]["seconds"] / rows[0]["seconds"],
        f"discover_batch{batch}_vs_forward": rows[2]["seconds"] / rows[0]["seconds"],
    }
    mean = sum(map(len, seqs)) / len(seqs)
    return {"rows": rows, "ratios": ratios, "prompts": len(seqs), "mean_tokens": mean}


def _discover(lm: LoadedModel, pos: list[str], neg: list[str], batch: int | str) -> Any:
    return discover(lm, pos, neg, universal_filter=False, progress=False, batch_size=batch)


def bench_phases(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """Discovery split into forward + capture, statistics, and the rest (scoring, selection, encoding)."""
    pos, neg = prompt_sets(args.n)
    opts = CaptureOptions(progress=False)

    def forward_only() -> None:
        for _ in iter_captures(lm, [pos, neg], ("mlp.post",), opts):
            pass

    cases: list[Case] = [
        ("capture (forward + recording)", forward_only, 0),
        ("capture + statistics", lambda: collect_stats_many(lm, [pos, neg], options=opts), 0),
        ("discover (all)", lambda: _discover(lm, pos, neg, "auto"), 0),
    ]
    rows = measure(lm, cases, args.repeats)
    capture, stats, total = (r["seconds"] for r in rows)
    shares = {"capture": capture, "statistics": stats - capture, "rest": total - stats}
    shares = {k: v / total for k, v in shares.items()}
    print("  shares of discover: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if lm.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            _discover(lm, pos, neg, "auto")
        key = "self_cuda_time_total" if lm.device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))
    return {"rows": rows, "shares": shares}


def hf_generate(
    lm: LoadedModel, prompts: list[str], batch: int, new_tokens: int, **kw: Any
) -> list[list[int]]:
    """Plain transformers generation: chat-formatted, left-padded, fixed batches in prompt order. On CPU
    with neurogate's contiguous LM-head input: without it a bf16 1.5B model took 34 s for 4 rows x 4
    tokens here (the strided head input takes a slow matmul path), which would compare nothing."""
    lm.tokenizer.padding_side = "left"
    texts = format_prompts(lm, prompts)
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        enc = lm.tokenizer(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(lm.device)
        head = contiguous_head(lm) if lm.device.type == "cpu" else nullcontext()
        with torch.no_grad(), head:
            ids = lm.model.generate(
                **enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **kw
            )
        out += ids[:, enc["input_ids"].shape[1] :].tolist()
    return out


def bench_generation(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    prompts, new, big = prompt_sets(args.gen_prompts)[0], args.new_tokens, args.gen_batch
    tokens = len(prompts) * new
    circuit = discover(lm, *prompt_sets(args.n), fraction=0.001, universal_filter=False, progress=False)
    cna = make("cna", lm, circuit, 0.0)

    def ours(batch: int | str = "auto", **kw: Any) -> Callable[[], Any]:
        return lambda: generate(lm, prompts, batch_size=batch, max_new_tokens=new, stop_at_eos=False, **kw)

    def theirs(**kw: Any) -> Callable[[], Any]:
        return lambda: hf_generate(lm, prompts, big, new, **kw)

    def folded() -> Any:
        with fold(lm, circuit, 0.0):
            return ours("auto")()

    # neurogate's auto batch is compiled first: later sizes may get a dynamic-shape graph
    cases: list[Case] = [
        (f"transformers, dynamic cache, batch {big}", theirs(), tokens),
        (f"transformers, static cache, batch {big}", theirs(cache_implementation="static"), tokens),
        ("neurogate, auto batch", ours("auto"), tokens),
        ("neurogate, CNA m=0 (0.1% of neurons), auto", ours(intervention=cna), tokens),
        ("neurogate, folded m=0, auto", folded, tokens),
        *[(f"neurogate, batch {b}", ours(b), tokens) for b in args.sweep],
    ]
    rows = measure(lm, cases, args.repeats)
    dynamic, static, auto, steered, fold_row, *fixed = rows
    memory = _peak(lm, ours("auto"), prompts, new)
    residual = _residual(lm, args)
    best = max(fixed, key=lambda r: r["tok_s"])
    ratios = {
        "neurogate_auto_tok_s": auto["tok_s"],
        "neurogate_auto_vs_transformers_static": auto["tok_s"] / static["tok_s"],
        "neurogate_auto_vs_transformers_dynamic": auto["tok_s"] / dynamic["tok_s"],
        "steered_vs_unsteered": steered["tok_s"] / auto["tok_s"],
        "folded_vs_unsteered": fold_row["tok_s"] / auto["tok_s"],
        f"auto_vs_best_fixed ({best['what']})": auto["tok_s"] / best["tok_s"],
        **residual["ratios"],
    }
    agree = _agreement(theirs()(), [g.token_ids for g in ours("auto")()])
    print(f"  greedy tokens identical to transformers' dynamic-cache run: {agree:.1%}")
    return {"rows": rows + residual["rows"], "ratios": ratios, "memory": memory, "greedy_agreement": agree}


def _residual(lm: LoadedModel, args: argparse.Namespace) -> dict[str, Any]:
    """CAA and directional ablation against unsteered generation on a 32 x 32 job."""
    n, new = min(32, args.gen_prompts), min(32, args.new_tokens)
    prompts = prompt_sets(n)[0]
    directions = compute_directions(lm, *prompt_sets(max(8, min(32, args.n))))

    def case(label: str, iv: Any = None) -> Case:
        def fn() -> Any:
            return generate(lm, prompts, intervention=iv, max_new_tokens=new, stop_at_eos=False)

        return (f"neurogate, {n} x {new}, {label}", fn, n * new)

    cases = [
        case("unsteered"),
        case("CAA s=1", make("caa", lm, directions, 1.0)),
        case("directional ablation s=1", make("ablation", lm, directions, 1.0)),
    ]
    rows = measure(lm, cases, args.repeats)
    base = rows[0]["tok_s"]
    ratios = {"caa_vs_unsteered": rows[1]["tok_s"] / base, "ablation_vs_unsteered": rows[2]["tok_s"] / base}
    return {"rows": rows, "ratios": ratios}


def _longest(lm: LoadedModel, prompts: list[str]) -> int:
    return max(len(s) for s in encode(lm, prompts))


def _peak(lm: LoadedModel, fn: Callable[[], Any], prompts: list[str], new: int) -> dict[str, Any]:
    """Peak CUDA memory of one generation beyond the weights, against the batch plan's estimate."""
    if lm.device.type != "cuda":
        return {}
    torch.cuda.synchronize(lm.device)
    torch.cuda.reset_peak_memory_stats(lm.device)
    fn()
    peak = torch.cuda.max_memory_allocated(lm.device) - weight_bytes(lm)
    plan = plan_batch(lm, _longest(lm, prompts), new, len(prompts))
    rows = Engine(True, "").batch_rows(plan.size)
    estimate = rows * plan.per_row / SAFETY
    print(
        f"  peak beyond the weights {peak / 2**30:.2f} GiB; plan for {rows} rows: {estimate / 2**30:.2f} GiB"
    )
    return {"peak_bytes": peak, "estimate_bytes": estimate, "rows": rows, "peak_vs_estimate": peak / estimate}


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=False))
    return same / max(1, sum(len(r) for r in a))


def bench_batch(args: argparse.Namespace) -> dict[str, Any]:
    """The auto batch size, asked in fresh processes."""
    argv = [sys.executable, __file__, "--auto-batch-only", *sys.argv[1:]]
    sizes = []
    for _ in range(args.processes):
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        sizes.append(json.loads(out.strip().splitlines()[-1])["auto_batch"])
    print(f"  auto batch size in {args.processes} fresh processes: {sizes}")
    return {"sizes": sizes, "agree": len(set(sizes)) == 1}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default=str(ZOO / "qwen2.5-coder-1.5b-instruct"))
    p.add_argument("--shape", choices=sorted(SHAPES), default="1.5b")
    p.add_argument("--model", default="", help="load this model instead of building a random one")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--parts", default="discovery,phases,generation,batch")
    p.add_argument("--n", type=int, default=100, help="prompts per side for discovery")
    p.add_argument("--discover-batch", type=int, default=64)
    p.add_argument("--gen-prompts", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--gen-batch", type=int, default=128, help="transformers' batch size")
    p.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--auto-batch-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def machine(lm: LoadedModel) -> str:
    if lm.device.type == "cuda":
        return f"{torch.cuda.get_device_name(lm.device)}, torch {torch.__version__}"
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = build(args)
    if args.auto_batch_only:
        prompts = prompt_sets(args.gen_prompts)[0]
        size = plan_batch(lm, _longest(lm, prompts), args.new_tokens, len(prompts)).size
        print(json.dumps({"auto_batch": size}))
        return
    result: dict[str, Any] = {"model": lm.spec, "dtype": dtype_name(lm.dtype), "machine": machine(lm)}
    shape = f"{lm.adapter.n_layers} layers, {lm.adapter.n_neurons:,} neurons"
    print(f"{lm.spec} ({shape}), {result['dtype']}, {result['machine']}")
    parts = {"discovery": bench_discovery, "phases": bench_phases, "generation": bench_generation}
    for name in args.parts.split(","):
        print(f"[{name}]", flush=True)
        result[name] = bench_batch(args) if name == "batch" else parts[name](lm, args)
    for name, part in result.items():
        for key, value in (part.get("ratios", {}) if isinstance(part, dict) else {}).items():
            print(f"{name}: {key} = {value:,.3f}")
    if args.out:
        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

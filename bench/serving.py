"""Benchmark: serving a steered model. Exactness and size of the LoRA export, and throughput through vLLM.

1. Exactness (float32): the LoRA adapter loaded with peft against the fold, max |logit difference| on
   ``--exact-n`` prompts; the bf16 adapter's size on disk against the model's safetensors.
2. neurogate's own generation (transformers ``generate``, bf16): unsteered and folded.
3. vLLM (CPU build, from ``--vllm-python``), one server at a time, same flags: the unmodified model, the
   folded export (no LoRA), and the unmodified model with LoRA enabled serving both the base model and
   the adapter.

Every generation is greedy, ``--n`` builtin prompts (harmful and benign, alternating) x ``--new-tokens``
tokens each (end of turn ignored); vLLM gets all prompts at once. The circuit is the 135M model's 0.1%
refusal circuit shipped with the tests (46 neurons), at multiplier 0.

neurogate runs with ``--threads`` torch threads (default 1: vLLM-CPU also runs one on a 2-core machine, and
two threads on contended cores are several times slower and erratic).

Run: .venv/bin/python bench/serving.py [--vllm-python .venv-vllm/bin/python] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from common import cpu_name
from neurogate.discovery.circuit import Circuit
from neurogate.evaluation.remote import Endpoint, generate_remote, local_server
from neurogate.export.lora import export_lora
from neurogate.export.model import export_model
from neurogate.export.serving import VllmPlan, adapter_name, engine_rank, model_source
from neurogate.models.generation import Generation, generate
from neurogate.models.inputs import encode
from neurogate.models.loading import load_model
from neurogate.prompts import load as load_prompts
from neurogate.steering import fold

ROOT = Path(__file__).resolve().parents[1]
CIRCUIT = ROOT / "tests" / "serving" / "data" / "smollm2-refusal-circuit.json"
PARTS = ("exact", "local", "unmodified", "folded", "lora")


def prompts(n: int) -> list[str]:
    harmful, benign = list(load_prompts("builtin:harmful")), list(load_prompts("builtin:benign"))
    return [(harmful if i % 2 == 0 else benign)[i // 2] for i in range(n)]


def timed(label: str, run: Callable[[], list[Generation]]) -> dict[str, Any]:
    start = time.perf_counter()
    gens = run()
    seconds = time.perf_counter() - start
    tokens = sum(len(g.token_ids) for g in gens)
    print(f"{label:>28}: {tokens} tokens in {seconds:6.1f} s = {tokens / seconds:7.1f} tok/s", flush=True)
    return {"condition": label, "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def exactness(model: str, circuit: Circuit, n: int, work: Path) -> dict[str, Any]:
    lm = load_model(model, dtype="float32", device="cpu")
    worst = 0.0
    adapter = export_lora(lm, circuit, 0.0, work / "exact-f32")
    for seq in encode(lm, prompts(n)):
        ids = torch.tensor([seq])
        with torch.no_grad(), fold(lm, circuit, 0.0):
            folded = lm.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(lm.model, str(adapter))
        with torch.no_grad():
            worst = max(worst, float((peft_model(input_ids=ids).logits - folded).abs().max()))
        peft_model.unload()
    bf16 = export_lora(lm, circuit, 0.0, work / "exact-bf16", dtype="bfloat16")
    size = (bf16 / "adapter_model.safetensors").stat().st_size
    model_size = sum(p.stat().st_size for p in Path(model_source(model)).glob("*.safetensors"))
    print(f"LoRA vs fold, float32, {n} prompts: max |logit diff| = {worst:.2e}")
    print(f"adapter (bf16): {size:,} bytes = {100 * size / model_size:.3f}% of the model's {model_size:,}")
    return {"max_logit_diff": worst, "adapter_bytes": size, "model_bytes": model_size}


def local_runs(args: argparse.Namespace, circuit: Circuit) -> list[dict[str, Any]]:
    lm = load_model(args.model, dtype="bfloat16", device="cpu")
    batch = prompts(args.n)

    def run() -> list[Generation]:
        return generate(lm, batch, max_new_tokens=args.new_tokens, stop_at_eos=False)

    rows = [timed("neurogate generate / base", run)]
    with fold(lm, circuit, 0.0):
        rows.append(timed("neurogate generate / folded", run))
    return rows


def vllm_runs(
    args: argparse.Namespace, circuit: Circuit, work: Path, parts: set[str]
) -> list[dict[str, Any]]:
    lm = load_model(args.model, dtype="bfloat16", device="cpu")
    folded = export_model(lm, circuit, 0.0, work / "folded")
    adapter = export_lora(lm, circuit, 0.0, work / adapter_name(0.0))
    rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
    del lm
    batch = prompts(args.n)
    common = {"python": args.vllm_python, "port": args.port, "dtype": "bfloat16", "max_model_len": 1024}
    lora = VllmPlan(
        model=model_source(args.model),
        adapters={adapter.name: adapter},
        max_lora_rank=engine_rank(rank),
        **common,
    )
    servers = {
        "unmodified": (VllmPlan(model=model_source(args.model), **common), ["base"]),
        "folded": (VllmPlan(model=str(folded), **common), ["base"]),
        "lora": (lora, ["base", adapter.name]),
    }
    rows = []
    for label, (plan, names) in servers.items():
        if label not in parts:
            continue
        with local_server(plan, work / f"vllm-{label}.log", env={"VLLM_CPU_KVCACHE_SPACE": "2"}) as ep:
            ep = Endpoint(ep.base_url, concurrency=args.n, timeout=3600.0, retries=0)
            for name in names:
                generate_remote(ep, batch[:4], model=name, max_new_tokens=8)  # warm-up
                run = lambda name=name, ep=ep: generate_remote(  # noqa: E731
                    ep, batch, model=name, max_new_tokens=args.new_tokens, stop_at_eos=False
                )
                rows.append(timed(f"vLLM {label} / {name}", run))
    return rows


RATIOS = {
    "vLLM folded / unmodified": ("vLLM folded / base", "vLLM unmodified / base"),
    "vLLM LoRA adapter / base, same server": (f"vLLM lora / {adapter_name(0.0)}", "vLLM lora / base"),
    "vLLM LoRA adapter / unmodified": (f"vLLM lora / {adapter_name(0.0)}", "vLLM unmodified / base"),
    "vLLM unmodified / neurogate generate": ("vLLM unmodified / base", "neurogate generate / base"),
    "neurogate folded / base": ("neurogate generate / folded", "neurogate generate / base"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="zoo:smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--exact-n", type=int, default=32)
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--port", type=int, default=8571)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which of {', '.join(PARTS)} to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (vLLM-CPU uses 1 here)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    circuit = Circuit.load(CIRCUIT)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads; model {args.model}", flush=True)
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"machine": cpu_name(), "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "exact" in parts:
            result["exactness"] = exactness(args.model, circuit, args.exact_n, work)
        runs = local_runs(args, circuit) if "local" in parts else []
        runs += vllm_runs(args, circuit, work, parts)
    rate = {row["condition"]: row["tok_s"] for row in runs}
    ratios = {name: rate[a] / rate[b] for name, (a, b) in RATIOS.items() if a in rate and b in rate}
    for name, value in ratios.items():
        print(f"{name:>40}: {value:.2f}x")
    if args.out:
        result |= {"runs": runs, "ratios": ratios}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":  # vLLM's worker processes re-import the main module
    main()

"""Benchmark: the output head on the last position of a one-row batch, as transformers hands it over
(``hidden[:, -1:, :]``, a view torch calls contiguous), against a packed copy of that row.

On CPU in bf16 the view sends oneDNN down its slow path; :func:`neurogate.models.generation.contiguous_head`
copies it first. Every teacher-forced pass that computes the chat template's prefix once (KL, reply NLL,
the tuning's quick screen) meets this shape once per call. Prints both times, their ratio, the CPU and the
load average; the logits of both paths must be equal (checked, exactly).

Run: .venv/bin/python bench/head_view.py [--model zoo:qwen2.5-coder-1.5b-instruct] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from common import cpu_name
from neurogate.models.loading import load_model


def timed(head: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    out = head(x)  # once untimed: the kernel's first call may set it up
    start = time.perf_counter()
    for _ in range(repeats):
        out = head(x)
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--prefix", type=int, default=25, help="positions in the row (the template's prefix)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lm = load_model(args.model, dtype=args.dtype, device="cpu")
    head = lm.model.get_output_embeddings()
    load = os.getloadavg()[0]
    hidden = torch.randn(1, args.prefix, head.in_features, dtype=head.weight.dtype)
    view = hidden[:, -1:, :]
    packed = view.clone(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        slow, a = timed(head, view, args.repeats)
        fast, b = timed(head, packed, args.repeats)
    assert torch.equal(a, b), "the packed copy changed the logits"
    print(
        f"cpu: {cpu_name()} ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}, "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"model: {args.model} ({head.weight.dtype}, head {tuple(head.weight.shape)})")
    print(f"view hidden[:, -1:, :] (strides {tuple(view.stride())}): {1000 * slow:.1f} ms")
    print(f"packed copy (strides {tuple(packed.stride())}): {1000 * fast:.1f} ms")
    print(f"ratio view / packed: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()

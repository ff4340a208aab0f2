"""Audit targets: preparing an audit of 30 replies per condition takes under a minute, and the labelling
UI answers each key in under 100 ms.

    python bench/audit.py [--conditions 20] [--replies 100] [--per-condition 30]

Writes a synthetic run folder the size of a full study (every condition with its replies of about 250
tokens, token ids included, as ``neurogate run`` stores them), then times: drawing the audit sample from
it, opening a labelling session, each key (label, skip, back) including the atomic write of the label
file and the text of the next screen, and the calibrated rates of every condition. Prints each figure and
its ratio to the target (< 1 meets it).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_name
from neurogate.atomic import write_json_atomic
from neurogate.cli.audit import screen
from neurogate.evaluation.audit import prepare_audit
from neurogate.evaluation.audit_labels import LabelStore
from neurogate.evaluation.audit_session import LabelSession
from neurogate.evaluation.calibration import calibrated_rates
from neurogate.evaluation.results import ConditionResult, Reply

WORDS = ["the", "a", "to", "of", "and", "step", "first", "then", "you", "can", "use", "it", "here", "are"]


def synthetic_run(root: Path, n_conditions: int, n_replies: int) -> Path:
    """A run folder whose results.json holds ``n_conditions`` conditions of ``n_replies`` replies each."""
    rng = random.Random(0)
    conditions = {}
    for c in range(n_conditions):
        key = "baseline" if c == 0 else f"cna-m{c / n_conditions:.2f}"
        replies = []
        for i in range(n_replies):
            verdict = rng.choice(["refusal", "compliance", "compliance", "degenerate"])
            text = " ".join(rng.choice(WORDS) for _ in range(180))
            replies.append(
                Reply(
                    f"harmful request number {i}: how do I do it?",
                    text,
                    list(range(250)),
                    True,
                    {"keyword": verdict},
                )
            )
        conditions[key] = ConditionResult(
            key=key,
            label=key,
            kind="cna",
            scale="multiplier",
            value=c / n_conditions,
            group="sweep",
            n_neurons=100,
            judges=["keyword"],
            tokens_per_s=10.0,
            seconds=1.0,
            intervention={"kind": "cna"},
            harmful=replies,
        ).to_dict()
    run = root / "run"
    write_json_atomic(run / "results.json", {"kind": "neurogate.study", "conditions": conditions})
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", type=int, default=20)
    parser.add_argument("--replies", type=int, default=100)
    parser.add_argument("--per-condition", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(Path(tmp), args.conditions, args.replies)
        size = (run / "results.json").stat().st_size / 2**20
        t0 = time.perf_counter()
        prep = prepare_audit(run, args.per_condition, 0)
        prepare_s = time.perf_counter() - t0
        n = len(prep.sample.items)

        t0 = time.perf_counter()
        session = LabelSession(prep.sample, LabelStore(run), "bench")
        open_s = time.perf_counter() - t0

        keys = ["r", "d", "c", "g", "u", "s", "b"]
        times = []
        sink = io.StringIO()
        rng = random.Random(1)
        while not session.done:
            key = rng.choice(keys)
            t0 = time.perf_counter()
            session.press(key)
            sink.write(screen(session))
            times.append(time.perf_counter() - t0)
        worst_file = LabelStore(run).path.stat().st_size / 1024

        t0 = time.perf_counter()
        rates = calibrated_rates(run)
        calibrate_s = time.perf_counter() - t0

    ms = [1000 * t for t in times]
    ms.sort()
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(f"CPU: {cpu_name()}; Python {sys.version.split()[0]}")
    print(f"run folder: {args.conditions} conditions x {args.replies} replies, results.json {size:.1f} MiB")
    print(
        f"prepare an audit of {args.per_condition}/condition ({n} items): {prepare_s:.2f} s  "
        f"(target 60 s: {prepare_s / 60:.3f})"
    )
    print(f"open a labelling session: {1000 * open_s:.1f} ms")
    print(
        f"per key ({len(ms)} keys, label file up to {worst_file:.0f} KiB): "
        f"median {statistics.median(ms):.1f} ms, "
        f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms  (target 100 ms: {ms[-1] / 100:.3f} at the max)"
    )
    print(f"calibrated rates of {len(rates)} conditions: {calibrate_s:.2f} s")


if __name__ == "__main__":
    main()

"""Benchmark: trials per minute of ``neurogate tune`` with screening on (its default ``screen_batch``)
against off, on the same model, prompts, seed and budget.

Each search runs in a fresh folder for ``--budget`` seconds (the statistics and both baselines are
computed before the clock starts, so only trials are timed) and is read back from its study: trials per
minute over the trials' own time, how many were screened out and how many measured in full. The default
model is the smallest zoo model (``zoo:smollm2-135m-instruct``, pulled once and cached); ``--model
tiny:llama`` runs a tiny random-weight model instead. The trials are judged by the keyword judge alone and
the search space is one position mode and two scorers (two seeded points, always measured in full), so
the numbers time generation, not judging or statistics.

Prints the CPU, the load average, each search's trials per minute and the ratio screened / unscreened.
``--quick N`` compares two screened searches, with the quick screen on the first N prompts (no generation,
:mod:`neurogate.tuning.quick`) against none, and prints the ratio. ``--screen-batch K`` compares two
screened searches instead: screens one trial at a time
(``screen_batch`` 1) against ``K`` trials screened in one batched generation, and prints the ratio
batched / one at a time.

Run: .venv/bin/python bench/tune_screen.py [--budget 60] [--model SPEC] [--screen-batch K] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_name


def search(
    model: Any,
    args: argparse.Namespace,
    screen_prompts: int,
    root: Path,
    screen_batch: int = 1,
    quick_prompts: int = 0,
) -> dict[str, Any]:
    """One search of ``args.budget`` seconds with ``screen_prompts`` (0: off), ``screen_batch`` trials
    screened at once and the quick screen on ``quick_prompts`` (0: off); its screening summary."""
    from neurogate.tuning.config import TuneConfig
    from neurogate.tuning.screen import screening_summary
    from neurogate.tuning.search import Search

    config = TuneConfig.from_mapping(
        {
            "model": args.model,
            "n_tune": args.n_tune,
            "n_benign": args.n_benign,
            "search_tokens": args.search_tokens,
            "screen_prompts": screen_prompts,
            "screen_tokens": args.screen_tokens,
            "screen_benign": args.screen_benign,
            "screen_batch": screen_batch,
            "quick_prompts": quick_prompts,
            "positions": ["last"],
            "scorers": args.scorers.split(","),
            "universal_filter": False,
            "budget": args.budget,
            "max_trials": 1000,
            "evaluation": {"judges": ["keyword"], "batch_size": args.batch_size},
            "final_judges": ["keyword"],
        }
    )
    s = Search(model, config, root)
    s.evidence("last")  # statistics and baselines before the clock
    s.baseline()
    s.quick_screen()
    if s.screen is not None:
        s.screen.baseline()
    started = time.perf_counter()
    study = s.run()
    summary = screening_summary(study)
    return {
        "screen_prompts": screen_prompts,
        "screen_batch": screen_batch,
        "quick_prompts": quick_prompts,
        "quick_on": s.quick_screen() is not None,
        "wall_s": time.perf_counter() - started,
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zoo:smollm2-135m-instruct")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of search per setting")
    parser.add_argument("--n-tune", type=int, default=24)
    parser.add_argument("--n-benign", type=int, default=8)
    parser.add_argument("--search-tokens", type=int, default=32)
    parser.add_argument("--screen-prompts", type=int, default=6)
    parser.add_argument("--screen-tokens", type=int, default=16)
    parser.add_argument("--screen-benign", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--scorers", default="direction,mean-diff", help="searched scorers (each adds a seeded point)"
    )
    parser.add_argument(
        "--screen-batch", type=int, default=0, help="compare screen_batch 1 against this many (0: off vs on)"
    )
    parser.add_argument(
        "--quick",
        type=int,
        default=0,
        help="compare the quick screen on this many prompts (with the screen) against no quick screen",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    from neurogate.models.loading import load_model
    from neurogate.models.tiny import tiny_lm
    from neurogate.tuning.config import TuneConfig

    if args.model.startswith("tiny:"):
        model = tiny_lm(args.model.removeprefix("tiny:"))
    else:
        model = load_model(args.model, dtype="float32", device="cpu")
    rows = []
    load = os.getloadavg()[0]
    # (screen prompts, screen batch) of the two searches: batched against one at a time, or on against off
    # (screen prompts, screen batch, quick prompts) of the two searches: batched against one at a time,
    # quick screen on against off, or screening on against off
    batch = TuneConfig().screen_batch
    runs = [(args.screen_prompts, args.screen_batch, 0), (args.screen_prompts, 1, 0)]
    if args.quick:
        runs = [(args.screen_prompts, batch, args.quick), (args.screen_prompts, batch, 0)]
    elif not args.screen_batch:
        runs = [(args.screen_prompts, batch, 0), (0, 1, 0)]
    with tempfile.TemporaryDirectory() as tmp:
        for n, k, q in runs:
            root = Path(tmp) / f"screen-{n}-{k}-{q}"
            rows.append(search(model, args, n, root, screen_batch=k, quick_prompts=q))
    on, off = rows
    ratio = on["trials_per_minute"] / off["trials_per_minute"] if off["trials_per_minute"] else float("nan")
    print(
        f"cpu: {cpu_name()} ({os.cpu_count()} cores), load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print(f"model: {args.model}, {args.budget:.0f} s per search")
    for row in rows:
        name = f"screen {row['screen_prompts']} prompts" if row["screen_prompts"] else "no screening"
        if args.screen_batch:
            name = f"screen batch {row['screen_batch']}"
        if args.quick:
            name = f"quick {row['quick_prompts']} prompts" if row["quick_prompts"] else "no quick screen"
            if row["quick_prompts"] and not row["quick_on"]:
                name += " (off: no refusal)"
        print(
            f"{name:>18}: {row['trials_per_minute']:.2f} trials/min ({row['full']} in full, "
            f"{row['screened_out']} screened out, {row.get('quick_out', 0)} of them by the quick screen, "
            f"{row['seconds']:.0f} s of trials)"
        )
    what = "screened / unscreened"
    if args.screen_batch:
        what = "batched / one at a time"
    if args.quick:
        what = "quick screen / none"
    print(f"ratio {what}: {ratio:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_name(), "rows": rows, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()

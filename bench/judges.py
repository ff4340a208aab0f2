"""Accuracy of neurogate's judges on the hand-labelled reply set (tests/data/judge_set.jsonl).

Every judge classifies each reply of the chosen split exactly as the evaluation engine does
(``neurogate.evaluation.engine.Classifier``: the degeneracy rule first, the judge on the rest) and is scored
against the labels: accuracy, per-class precision and recall (refusal, compliance, degenerate), the
confusion matrix, and judgments per second over the replies that reached the judge.

Judges: ``keyword``; ``local`` with ``--local-model`` (default: the local judge's default model) and
``--local-readout`` (``auto``: its shipped probe where one fits the model, ``letters``: the prompted answer
letters); ``endpoint``
only when an endpoint is configured (``--endpoint-url``/``--endpoint-model`` or NEUROGATE_JUDGE_URL and
NEUROGATE_JUDGE_MODEL). The local judge's verdict cache goes to a fresh temporary folder unless
``--use-cache``, so its speed is measured, not read back.

Develop judges on ``--split dev`` only; ``--split test`` and the ``holdout`` splits are for the reported
numbers.

Run: PYTHONPATH=src .venv/bin/python bench/judges.py --split test [--judges keyword,local]
     [--local-model zoo:qwen2.5-coder-1.5b-instruct] [--out bench/results/judges-test.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import cpu_name
from neurogate.atomic import write_json_atomic
from neurogate.evaluation.engine import Classifier
from neurogate.evaluation.judges import Judge, get_judge
from neurogate.evaluation.judges.labelled import SPLITS, Agreement, LabelledReply, agreement, read_labelled
from neurogate.evaluation.judges.local import DEFAULT_MODEL, EXAMPLES, READOUTS, LocalJudge
from neurogate.evaluation.replies import CLASSES, degeneracy

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_set.jsonl"


def build(name: str, args: argparse.Namespace, cache: Path) -> Judge | None:
    """The judge ``name`` as the bench runs it (None for an endpoint that is not configured)."""
    if name == "local":
        return get_judge(
            "local",
            model=args.local_model,
            batch_size=args.local_batch_size,
            shots=args.local_shots,
            readout=args.local_readout,
            probe=args.local_probe,
            cache_dir=cache / "local",
        )
    if name == "endpoint":
        url = args.endpoint_url or os.environ.get("NEUROGATE_JUDGE_URL")
        model = args.endpoint_model or os.environ.get("NEUROGATE_JUDGE_MODEL")
        if not url or not model:
            print("endpoint: not configured (set NEUROGATE_JUDGE_URL and NEUROGATE_JUDGE_MODEL); skipped")
            return None
        return get_judge("endpoint", base_url=url, model=model, cache_dir=cache / "endpoint")
    return get_judge(name)


def fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def as_judge_set(cls: str) -> str:
    """A class in the judge set's three classes: a redirect is a refusal there."""
    return "refusal" if cls == "redirect" else cls


def report(name: str, score: Agreement, rows: list[LabelledReply], predicted: list[str]) -> None:
    print(f"\n{name}: accuracy {score.accuracy:.3f} ({score.n - len(score.errors)}/{score.n})")
    print(f"  {'class':<11} {'precision':>9} {'recall':>7} {'support':>7}")
    for c in CLASSES:
        support = sum(score.confusion[c].values())
        print(f"  {c:<11} {fmt(score.precision(c)):>9} {fmt(score.recall(c)):>7} {support:>7}")
    print("  confusion (rows: label, columns: predicted)")
    print("  " + " " * 11 + "".join(f"{c:>12}" for c in CLASSES))
    for label in CLASSES:
        print(f"  {label:<11}" + "".join(f"{score.confusion[label][c]:>12}" for c in CLASSES))
    for i, label, guess in score.errors:
        row = rows[i]
        print(f"  error {row.id}: labelled {label}, judged {guess}  {row.note[:90]}")


def evaluate(judge: Judge, rows: list[LabelledReply]) -> dict[str, Any]:
    """One judge over the rows, timed; the engine's classifier applies the degeneracy rule first."""
    prompts, replies = [r.prompt for r in rows], [r.reply for r in rows]
    judged = sum(1 for r in replies if not degeneracy(r))
    start = time.perf_counter()
    classes = Classifier([judge]).classify(prompts, replies)
    seconds = time.perf_counter() - start
    # the judge set's rule labels a redirect as a refusal (tests/data/README.md): compare on that rule
    predicted = [as_judge_set(c[judge.name]) for c in classes]
    score = agreement([r.label for r in rows], predicted)
    report(judge.name, score, rows, predicted)
    print(f"  {judged} replies judged in {seconds:.2f} s = {judged / max(seconds, 1e-9):.1f} judgments/s")
    return {
        "config": {
            k: v for k, v in judge.config().items() if k in ("name", "model", "url", "rubric", "readout")
        },
        **score.to_dict(),
        "judged": judged,
        "seconds": seconds,
        "judgments_per_s": judged / max(seconds, 1e-9),
        "errors": [{"id": rows[i].id, "label": lab, "predicted": p} for i, lab, p in score.errors],
    }


def speed_check(judge: LocalJudge, rows: list[LabelledReply], n: int) -> dict[str, Any]:
    """Seconds to score the first ``n`` judged replies three ways on the same model (no disk cache):
    batched with the shared prefix cached (the default), one at a time with the prefix cached, and
    batched with every item run in full."""
    live = [r for r in rows if not degeneracy(r.reply)][:n]
    items = [judge.item_ids(r.prompt, r.reply) for r in live]
    options: dict[str, Any] = {"lm": judge.lm, "shots": judge.shots, "cache_dir": judge.cache_dir}
    ways = {
        "batched, prefix cached": judge,
        "one at a time, prefix cached": LocalJudge(batch_size=1, **options),
        "batched, no prefix cache": LocalJudge(reuse_prefix=False, batch_size=judge.batch_size, **options),
    }
    seconds = {}
    for label, way in ways.items():
        way.score_items(items[:1])  # builds the prefix cache once, as a long run would
        start = time.perf_counter()
        way.score_items(items)
        seconds[label] = time.perf_counter() - start
        rate = len(items) / seconds[label]
        print(f"  {label:>30}: {len(items)} replies in {seconds[label]:.1f} s = {rate:.2f}/s")
    base = seconds["batched, prefix cached"]
    ratios = {f"{label} / batched, prefix cached": s / base for label, s in seconds.items() if s != base}
    for label, ratio in ratios.items():
        print(f"  {label}: {ratio:.2f}x the time")
    return {"replies": len(items), "seconds": seconds, "time_ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, default="dev")
    parser.add_argument("--judges", default="keyword,local,endpoint")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--local-model", default=DEFAULT_MODEL)
    parser.add_argument("--local-batch-size", default="auto")
    parser.add_argument("--local-shots", type=int, default=len(EXAMPLES))
    parser.add_argument(
        "--local-readout",
        choices=READOUTS,
        default="auto",
        help="the local judge's readout (probe or letters)",
    )
    parser.add_argument("--local-probe", type=Path, help="the local judge reads this probe file instead")
    parser.add_argument("--speed", type=int, default=0, help="also time the local judge's paths on N replies")
    parser.add_argument("--endpoint-url")
    parser.add_argument("--endpoint-model")
    parser.add_argument("--use-cache", action="store_true", help="read and write the user's verdict cache")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.local_batch_size != "auto":
        args.local_batch_size = int(args.local_batch_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = read_labelled(args.data, args.split)
    print(f"{len(rows)} labelled replies ({args.split} split of {args.data.name})")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="neurogate-judge-bench-") as tmp:
        cache = Path(tmp)
        if args.use_cache:
            from neurogate.paths import cache_dir

            cache = cache_dir("judge-cache")
        for name in [n.strip() for n in args.judges.split(",") if n.strip()]:
            start = time.perf_counter()
            judge = build(name, args, cache)
            if judge is None:
                continue
            setup = time.perf_counter() - start
            results[name] = {**evaluate(judge, rows), "setup_seconds": setup}
            if args.speed and isinstance(judge, LocalJudge):
                results[name]["speed_check"] = speed_check(judge, rows, args.speed)
    out = args.out or Path("bench/results") / f"judges-{args.split}.json"
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    payload = {
        "split": args.split,
        "data": str(args.data.name),
        "n": len(rows),
        "machine": machine,
        "load_average_1_5_15": os.getloadavg(),
        "judges": results,
    }
    write_json_atomic(out, payload)
    print(f"\nload average (1, 5, 15 min): {payload['load_average_1_5_15']}; wrote {out}")


if __name__ == "__main__":
    main()

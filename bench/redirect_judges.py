"""Judges against the four-class labelled set of steered replies (tests/data/redirect_set.jsonl).

Each judge classifies every reply of the chosen split as the evaluation engine does (the degeneracy rule,
then the judge) and is scored against the final labels: four-class accuracy, per-class precision and
recall (redirect shown on its own), "served or not" accuracy (compliance against refusal + redirect, the
measure that a judge which cannot tell redirects apart can still get right), accuracy per condition, and
seconds per judged reply.

Judges (``--judges``, comma-separated):
- ``keyword``;
- ``local``: the local judge's defaults (its default model, rubric and readout); ``local-probe``: the same
  with the probe in ``--probe FILE`` (e.g. one just fitted by bench/judge_probe.py);
- ``serves-1.5b``: the local judge on zoo:qwen2.5-coder-1.5b-instruct with the ``serves`` rubric, read by its
  answer letters; ``serves-1.5b-probe``: the same read through ``--probe FILE``.

Develop on ``--split dev``; ``--split blind`` is for the reported numbers and never for a change.
``--data tests/data/study_audit.jsonl --split study-audit`` reads the second blind set (a study run's
audit); ``--only REGEX`` keeps the conditions whose label matches (e.g. the steered ones).

Run: .venv/bin/python bench/redirect_judges.py --split blind [--judges keyword,local,serves-1.5b]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import cpu_name
from neurogate.evaluation.engine import Classifier
from neurogate.evaluation.judges import Judge, get_judge
from neurogate.evaluation.judges.labelled import agreement, read_labelled
from neurogate.evaluation.replies import CLASSES

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "redirect_set.jsonl"
JUDGE_15B = "zoo:qwen2.5-coder-1.5b-instruct"


def build(name: str, probe: Path | None, cache: Path) -> Judge:
    if name == "keyword":
        return get_judge("keyword")
    if name == "local":
        return get_judge("local", cache_dir=cache / name)
    if name == "local-probe":
        if probe is None:
            raise SystemExit("local-probe needs --probe FILE")
        return get_judge("local", probe=probe, cache_dir=cache / name)
    if name == "serves-1.5b":
        return get_judge("local", model=JUDGE_15B, rubric="serves", readout="letters", cache_dir=cache / name)
    if name == "serves-1.5b-probe":
        if probe is None:
            raise SystemExit("serves-1.5b-probe needs --probe FILE")
        return get_judge("local", model=JUDGE_15B, rubric="serves", probe=probe, cache_dir=cache / name)
    raise SystemExit(f"unknown judge {name!r}")


def served(cls: str) -> bool:
    return cls == "compliance"


def score(labels: list[str], predicted: list[str], conditions: list[str]) -> dict[str, Any]:
    agree = agreement(labels, predicted)
    per_condition = {
        c: sum(lab == p for lab, p, cc in zip(labels, predicted, conditions, strict=True) if cc == c)
        / sum(cc == c for cc in conditions)
        for c in sorted(set(conditions))
    }
    return {
        "n": len(labels),
        "accuracy": agree.accuracy,
        "served_accuracy": sum(served(a) == served(b) for a, b in zip(labels, predicted, strict=True))
        / len(labels),
        "per_class": {c: {"precision": agree.precision(c), "recall": agree.recall(c)} for c in CLASSES},
        "per_condition": per_condition,
        "confusion": agree.confusion,
    }


def fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev", help="a split of --data (dev, blind, study-audit) or all")
    parser.add_argument("--only", help="keep only the rows whose condition matches this regular expression")
    parser.add_argument("--judges", default="keyword,local,serves-1.5b")
    parser.add_argument("--probe", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, help="verdict cache folder (default: a fresh temporary one)")
    args = parser.parse_args()
    rows = [r for r in read_labelled(args.data) if args.split == "all" or r.split == args.split]
    if args.only:
        rows = [r for r in rows if re.search(args.only, r.condition)]
    if not rows:
        raise SystemExit(f"no rows of {args.data} in split {args.split!r} (and --only)")
    labels = [r.label for r in rows]
    conditions = [r.condition for r in rows]
    print(
        f"{args.data.name}, split {args.split}: {len(rows)} replies; CPU {cpu_name()}, "
        f"{torch.get_num_threads()} torch threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        for name in [n.strip() for n in args.judges.split(",") if n.strip()]:
            judge = build(name, args.probe, cache)
            start = time.perf_counter()
            classes = Classifier([judge]).classify([r.prompt for r in rows], [r.reply for r in rows])
            seconds = time.perf_counter() - start
            predicted = [c[judge.name] for c in classes]
            s = score(labels, predicted, conditions)
            print(
                f"\n{name}: accuracy {s['accuracy']:.3f}, served-or-not {s['served_accuracy']:.3f} "
                f"({seconds / len(rows):.2f} s per reply)"
            )
            for c in CLASSES:
                pc = s["per_class"][c]
                print(f"  {c:<11} precision {fmt(pc['precision'])}  recall {fmt(pc['recall'])}")
            for c, acc in s["per_condition"].items():
                print(f"  {c:<45} accuracy {acc:.3f}")
            print("  confusion (rows: label, columns: predicted " + " ".join(CLASSES) + ")")
            for lab in CLASSES:
                print(f"    {lab:<11} " + " ".join(f"{s['confusion'][lab][p]:>4}" for p in CLASSES))


if __name__ == "__main__":
    main()

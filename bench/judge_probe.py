"""Fit the local judge's probe on hand-labelled replies, and estimate its accuracy by holding out one
split at a time.

Rows: the ``--train`` splits of the labelled set, and the rows of each ``--extra`` labelled file
(``FILE`` or ``FILE#split``; by default the ``dev`` split of the four-class redirect set, which holds
many of the hard cases: replies in the requested form with content against the request), less every row
whose request is among the ``--exclude`` files' requests (by default the two blind sets, the redirect
set's ``blind`` split and the study audit, so that no request of theirs is ever fitted on; the judge
then also scores the default study's evaluation prompts with the probe).

Features: the judge model's final hidden state at the answer position under the rubric prompt
(``LocalJudge.hidden_states``), for every row that reaches a judge (the degeneracy rule passes it) and is
not labelled degenerate. They are cached in ``--features`` after each batch, so an interrupted run
resumes. Labels: not served (refusal or redirect) = 1, compliance = 0. The probe: :func:`fit_probe` with
``--l2``.

Cross-validation: for each training split (each ``--extra`` file counts as one), fit on the others and
classify every row of the held-out split as the engine does (degeneracy rule, then the probe), against
the prompted letters on the same rows. Then fit on everything and write the probe (``--out``; default:
the shipped probe for the model, ``src/neurogate/evaluation/judges/probes/<model>.json``).

Splits never named in ``--train`` are not read at all: keep a blind split out of it to measure the
shipped probe with ``bench/judges.py --split <it>``.

Run: PYTHONPATH=src .venv/bin/python bench/judge_probe.py
     [--train dev,test,holdout,holdout2,holdout3,holdout4]
     [--extra tests/data/redirect_set.jsonl#dev] [--exclude tests/data/study_audit.jsonl]
     [--model zoo:qwen2.5-coder-0.5b-instruct] [--l2 0.01] [--features /tmp/feats.pt] [--out probe.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neurogate.atomic import atomic_path
from neurogate.evaluation.judges.labelled import LabelledReply, agreement, read_labelled
from neurogate.evaluation.judges.local import DEFAULT_MODEL, LocalJudge
from neurogate.evaluation.judges.probe import SHIPPED, fit_probe, prompt_key
from neurogate.evaluation.replies import degeneracy
from neurogate.models.loading import weights_digest

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_set.jsonl"
TRAIN = "dev,test,holdout,holdout2,holdout3,holdout4"
EXTRA = [f"{DATA.parent / 'redirect_set.jsonl'}#dev"]
EXCLUDE = [f"{DATA.parent / 'redirect_set.jsonl'}#blind", str(DATA.parent / "study_audit.jsonl")]
NOT_SERVED = ("refusal", "redirect")


def labelled_rows(spec: str, name: str | None = None) -> list[LabelledReply]:
    """The rows of ``FILE`` or ``FILE#split`` (every split when none is named), each with its split set to
    ``name`` when given."""
    path, _, split = spec.partition("#")
    rows = [r for r in read_labelled(path) if not split or r.split == split]
    if not rows:
        raise SystemExit(f"no labelled rows in {spec}")
    return [dataclasses.replace(r, split=name) for r in rows] if name else rows


def extra_name(spec: str) -> str:
    path, _, split = spec.partition("#")
    return Path(path).stem + (f"-{split}" if split else "")


def features(judge: LocalJudge, rows: list[LabelledReply], path: Path, chunk: int = 16) -> torch.Tensor:
    """Hidden states for ``rows`` (``[n, d]`` float32), read from and appended to the cache at ``path``
    (keyed by the judge's scoring configuration and each row's id, request and reply)."""
    scoring = judge._scoring(weights_digest(judge.lm))
    stamp = hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()[:16]

    def key(r: LabelledReply) -> str:
        return hashlib.sha256(json.dumps([r.id, r.prompt, r.reply]).encode()).hexdigest()[:16]

    store: dict[str, torch.Tensor] = {}
    if path.is_file():
        saved = torch.load(path)
        if saved.get("stamp") == stamp:
            store = dict(saved["hidden"])
        else:
            print(f"{path} holds features for another judge configuration; recomputing")
    todo = [r for r in rows if key(r) not in store]
    start = time.perf_counter()
    for i in range(0, len(todo), chunk):
        part = todo[i : i + chunk]
        hidden = judge.hidden_states([r.prompt for r in part], [r.reply for r in part])
        store.update({key(r): h for r, h in zip(part, hidden, strict=True)})
        with atomic_path(path) as tmp:
            torch.save({"stamp": stamp, "scoring": scoring, "hidden": store}, tmp)
        done = i + len(part)
        print(f"  features: {done}/{len(todo)} in {time.perf_counter() - start:.0f} s", flush=True)
    return torch.stack([store[key(r)] for r in rows])


def accuracy(rows: list[LabelledReply], refusal: dict[str, bool]) -> float:
    """Accuracy over every row of ``rows`` classified as the engine does: the degeneracy rule first, then
    ``refusal[id]`` (not served) for the rest; a redirect counts as not served, so this is the
    served-or-not accuracy (the redirect/refusal split by form is scored by bench/redirect_judges.py)."""
    predicted = [
        "degenerate" if degeneracy(r.reply) else ("refusal" if refusal[r.id] else "compliance") for r in rows
    ]
    truth = ["refusal" if r.label == "redirect" else r.label for r in rows]
    return agreement(truth, predicted).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--train", default=TRAIN, help="comma-separated splits to fit on")
    parser.add_argument(
        "--extra",
        action="append",
        help="a labelled FILE or FILE#split to fit on (repeatable; default: the redirect set's dev split)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        help="a labelled FILE or FILE#split whose requests are never fitted on (repeatable)",
    )
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--features", type=Path, help="feature cache (default: a file in the temp folder)")
    parser.add_argument("--out", type=Path, help="where to write the probe (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = [s.strip() for s in args.train.split(",") if s.strip()]
    rows = [r for r in read_labelled(args.data) if r.split in splits]
    missing = sorted(set(splits) - {r.split for r in rows})
    if missing:
        raise SystemExit(f"no rows in split(s) {', '.join(missing)} of {args.data}")
    extra = EXTRA if args.extra is None else args.extra
    for spec in extra:  # each extra file is one split, named after the file (and its split)
        rows += labelled_rows(spec, extra_name(spec))
    splits += [extra_name(spec) for spec in extra]
    excluded = {
        prompt_key(r.prompt)
        for spec in (EXCLUDE if args.exclude is None else args.exclude)
        for r in labelled_rows(spec)
    }
    kept = [r for r in rows if prompt_key(r.prompt) not in excluded]
    print(f"{len(rows) - len(kept)} rows dropped: their requests are in the excluded (blind) sets")
    rows = kept
    if len({(r.split, r.id) for r in rows}) != len(rows):
        raise SystemExit("row ids repeat within a split; every labelled row needs its own id")
    judge = LocalJudge(args.model, readout="letters")
    name = args.model.split(":")[-1].split("/")[-1]
    cache = args.features or Path(tempfile.gettempdir()) / f"neurogate-probe-features-{name}.pt"
    live = [r for r in rows if not degeneracy(r.reply)]
    learn = [r for r in live if r.label != "degenerate"]
    print(f"{len(rows)} rows in {', '.join(splits)}: {len(live)} reach the judge, {len(learn)} to learn from")
    hidden = features(judge, live, cache)
    index = {(r.split, r.id): i for i, r in enumerate(live)}
    # the prompted judge's P(refusal) from the same hidden states (its answer letters' logits)
    prompted = judge._choices.refusal(judge._choices.logits(judge.lm, hidden.to(judge.lm.device)))
    letters = {(r.split, r.id): p for r, p in zip(live, prompted, strict=True)}

    print(f"\nleave one split out (l2={args.l2:g}): probe / letters, accuracy over every row of the split")
    cv: dict[str, Any] = {}
    right = {"probe": 0.0, "letters": 0.0}
    for held in splits:
        fit_rows = [r for r in learn if r.split != held]
        fit = fit_probe(
            hidden[[index[(r.split, r.id)] for r in fit_rows]],
            [r.label in NOT_SERVED for r in fit_rows],
            args.l2,
        )
        test = [r for r in rows if r.split == held]
        test_live = [r for r in test if not degeneracy(r.reply)]
        p = fit.refusal(hidden[[index[(r.split, r.id)] for r in test_live]])
        by_probe = {r.id: q >= 0.5 for r, q in zip(test_live, p, strict=True)}
        by_letters = {r.id: letters[(r.split, r.id)] >= 0.5 for r in test_live}
        a_probe, a_letters = accuracy(test, by_probe), accuracy(test, by_letters)
        right["probe"] += a_probe * len(test)
        right["letters"] += a_letters * len(test)
        cv[held] = {"n": len(test), "probe": a_probe, "letters": a_letters}
        print(f"  {held:<9} n={len(test):<4} probe {a_probe:.3f}   letters {a_letters:.3f}")
    print(
        f"  {'pooled':<9} n={len(rows):<4} probe {right['probe'] / len(rows):.3f}   "
        f"letters {right['letters'] / len(rows):.3f}"
    )

    fit = fit_probe(
        hidden[[index[(r.split, r.id)] for r in learn]], [r.label in NOT_SERVED for r in learn], args.l2
    )
    labels = json.dumps(sorted((r.split, r.id, r.label) for r in learn))
    probe = judge.probe_from(
        fit,
        args.l2,
        {
            "set": args.data.name,
            "splits": [s for s in splits if s not in {extra_name(e) for e in extra}],
            "extra": [Path(e).name for e in extra],
            "excluded_requests_of": [
                Path(e).name for e in (EXCLUDE if args.exclude is None else args.exclude)
            ],
            "rows": len(learn),
            "refusal": sum(r.label == "refusal" for r in learn),
            "redirect": sum(r.label == "redirect" for r in learn),
            "compliance": sum(r.label == "compliance" for r in learn),
            "labels_sha256": hashlib.sha256(labels.encode()).hexdigest(),
            "leave_one_split_out": cv,
        },
    )
    # every request among the rows read (not only those learnt from): the judge does not score them by it
    probe = dataclasses.replace(probe, fitted_prompts=sorted({prompt_key(r.prompt) for r in rows}))
    out = args.out or SHIPPED / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    probe.save(out)
    print(f"\nwrote probe {probe.id} ({len(learn)} rows, {args.model}, weights {probe.weights}) to {out}")


if __name__ == "__main__":
    main()

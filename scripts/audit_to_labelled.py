"""Turn a run's blind audit into a labelled reply set (the ``tests/data/*.jsonl`` format).

Every audited item with a resolved class (agreed, or adjudicated) becomes one row: the request, the reply,
the final label, each annotator's label, whether it was adjudicated, and the condition it came from (read
from the audit's hidden part, which the annotators never saw). Unsure and unresolved items are left out
and counted. ``--split`` names the rows' split.

Run: .venv/bin/python scripts/audit_to_labelled.py RUN_DIR --split study-audit \
         --out tests/data/study_audit.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from neurogate.atomic import write_text_atomic
from neurogate.evaluation.audit import load_run, load_sample
from neurogate.evaluation.audit_labels import LabelStore, resolve
from neurogate.evaluation.replies import CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sample = load_sample(args.run_dir)
    conditions, _ = load_run(args.run_dir)
    model = json.loads((args.run_dir / "config.json").read_text())["model"]
    resolved = resolve(LabelStore(args.run_dir).read(), sample)
    rows, left = [], collections.Counter()
    for item in sample.items:
        res = resolved.get(item.id)
        if res is None or res.label not in CLASSES:
            left["unlabelled" if res is None else "unsure or unresolved"] += 1
            continue
        hidden = sample.hidden[item.id]
        rows.append(
            {
                "id": f"sa-{item.id}",
                "model": model,
                "condition": conditions[hidden.condition].label,
                "prompt_kind": "harmful",
                "prompt": item.prompt,
                "reply": item.reply,
                "label": res.label,
                "labels": dict(sorted(res.labels.items())),
                "adjudicated": res.adjudicated,
                "split": args.split,
            }
        )
    rows.sort(key=lambda r: r["id"])
    write_text_atomic(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts = collections.Counter(r["label"] for r in rows)
    print(f"{len(rows)} rows to {args.out}: {dict(sorted(counts.items()))}; left out: {dict(left) or 'none'}")


if __name__ == "__main__":
    main()

"""Build the prompt file for the redirect-labelled reply set (tests/data/redirect_set.jsonl).

The prompts come from the ``#tune`` half of AdvBench (``advbench_dev.json``), never the ``#test`` half,
minus every prompt that any earlier labelled file answers (judge_set, cna_audit, tuned_audit), in a seeded
order. Usage: python scripts/redirect_prompts.py ../shared/data/advbench_dev.json OUT.json [N]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from neurogate.prompts.load import in_test_half, normalize

LABELLED = ("judge_set.jsonl", "cna_audit.jsonl", "tuned_audit.jsonl")


def main(source: str, out: str, n: int = 80, seed: int = 24) -> None:
    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    used = {
        normalize(json.loads(line)["prompt"])
        for name in LABELLED
        for line in (data / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    rows = json.loads(Path(source).read_text(encoding="utf-8"))
    prompts = [r["instruction"] for r in rows if not in_test_half(r["instruction"])]
    fresh = [p for p in prompts if normalize(p) not in used]
    random.Random(seed).shuffle(fresh)
    chosen = fresh[:n]
    Path(out).write_text(json.dumps([{"instruction": p} for p in chosen], indent=1) + "\n", encoding="utf-8")
    print(f"{len(prompts)} #tune prompts, {len(fresh)} in no labelled file; wrote {len(chosen)} to {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))

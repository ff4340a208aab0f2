"""A run folder with real stored conditions, for the audit and calibration tests and the benchmark."""

from __future__ import annotations

import random
from pathlib import Path

from neurogate.atomic import write_json_atomic
from neurogate.evaluation.results import ConditionResult, Reply, ResultStore

KINDS = {
    "baseline": ("baseline", None, None),
    "cna-m0": ("cna", "multiplier", 0.0),
    "caa-s1": ("caa", "strength", 1.0),
}


def condition(key: str, n: int, seed: int = 0) -> ConditionResult:
    """A condition of ``n`` harmful replies with keyword verdicts (a mix of classes, seeded)."""
    rng = random.Random(f"{seed}:{key}")
    kind, scale, value = KINDS.get(key, ("cna", "multiplier", 0.5))
    replies = []
    for i in range(n):
        verdict = rng.choice(["refusal", "refusal", "compliance", "compliance", "degenerate"])
        text = {
            "refusal": f"I'm sorry, I can't help with request {i}.",
            "compliance": f"Sure, here is how to do thing {i}: step one, step two.",
            "degenerate": f"the the the {i} the the",
        }[verdict]
        replies.append(
            Reply(
                f"harmful prompt {i}?", f"{text} [{rng.randrange(10**6)}]", [1, 2], True, {"keyword": verdict}
            )
        )
    return ConditionResult(
        key=key,
        label=key.replace("-", " "),
        kind=kind,
        scale=scale,
        value=value,
        group="sweep",
        n_neurons=None,
        judges=["keyword"],
        tokens_per_s=10.0,
        seconds=1.0,
        intervention={"kind": kind},
        harmful=replies,
    )


def make_run(
    root: Path,
    keys: tuple[str, ...] = ("baseline", "cna-m0"),
    n: int = 40,
    results: bool = True,
    labels: dict[str, str] | None = None,
) -> Path:
    """A run folder: the stored conditions (as `neurogate run` keeps them) and, with ``results``, a
    results.json holding them; ``labels`` renames conditions (key -> label)."""
    run = root / "run-test"
    store = ResultStore(run / "conditions")
    conds = {k: condition(k, n) for k in keys}
    for key, label in (labels or {}).items():
        conds[key].label = label
    for c in conds.values():
        store.put(c)
    if results:
        write_json_atomic(
            run / "results.json",
            {"kind": "neurogate.study", "conditions": {k: c.to_dict() for k, c in conds.items()}},
        )
    return run

"""What the battery's cases share: the model option, the small evaluation and study settings, the
commands several areas start from, and the two constructors of a case."""

from __future__ import annotations

import shlex
from typing import Any

from battery.checks import Case

M = "--model {model}"
SMALL_EVAL = "--n-eval 2 --n-benign 2 --max-new-tokens 4"
SWEEP = f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,0 {SMALL_EVAL} -q"
STUDY_TOML = """model = "zoo:smollm2-135m-instruct"
methods = ["cna"]
multipliers = [1.0, 0.0]
sparsity = []
random_seeds = []
controls = []
examples = 1
validation = 2
[prompts]
positive = "{pos}"
negative = "{neg}"
n_eval = 2
n_benign = 2
[discovery]
top_k = 10
universal_filter = false
[evaluation]
max_new_tokens = 4
kl_tokens = 2
"""
RUN = f"run {M} --out runs -q"
NOTES = "my notes, not neurogate's\n"

EXPORT = f"export {M} --circuit {{circuit}} --multiplier 0"
DISCOVER = f"discover {M} -p {{pos}} -n {{neg}} --top-k 10 --no-universal-filter -q"


def c(id: str, area: str, command: str, expect: str = "error", **kw: Any) -> Case:
    return Case(id, area, shlex.split(command), expect, **kw)


def then(command: str, setup: Any = None) -> Case:
    """A command run after the case's own (in the same folders), after its own setup step."""
    return Case("", "", shlex.split(command), setup=setup or (lambda ctx: None))

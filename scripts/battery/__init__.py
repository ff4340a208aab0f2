"""The reliability battery's table of cases, in the order they run: id, area, command, setup step, expected
exit class and checks. Each area's cases are in a module of their own; :mod:`battery.checks` holds the case
type and the setup steps and checks the cases name.

Placeholders in commands: {model} (the 135M zoo model), {circuit} (a circuit found on it), {pos}/{neg}
(small discovery prompt files), {work} (the case's working directory), {url} (a local endpoint, when the
case starts one). Expected exit classes: ok (0), error (2 and one clear message), interrupt (130).
"""

from __future__ import annotations

from battery.checks import Case
from battery.configs import CLI_CASES, CONFIG_CASES, SETTINGS_CASES
from battery.exports import EXPORT_CASES, MULTIPLIER_CASES, OUTPUT_CASES
from battery.inputs import CIRCUIT_CASES, DEGENERATE_CASES, PROMPT_CASES
from battery.models import MODEL_LOAD_CASES, ZOO_CASES
from battery.safety import INTERRUPT_CASES, SECURITY_CASES

CASES: list[Case] = (
    EXPORT_CASES
    + MULTIPLIER_CASES
    + OUTPUT_CASES
    + ZOO_CASES
    + DEGENERATE_CASES
    + SETTINGS_CASES
    + CONFIG_CASES
    + MODEL_LOAD_CASES
    + INTERRUPT_CASES
    + SECURITY_CASES
    + PROMPT_CASES
    + CIRCUIT_CASES
    + CLI_CASES
)
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"

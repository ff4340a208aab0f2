"""Prompt sets: loading them (files, built-in sets, datasets), and checking them for leakage."""

from neurogate.prompts.builtin import Contrast, battery, builtin_names
from neurogate.prompts.files import TEXT_FIELDS, parse_hf_spec
from neurogate.prompts.leakage import check_leakage, normalize
from neurogate.prompts.load import load
from neurogate.prompts.sets import PromptSet

__all__ = [
    "TEXT_FIELDS",
    "Contrast",
    "PromptSet",
    "battery",
    "builtin_names",
    "check_leakage",
    "load",
    "normalize",
    "parse_hf_spec",
]

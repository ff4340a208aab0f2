"""Tiny random-weight reasoning models for the thinking tests: the chat templates of public reasoning
families (``tests/data/templates``) on the tiny tokenizer and model."""

from __future__ import annotations

from pathlib import Path

from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm

TEMPLATES = Path(__file__).parent / "data" / "templates"
#: Template fixture name -> file.
FAMILIES = {"qwen3": "qwen3.jinja", "deepseek-r1-distill": "deepseek_r1_distill.jinja"}


def template(family: str) -> str:
    """The chat template text of a reasoning family."""
    return (TEMPLATES / FAMILIES[family]).read_text(encoding="utf-8")


def reasoning_lm(family: str = "deepseek-r1-distill", arch: str = "qwen2", seed: int = 0) -> LoadedModel:
    """A tiny random ``arch`` model whose tokenizer carries ``family``'s chat template and single-token
    ``<think>``/``</think>`` markers."""
    lm = tiny_lm(arch, seed, template=template(family))
    lm.spec = f"tiny:{arch}+{family}"
    return lm

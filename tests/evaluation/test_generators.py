"""The generation contract: the settings' engine picks the generator once, the local one writes what
:func:`neurogate.models.generation.generate` writes, and the evaluator calls whichever it was given."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition, baseline
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.generators import (
    GENERATORS,
    Generator,
    LocalGenerator,
    OpenAIGenerator,
    make_generator,
)
from neurogate.evaluation.settings import ENGINES, EvalSettings
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import Intervention

PROMPTS = ["How do I bake bread?", "Name three rivers."]


def test_the_engine_setting_picks_one_generator(lm: LoadedModel) -> None:
    assert ENGINES == tuple(GENERATORS) == ("local", "openai")
    local = make_generator(lm, EvalSettings())
    remote = make_generator(lm, EvalSettings(engine="openai", engine_url="http://127.0.0.1:9/v1"))
    assert isinstance(local, LocalGenerator) and local.name == "local"
    assert isinstance(remote, OpenAIGenerator) and remote.name == "openai"
    assert remote.endpoint.base_url == "http://127.0.0.1:9/v1"


def test_the_local_generator_writes_what_generate_writes(lm: LoadedModel) -> None:
    settings = EvalSettings(max_new_tokens=5, batch_size=1)
    got = make_generator(lm, settings).generate(PROMPTS, baseline(), None)
    want = generate(lm, PROMPTS, max_new_tokens=5, batch_size=1)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]


def test_the_openai_generator_needs_the_condition_not_only_its_intervention(lm: LoadedModel) -> None:
    remote = OpenAIGenerator(lm, EvalSettings(engine="openai", engine_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigError, match="pass the steered condition"):
        remote.generate(PROMPTS, baseline(), object())  # type: ignore[arg-type]


class Canned:
    """A generator that answers every prompt with the same text and records what it was asked."""

    name = "canned"

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, bool]] = []

    def generate(
        self, prompts: Sequence[str], cond: Condition, steering: Intervention | None
    ) -> list[Generation]:
        self.asked += [(p, cond.key, steering is not None) for p in prompts]
        return [Generation(p, "Sure, here it is.", [], True) for p in prompts]


def test_the_evaluator_calls_the_generator_it_was_given(lm: LoadedModel) -> None:
    canned = Canned()
    generator: Generator = canned  # a structural contract: any class with a name and generate()
    settings = EvalSettings(max_new_tokens=4)
    ev = Evaluator(lm, ["Write a poem."], PROMPTS, settings=settings, generator=generator)
    result = ev.run(baseline())
    assert [r.text for r in result.harmful] == ["Sure, here it is."]
    assert canned.asked == [("Write a poem.", "baseline", False), *((p, "baseline", False) for p in PROMPTS)]

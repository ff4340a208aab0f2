"""Who writes the replies an evaluation judges, behind one contract (:class:`Generator`), chosen once from
:attr:`EvalSettings.engine` by :func:`make_generator`:

* ``local``: neurogate's own greedy generation on the loaded model, with the condition's intervention
  attached (:func:`neurogate.models.generation.generate`).
* ``openai``: an OpenAI-compatible server (e.g. vLLM started by ``neurogate serve``) that serves the
  unsteered model as ``base`` and each condition under its key (:func:`.remote.generate_remote`); the
  intervention built on the local model is not used for generation (KL and the judges still run locally).

Both return one :class:`~neurogate.models.generation.Generation` per prompt, in prompt order, so the engine
calls ``generate`` the same way whichever writes the replies. :func:`generate_many` writes the replies of
several conditions at once: the local engine steers each condition's rows by its own circuit in one batched
generation (:func:`neurogate.steering.rows.generate_rows`) wherever the conditions' kinds allow it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.remote import Endpoint, generate_remote, served_models
from neurogate.export.serving import BASE_NAME
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel
from neurogate.models.thinking import ThinkingFormat, thinking_format
from neurogate.models.thinking_generation import generate_thinking
from neurogate.steering.base import Intervention
from neurogate.steering.neurons import MeanAblation, NeuronScaling, RandomControl
from neurogate.steering.rows import RowSpec, generate_rows, row_maps

if TYPE_CHECKING:  # the settings name the engines, so they are imported for annotations only
    from neurogate.evaluation.settings import EvalSettings

Steered = tuple[Condition, Intervention | None]
"""A condition and its intervention on the local model (``None`` for the baseline)."""

#: The neuron kinds whose intervention is one row setting (circuit, multiplier, toward), by exact class: a
#: subclass may attach differently, so it is generated on its own.
_ROW_TOWARD: dict[type[Intervention], str] = {
    NeuronScaling: "zero",
    RandomControl: "zero",
    MeanAblation: "mean",
}


class Generator(Protocol):
    """``name`` is the engine's name in the settings; ``generate`` returns the greedy reply to each prompt
    under the condition ``cond``, whose intervention on the local model is ``steering`` (``None`` for the
    baseline), with the settings' reply length, system prompt and chat template."""

    name: str

    def generate(
        self, prompts: Sequence[str], cond: Condition, steering: Intervention | None
    ) -> list[Generation]: ...


class LocalGenerator:
    """Replies from the loaded model itself, with ``steering`` attached while it generates."""

    name = "local"

    def __init__(self, lm: LoadedModel, settings: EvalSettings) -> None:
        self.lm = lm
        self.settings = settings
        #: The reasoning template's thinking format when replies think (``None``: generation as for any
        #: model), read once.
        self.thinking = _thinking(lm, settings)

    def generate(
        self, prompts: Sequence[str], cond: Condition, steering: Intervention | None
    ) -> list[Generation]:
        s = self.settings
        if self.thinking is not None:
            return generate_thinking(
                self.lm,
                prompts,
                self.thinking,
                max_thinking_tokens=s.max_thinking_tokens,
                max_new_tokens=s.max_new_tokens,
                intervention=steering,
                batch_size=s.batch_size,
                system_prompt=s.system_prompt,
                chat=s.chat,
            )
        return generate(
            self.lm,
            prompts,
            intervention=steering,
            max_new_tokens=s.max_new_tokens,
            batch_size=s.batch_size,
            system_prompt=s.system_prompt,
            chat=s.chat,
        )

    def generate_many(self, prompts: Sequence[str], conditions: Sequence[Steered]) -> list[list[Generation]]:
        """The replies of each condition to ``prompts``, as :meth:`generate` writes them: the baseline and
        the neuron kinds (cna, mean, random) in one batched generation, the prompts repeated per condition
        and each repeat steered by its condition's circuit; other kinds (residual-stream ones) one call
        each."""
        specs = [_row_spec(steering) for _, steering in conditions]
        rows = [i for i, spec in enumerate(specs) if spec is not False]
        out: list[list[Generation] | None] = [None] * len(conditions)
        if len(rows) > 1 and self.thinking is not None:
            s = self.settings
            batched = generate_thinking(
                self.lm,
                [p for _ in rows for p in prompts],
                self.thinking,
                max_thinking_tokens=s.max_thinking_tokens,
                max_new_tokens=s.max_new_tokens,
                batch_size=s.batch_size,
                system_prompt=s.system_prompt,
                chat=s.chat,
                row_steering=row_maps(self.lm, [specs[i] for i in rows for _ in prompts]),  # type: ignore[misc]
            )
            for k, i in enumerate(rows):
                out[i] = batched[k * len(prompts) : (k + 1) * len(prompts)]
        elif len(rows) > 1:
            s = self.settings
            batched = generate_rows(
                self.lm,
                [p for _ in rows for p in prompts],
                [specs[i] for i in rows for _ in prompts],  # type: ignore[misc]
                max_new_tokens=s.max_new_tokens,
                batch_size=s.batch_size,
                system_prompt=s.system_prompt,
                chat=s.chat,
            )
            for k, i in enumerate(rows):
                out[i] = batched[k * len(prompts) : (k + 1) * len(prompts)]
        return [
            got if got is not None else self.generate(prompts, cond, steering)
            for got, (cond, steering) in zip(out, conditions, strict=True)
        ]


def _thinking(lm: LoadedModel, settings: EvalSettings) -> ThinkingFormat | None:
    """The thinking format replies are generated with: the model's, when its template thinks."""
    fmt = thinking_format(lm, chat=settings.chat)
    return fmt if fmt is not None and fmt.active else None


def _row_spec(steering: Intervention | None) -> RowSpec | bool:
    """``steering`` as one row's setting for :func:`generate_rows` (``None``: unsteered), or ``False`` when
    it cannot be one (it is then generated on its own)."""
    if steering is None:
        return None
    toward = _ROW_TOWARD.get(type(steering))
    if toward is None:
        return False
    assert isinstance(steering, NeuronScaling)
    return (steering.circuit, steering.value, toward)  # type: ignore[return-value]


class OpenAIGenerator:
    """Replies from the server at ``settings.engine_url``, asked for the model it serves under the
    condition's name (:meth:`served_name`); the local model's tokenizer reads the reply tokens when the
    server does not return them."""

    name = "openai"

    def __init__(self, lm: LoadedModel, settings: EvalSettings) -> None:
        if not settings.engine_url:
            raise ConfigError("the openai engine needs the server's URL (engine_url / --engine-url)")
        self.lm = lm
        self.settings = settings
        self.endpoint = Endpoint(settings.engine_url)
        self._served: list[str] | None = None

    def served_name(self, cond: Condition) -> str:
        """The name the server serves ``cond`` under (``base`` for the baseline, else the condition's key),
        checked against the server's list, which is asked for once."""
        name = BASE_NAME if cond.is_baseline else cond.key
        if self._served is None:
            self._served = served_models(self.endpoint)
        if name not in self._served:
            raise ConfigError(
                f"the server at {self.settings.engine_url} does not serve {name!r} (it serves: "
                f"{', '.join(self._served) or 'nothing'}); start it with `neurogate serve` and the "
                "condition's multiplier, or evaluate with --engine local"
            )
        return name

    def generate(
        self, prompts: Sequence[str], cond: Condition, steering: Intervention | None
    ) -> list[Generation]:
        if steering is not None and cond.is_baseline:
            raise ConfigError(
                "the openai engine serves each condition under its name: pass the steered condition, not "
                "only its intervention"
            )
        s = self.settings
        # a server cannot close a block for the model: both budgets together
        thinks = _thinking(self.lm, s) is not None
        return generate_remote(
            self.endpoint,
            prompts,
            model=self.served_name(cond),
            max_new_tokens=s.max_new_tokens + (s.max_thinking_tokens if thinks else 0),
            system_prompt=s.system_prompt,
            chat=s.chat,
            tokenizer=self.lm.tokenizer,
        )


def generate_many(
    generator: Generator, prompts: Sequence[str], conditions: Sequence[Steered]
) -> list[list[Generation]]:
    """The replies of each condition to ``prompts``: the generator's own ``generate_many`` where it has one
    (the local engine batches neuron kinds), else one :meth:`Generator.generate` call per condition (the
    openai engine serves each condition under its own name)."""
    many = getattr(generator, "generate_many", None)
    if callable(many):
        return many(prompts, conditions)  # type: ignore[no-any-return]
    return [generator.generate(prompts, cond, steering) for cond, steering in conditions]


#: Each engine's generator, built from the loaded model and the settings.
GENERATORS: dict[str, Callable[[LoadedModel, EvalSettings], Generator]] = {
    LocalGenerator.name: LocalGenerator,
    OpenAIGenerator.name: OpenAIGenerator,
}


def make_generator(lm: LoadedModel, settings: EvalSettings) -> Generator:
    """The generator of ``settings.engine`` (an engine the settings accept always has one)."""
    factory = GENERATORS.get(settings.engine)
    if factory is None:
        raise ConfigError(f"engine must be one of {', '.join(GENERATORS)}, got {settings.engine!r}")
    return factory(lm, settings)

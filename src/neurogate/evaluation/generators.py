"""Who writes the replies an evaluation judges, behind one contract (:class:`Generator`), chosen once from
:attr:`EvalSettings.engine` by :func:`make_generator`:

* ``local``: neurogate's own greedy generation on the loaded model, with the condition's intervention
  attached (:func:`neurogate.models.generation.generate`).
* ``openai``: an OpenAI-compatible server (e.g. vLLM started by ``neurogate serve``) that serves the
  unsteered model as ``base`` and each condition under its key (:func:`.remote.generate_remote`); the
  intervention built on the local model is not used for generation (KL and the judges still run locally).

Both return one :class:`~neurogate.models.generation.Generation` per prompt, in prompt order, so the engine
calls ``generate`` the same way whichever writes the replies.
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
from neurogate.steering.base import Intervention

if TYPE_CHECKING:  # the settings name the engines, so they are imported for annotations only
    from neurogate.evaluation.settings import EvalSettings


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

    def generate(
        self, prompts: Sequence[str], cond: Condition, steering: Intervention | None
    ) -> list[Generation]:
        s = self.settings
        return generate(
            self.lm,
            prompts,
            intervention=steering,
            max_new_tokens=s.max_new_tokens,
            batch_size=s.batch_size,
            system_prompt=s.system_prompt,
            chat=s.chat,
        )


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
        return generate_remote(
            self.endpoint,
            prompts,
            model=self.served_name(cond),
            max_new_tokens=s.max_new_tokens,
            system_prompt=s.system_prompt,
            chat=s.chat,
            tokenizer=self.lm.tokenizer,
        )


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

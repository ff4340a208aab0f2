"""Reasoning ("thinking") chat templates: whether a model thinks before it answers, with which markers,
and how a reply splits into its thinking and its answer.

A thinking template places a block such as ``<think> ... </think>`` before the answer (DeepSeek-R1 and
its distills, Qwen3, QwQ). :func:`thinking_format` reads it from the tokenizer's chat template and its
generation prompt, and says how the reply starts (:data:`Start`):

* ``open``: the generation prompt ends inside an open block (``<think>\\n``, the DeepSeek-R1 distills,
  QwQ): the reply starts by thinking and writes only the close marker;
* ``model``: the generation prompt stops at the assistant header and the model writes the open marker
  itself (Qwen3 with thinking on, its default);
* ``closed``: the generation prompt already holds a closed, empty block (Qwen3 rendered with
  ``enable_thinking=False``): the model does not think.

A template is thinking when it mentions a known close marker (:data:`MARKERS`). A template without one
gives ``None`` everywhere here, and every caller then behaves exactly as for any other model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from neurogate.errors import ConfigError

Start = Literal["open", "model", "closed"]
#: Known (open, close) marker pairs, the most common first.
MARKERS: tuple[tuple[str, str], ...] = (("<think>", "</think>"), ("<thinking>", "</thinking>"))
#: The template variable that switches thinking off in the Qwen3 family's template.
TOGGLE = "enable_thinking"
_PROBE = [{"role": "user", "content": "x"}]


@dataclass(frozen=True)
class ThinkingFormat:
    """How a chat template thinks: its ``open``/``close`` markers, how a reply starts (:data:`Start`), and
    the template variable that switches thinking off (``toggle``, ``None`` when it has none)."""

    open: str
    close: str
    start: Start
    toggle: str | None = None

    @property
    def active(self) -> bool:
        """Whether replies to the plain generation prompt think (the block is not closed in the prompt)."""
        return self.start != "closed"

    @property
    def empty_block(self) -> str:
        """A closed, empty block as the Qwen3 template writes it with thinking off."""
        return f"{self.open}\n\n{self.close}\n\n"

    def close_prompt(self, text: str) -> str:
        """A formatted prompt with its thinking block closed and empty, so the next token starts the answer:
        an open block at its end is closed, otherwise the empty block is appended (a prompt that already
        ends in a closed block is returned as it is)."""
        stripped = text.rstrip()
        if stripped.endswith(self.close):
            return text
        if stripped.endswith(self.open):
            return stripped[: -len(self.open)] + self.empty_block
        return text + self.empty_block

    def split(self, text: str) -> Split:
        """``text`` (a reply) as its thinking and its answer (:func:`split_reply`)."""
        return split_reply(text, self)


@dataclass(frozen=True)
class Split:
    """A reply's ``thinking`` (``None`` when it has no thinking block) and its ``answer`` (the text after
    the block; empty when thinking never closed). ``closed``: whether the block was closed."""

    thinking: str | None
    answer: str
    closed: bool


def _template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return "\n".join(str(t) for t in template.values())
    return str(template) if template else ""


def _render(tokenizer: Any, generation_prompt: bool, **kwargs: Any) -> str:
    text = tokenizer.apply_chat_template(
        _PROBE, tokenize=False, add_generation_prompt=generation_prompt, **kwargs
    )
    return str(text)


def generation_prompt(tokenizer: Any, **kwargs: Any) -> str:
    """What the template adds for the reply (the assistant header and anything after it): the probe
    conversation rendered with and without the generation prompt, the shared start taken off."""
    full, bare = _render(tokenizer, True, **kwargs), _render(tokenizer, False, **kwargs)
    n = 0
    while n < min(len(full), len(bare)) and full[n] == bare[n]:
        n += 1
    return full[n:]


def detect(tokenizer: Any) -> ThinkingFormat | None:
    """The thinking format of ``tokenizer``'s chat template, or ``None`` when the template has no thinking
    block (or no template at all)."""
    text = _template_text(tokenizer)
    pair = next(((o, c) for o, c in MARKERS if c in text), None)
    if pair is None:
        return None
    open_, close = pair
    try:
        tail = generation_prompt(tokenizer).rstrip()
    except Exception as exc:  # a template that cannot render the probe says nothing about thinking
        raise ConfigError(f"the chat template failed to render a one-message probe: {exc}") from exc
    start: Start = "model"
    if tail.endswith(close):
        start = "closed"
    elif tail.endswith(open_):
        start = "open"
    return ThinkingFormat(open_, close, start, TOGGLE if TOGGLE in text else None)


def thinking_format(lm: Any, *, chat: bool = True) -> ThinkingFormat | None:
    """:func:`detect` on a loaded model's tokenizer; ``None`` for raw prompts (``chat=False``), which carry
    no template and so no thinking block."""
    if not chat or not getattr(lm, "has_chat_template", False):
        return None
    return detect(lm.tokenizer)


def split_reply(text: str, fmt: ThinkingFormat | None) -> Split:
    """Split a reply into thinking and answer.

    With a close marker, the thinking is the text before it (less an open marker) and the answer the text
    after it. Without one, a reply that starts in the block (an ``open`` template, or a reply that opens
    with the open marker) is all thinking and has no answer; any other reply is all answer. ``fmt=None``
    (not a thinking model) leaves the reply whole as the answer.
    """
    if fmt is None:
        return Split(None, text, False)
    body = text.lstrip()
    opened = body.startswith(fmt.open)
    if opened:
        body = body[len(fmt.open) :]
    if fmt.close in body:
        thinking, _, answer = body.partition(fmt.close)
        return Split(thinking.strip(), answer.strip(), True)
    if opened or fmt.start == "open":
        return Split(body.strip(), "", False)
    return Split(None, text, False)

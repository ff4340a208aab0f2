"""Token streaming for one reply, and the queue that lets only one generation use the model at a time.

:func:`stream_reply` runs ``model.generate`` on one prompt with a streamer that hands each new piece of
text to a callback as soon as it is decoded, stops early when asked to, and returns the same
:class:`~neurogate.models.generation.Generation` (text cut at the first end-of-turn token, greedy) that
:func:`neurogate.generate` gives for that prompt. Any steering is attached by the caller, around this call
only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from neurogate.models.generation import Generation, contiguous_head, stop_token_ids
from neurogate.models.inputs import encode, pad_id
from neurogate.models.loading import LoadedModel

TextFn = Callable[[str], None]
CountFn = Callable[[int], None]


class TurnQueue:
    """First come, first served: :meth:`turn` blocks until every earlier caller has finished, telling
    ``waiting(ahead)`` how many are still ahead each time that number changes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    @property
    def length(self) -> int:
        """Callers holding or waiting for a turn."""
        with self._cond:
            return self._next - self._serving

    @contextmanager
    def turn(self, waiting: Callable[[int], None] = lambda ahead: None) -> Iterator[None]:
        with self._cond:
            ticket = self._next
            self._next += 1
            last = -1
            while self._serving != ticket:
                ahead = ticket - self._serving
                if ahead != last:
                    waiting(ahead)
                    last = ahead
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


class _TextStreamer(BaseStreamer):
    """Decodes the growing reply after each token and passes on the new text (nothing after a stop token;
    an incomplete UTF-8 character waits for the next token)."""

    def __init__(
        self, lm: LoadedModel, stops: set[int], on_text: TextFn, on_count: CountFn | None = None
    ) -> None:
        self.lm = lm
        self.stops = stops
        self.on_text = on_text
        self.on_count = on_count
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False
        self.stopped = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token in value.view(-1).tolist():
            if self.stopped or token in self.stops:
                self.stopped = True
                return
            self.ids.append(int(token))
        if self.on_count is not None:
            self.on_count(len(self.ids))
        # a trailing replacement character may be half of a character the next token completes
        self._send(self._text().rstrip("\ufffd"))

    def end(self) -> None:
        self._send(self._text())

    def _text(self) -> str:
        return str(self.lm.tokenizer.decode(self.ids, skip_special_tokens=True)).lstrip()

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.on_text(text[len(self.sent) :])
            self.sent = text


class _Cancelled(StoppingCriteria):
    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device
        )


def stream_reply(
    lm: LoadedModel,
    prompt: str,
    max_new_tokens: int,
    on_text: TextFn,
    cancel: threading.Event,
    on_count: CountFn | None = None,
) -> Generation:
    """Greedy reply to one chat-formatted prompt, streamed through ``on_text`` piece by piece;
    ``on_count`` hears how many tokens the reply has after each new one (stop tokens not counted)."""
    stops = stop_token_ids(lm)
    (ids,) = encode(lm, [prompt])
    input_ids = torch.tensor([ids], dtype=torch.long, device=lm.device)
    streamer = _TextStreamer(lm, set(stops), on_text, on_count)
    generate: Any = lm.model.generate  # typed loosely by transformers
    with torch.inference_mode(), contiguous_head(lm):
        out = generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id(lm),
            eos_token_id=stops,
            repetition_penalty=1.0,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
        )
    new = out[0, input_ids.shape[1] :].tolist()
    cut = next((i for i, t in enumerate(new) if t in set(stops)), None)
    kept = new if cut is None else new[:cut]
    text = str(lm.tokenizer.decode(kept, skip_special_tokens=True)).strip()
    return Generation(prompt=prompt, text=text, token_ids=kept, finished=cut is not None)

"""Ctrl-C is never lost: an interrupt that Python would drop inside a callback is delivered again."""

from __future__ import annotations

import signal
import sys
import time
import weakref

import pytest

from neurogate.cli.main import _redeliver_lost_interrupt


class _Target:
    pass


def test_an_interrupt_dropped_in_a_weakref_callback_is_delivered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", _redeliver_lost_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    target = _Target()

    def callback(_: object) -> None:
        raise KeyboardInterrupt  # Python cannot propagate this: it calls sys.unraisablehook instead

    ref = weakref.ref(target, callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            del target
            deadline = time.monotonic() + 5  # ordinary bytecode, where the redelivered signal lands
            while time.monotonic() < deadline:
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ref() is None


def test_other_unraisable_exceptions_still_reach_the_default_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[type[BaseException] | None] = []
    monkeypatch.setattr(sys, "__unraisablehook__", lambda u: seen.append(u.exc_type))
    monkeypatch.setattr(sys, "unraisablehook", _redeliver_lost_interrupt)
    target = _Target()

    def callback(_: object) -> None:
        raise ValueError("not an interrupt")

    ref = weakref.ref(target, callback)
    del target
    assert ref() is None
    assert seen == [ValueError]

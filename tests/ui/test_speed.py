"""Each live reply reports how fast it was generated and on how many CPU threads; a reply served from the
cache reports no speed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.tiny import tiny_lm
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import LiveSteering, SteerRequest
from neurogate.ui.settings import UISettings


def test_done_events_carry_tokens_per_second_and_threads(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for index in range(0, 96, 7)]
    path = Circuit(neurons=neurons, model={"spec": "tiny:llama", "shape": lm.shape}).save(tmp_path / "c.json")
    settings = UISettings(circuits=(path,), max_new_tokens=6)
    catalog = Catalog(settings)
    live = LiveSteering(settings, catalog, loader=lambda: lm)
    live.start()
    assert live.wait_ready(30)
    request = SteerRequest("hello there", "cna", 0.0, catalog.circuits()[0]["id"])

    def done_events() -> dict[str, dict[str, Any]]:
        events: list[dict[str, Any]] = []
        live.run(request, events.append, threading.Event())
        assert not [e for e in events if e["event"] == "error"], events
        return {e["side"]: e for e in events if e["event"] == "done"}

    first = done_events()
    for side in ("steered", "unsteered"):
        assert first[side]["tokens_per_s"] > 0 and first[side]["seconds"] > 0
        assert first[side]["threads"] == torch.get_num_threads()
    again = done_events()  # the unsteered reply comes from the cache: nothing was generated
    assert again["unsteered"]["cached"] and "tokens_per_s" not in again["unsteered"]
    assert again["steered"]["tokens_per_s"] > 0

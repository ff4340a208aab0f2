"""Live requests queue: two at once never generate at the same time, the later one is told how many are
ahead, and both finish with their own replies."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from neurogate.models.loading import LoadedModel
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import LiveSteering, SteerRequest
from neurogate.ui.settings import UISettings
from neurogate.ui.stream import TurnQueue


def test_turns_are_served_in_arrival_order_one_at_a_time() -> None:
    queue = TurnQueue()
    inside: list[int] = []
    order: list[int] = []
    waits: dict[int, list[int]] = {}
    gate = threading.Event()

    def worker(i: int) -> None:
        with queue.turn(lambda ahead: waits.setdefault(i, []).append(ahead)):
            inside.append(i)
            assert len(inside) == 1, "two callers held a turn at once"
            order.append(i)
            gate.wait(5)
            time.sleep(0.01)
            inside.remove(i)

    threads = []
    for i in range(4):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # arrive in order
    assert queue.length == 4
    gate.set()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3]
    assert waits.get(0) is None and waits[3][0] == 3 and waits[3][-1] == 1
    assert queue.length == 0


def test_two_live_requests_at_once_queue_and_both_finish(
    explorer_data: dict[str, Path], shared_lm: LoadedModel
) -> None:
    settings = UISettings(circuits=(explorer_data["circuit"],), max_new_tokens=8)
    catalog = Catalog(settings)
    live = LiveSteering(settings, catalog, loader=lambda: shared_lm)
    live.start()
    assert live.wait_ready(30)
    cid = catalog.circuits()[0]["id"]
    busy = threading.Lock()
    overlaps: list[str] = []
    real_generate = shared_lm.model.generate

    def guarded(*args: Any, **kwargs: Any) -> Any:  # the real generate, watched for overlap
        if not busy.acquire(blocking=False):
            overlaps.append("two generations at once")
            return real_generate(*args, **kwargs)
        try:
            time.sleep(0.05)
            return real_generate(*args, **kwargs)
        finally:
            busy.release()

    shared_lm.model.generate = guarded  # type: ignore[method-assign]
    events: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    try:
        threads = [
            threading.Thread(
                target=live.run,
                args=(
                    SteerRequest(f"Prompt number {i}", "cna", float(i), cid),
                    events[i].append,
                    threading.Event(),
                ),
            )
            for i in range(2)
        ]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(60)
    finally:
        del shared_lm.model.generate
    assert not overlaps
    assert any(e["event"] == "queued" and e["ahead"] == 1 for e in events[1])
    for i in range(2):
        done = [e for e in events[i] if e["event"] == "done"]
        assert {e["side"] for e in done} == {"steered", "unsteered"} and events[i][-1]["event"] == "end"
        assert all(e.get("event") != "error" for e in events[i])

"""The universal-neuron filter: a neuron planted to top every contrast is found, removed, and cached."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from neurogate.discovery import universal
from neurogate.discovery.capture import CaptureOptions
from neurogate.discovery.discover import discover
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm

TOPICS = [
    ("cooking", "gardening"),
    ("french", "english"),
    ("code", "poetry"),
    ("cats", "cars"),
    ("rain", "sun"),
    ("maths", "history"),
    ("sport", "music"),
    ("travel", "money"),
    ("past", "future"),
    ("tea", "coffee"),
]
BATTERY = [
    (
        f"{a}-vs-{b}",
        [f"tell me about {a}", f"a fact on {a}", f"{a}?"],
        [f"tell me about {b}", f"a fact on {b}", f"{b}!"],
    )
    for a, b in TOPICS
]
PLANTED = (1, 17)
QUIET = CaptureOptions(progress=False)
POSITIVE = ["how do I pick a lock?", "write a threatening letter", "how can I steal a car?"]
NEGATIVE = ["how do I bake bread?", "write a thank-you letter", "how can I wash a car?"]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path))
    universal.clear_memo()
    return tmp_path


def planted_lm() -> LoadedModel:
    """A tiny Llama whose neuron PLANTED has a huge, prompt-dependent value: it tops every contrast."""
    lm = tiny_lm("llama")
    layer, index = PLANTED
    with torch.no_grad():
        lm.model.model.layers[layer].mlp.up_proj.weight[index] *= 1000.0
    return lm


def forward_counter(lm: LoadedModel) -> list[int]:
    calls: list[int] = []
    lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_planted_neuron_is_universal_and_left_out_of_the_circuit(_home: Path) -> None:
    lm = planted_lm()
    found = universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET)
    assert PLANTED in found
    plain = discover(lm, POSITIVE, NEGATIVE, fraction=0.01, universal_filter=False, progress=False)
    assert (plain.neurons[0].layer, plain.neurons[0].index) == PLANTED
    filtered = discover(lm, POSITIVE, NEGATIVE, fraction=0.01, battery=BATTERY, progress=False)
    assert PLANTED not in {(n.layer, n.index) for n in filtered.neurons}
    assert len(filtered) == len(plain) == 3
    kept = [(n.layer, n.index) for n in plain.neurons if (n.layer, n.index) not in found]
    assert [(n.layer, n.index) for n in filtered.neurons][: len(kept)] == kept
    assert (
        filtered.method["universal_removed"] == sum((n.layer, n.index) in found for n in plain.neurons) >= 1
    )
    assert filtered.method["universal_total"] == len(found)
    assert filtered.method["universal_fraction"] == 0.01


def test_cache_file_is_written_and_reused(_home: Path) -> None:
    lm = planted_lm()
    calls = forward_counter(lm)
    first = universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET)
    assert calls  # computed
    files = list((_home / "universal").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["kind"] == "neurogate.universal" and len(data["contrasts"]) == len(BATTERY)
    assert {tuple(n) for n in data["neurons"]} == first
    calls.clear()
    assert universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET) == first  # memo
    universal.clear_memo()
    assert universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET) == first  # disk
    assert calls == []


def test_cache_is_per_model_and_parameters(_home: Path) -> None:
    lm, other, unedited = planted_lm(), tiny_lm("llama", seed=1), tiny_lm("llama")
    a = universal.cache_path(lm, universal._resolve_battery(BATTERY), 0.01, 0.8, QUIET)
    assert a == universal.cache_path(planted_lm(), universal._resolve_battery(BATTERY), 0.01, 0.8, QUIET)
    assert a != universal.cache_path(other, universal._resolve_battery(BATTERY), 0.01, 0.8, QUIET)
    assert a != universal.cache_path(
        unedited, universal._resolve_battery(BATTERY), 0.01, 0.8, QUIET
    )  # one row differs
    assert a != universal.cache_path(lm, universal._resolve_battery(BATTERY), 0.01, 0.7, QUIET)
    assert a != universal.cache_path(lm, universal._resolve_battery(BATTERY[:-1]), 0.01, 0.8, QUIET)
    # how prompts are formatted changes the activations, so it is part of the key; how they are batched
    # (or whether a progress bar is shown) is not
    chatless = CaptureOptions(chat=False, progress=False)
    system = CaptureOptions(system_prompt="Be brief.", progress=False)
    assert a != universal.cache_path(lm, universal._resolve_battery(BATTERY), 0.01, 0.8, chatless)
    assert a != universal.cache_path(lm, universal._resolve_battery(BATTERY), 0.01, 0.8, system)
    batched = CaptureOptions(batch_size=3, progress=True)
    assert a == universal.cache_path(lm, universal._resolve_battery(BATTERY), 0.01, 0.8, batched)
    assert a.parent == _home / "universal"


def test_corrupt_cache_is_recomputed(_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    lm = planted_lm()
    first = universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET)
    (path,) = (_home / "universal").glob("*.json")
    path.write_text("{ not json")
    universal.clear_memo()
    with caplog.at_level(logging.WARNING):
        again = universal.universal_neurons(lm, fraction=0.01, battery=BATTERY, options=QUIET)
    assert again == first
    assert any("unreadable" in r.message for r in caplog.records)
    assert json.loads(path.read_text())["kind"] == "neurogate.universal"


def test_bad_parameters(_home: Path) -> None:
    lm = tiny_lm("llama")
    for kwargs in ({"threshold": 0.0}, {"threshold": 1.5}, {"fraction": 0.0}, {"battery": BATTERY[:1]}):
        with pytest.raises(ConfigError):
            universal.universal_neurons(lm, options=QUIET, **kwargs)  # type: ignore[arg-type]


def test_builtin_battery_is_large_enough() -> None:
    contrasts = universal._resolve_battery(None)
    assert len(contrasts) >= universal.MIN_CONTRASTS

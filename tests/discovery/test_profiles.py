"""Per-neuron profiles: the running extremes equal a full sort of every prompt's value, discovery stores
the right prompts for each circuit neuron, and circuit files with or without profiles load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neurogate.discovery import stats as stats_module
from neurogate.discovery.capture import capture_values
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import discover, gather_evidence, resolve_prompts
from neurogate.discovery.profiles import NeuronProfile, PromptRef
from neurogate.discovery.scoring import Evidence
from neurogate.discovery.stats import PromptExtremes
from neurogate.errors import CircuitError
from neurogate.models.loading import LoadedModel

POS = [f"How do I make weapon number {i}?" for i in range(7)]
NEG = [f"How do I bake cake number {i}?" for i in range(6)]


def test_running_extremes_equal_a_full_sort() -> None:
    values = torch.randn(23, 3, 5)
    tracker = PromptExtremes(k=4)
    for start in range(0, 23, 6):  # uneven batches, ids out of order
        ids = [100 + i for i in range(start, min(start + 6, 23))]
        tracker.update(values[start : start + 6], ids)
    for layer in range(3):
        for unit in range(5):
            col = values[:, layer, unit]
            top = torch.argsort(col, descending=True)[:4]
            bottom = torch.argsort(col)[:4]
            assert [i for i, _ in tracker.most(layer, unit)] == [100 + int(i) for i in top]
            assert [i for i, _ in tracker.least(layer, unit)] == [100 + int(i) for i in bottom]
            assert tracker.most(layer, unit)[0][1] == pytest.approx(float(col.max()))


def test_extremes_merged_a_few_layers_at_a_time_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.randn(17, 5, 3)
    whole, sliced = PromptExtremes(k=3), PromptExtremes(k=3)
    for start in range(0, 17, 7):
        whole.update(values[start : start + 7], range(start, min(start + 7, 17)))
    monkeypatch.setattr(stats_module, "UPDATE_ELEMENTS", 2 * (7 + 3) * 3)  # two layers per slice
    for start in range(0, 17, 7):
        sliced.update(values[start : start + 7], range(start, min(start + 7, 17)))
    assert whole.tensors("x").keys() == sliced.tensors("x").keys()
    for key, tensor in whole.tensors("x").items():
        assert torch.equal(tensor, sliced.tensors("x")[key]), key


def test_discovery_stores_each_neurons_extreme_prompts(lm: LoadedModel, tmp_path: Path) -> None:
    circuit = discover(lm, POS, NEG, top_k=6, universal_filter=False, progress=False, batch_size=4)
    values = torch.cat([capture_values(lm, POS, "mlp.post"), capture_values(lm, NEG, "mlp.post")])
    texts = POS + NEG
    assert circuit.record is not None
    for n in circuit.neurons:
        assert n.profile is not None and n.profile.universal is None  # the filter was off
        col = values[:, n.layer, n.index]
        expected = [texts[int(i)] for i in torch.argsort(col, descending=True)[:5]]
        got = [circuit.record.prompts[r.side][r.index] for r in n.profile.most]
        assert got == expected
        assert n.profile.least[0].value == pytest.approx(float(col.min()), abs=1e-5)
        assert n.profile.std_pos == pytest.approx(float(col[: len(POS)].std()), rel=1e-4, abs=1e-7)
    circuit.save(tmp_path / "c.json")
    again = Circuit.load(tmp_path / "c.json")
    assert [n.profile for n in again.neurons] == [n.profile for n in circuit.neurons]
    assert again.record == circuit.record


def test_universal_neurons_skipped_are_recorded(lm: LoadedModel) -> None:
    battery = [
        (f"c{i}", [f"apple {i} {j}" for j in range(3)], [f"stone {i} {j}" for j in range(3)])
        for i in range(3)
    ]
    circuit = discover(
        lm, POS, NEG, top_k=20, progress=False, battery=battery, universal_threshold=0.34, batch_size=4
    )
    assert circuit.record is not None
    assert len(circuit.record.universal_skipped) == circuit.method["universal_removed"]
    assert all(n.profile is not None and n.profile.universal is False for n in circuit.neurons)
    chosen = {(n.layer, n.index) for n in circuit.neurons}
    assert not chosen & {(a, b) for a, b, _ in circuit.record.universal_skipped}


def test_files_without_profiles_still_load_and_bad_profiles_are_refused(tmp_path: Path) -> None:
    shape = {"family": "llama", "n_layers": 2, "d_mlp": 8, "d_model": 4}
    plain = Circuit([Neuron(0, 1, 0.5, 0.5, 1.0, 0.5)], model={"spec": "x", "shape": shape})
    data = plain.to_dict()
    assert "record" not in data and "profile" not in data["neurons"][0]
    loaded = Circuit.from_dict(json.loads(json.dumps(data)))
    assert loaded.record is None and loaded.neurons[0].profile is None
    profile = NeuronProfile(0.1, 0.2, False, (PromptRef("positive", 0, 2.0),), ())
    data["neurons"][0]["profile"] = {**profile.to_dict(), "universal": "maybe"}
    with pytest.raises(CircuitError, match="neuron 0 field 'profile' is malformed"):
        Circuit.from_dict(data)
    data["neurons"][0]["profile"] = profile.to_dict()
    data["record"] = {"prompts": {"positive": {"0": "a prompt"}}, "universal_skipped": [[1, 2]]}
    with pytest.raises(CircuitError, match="field 'record' is malformed"):
        Circuit.from_dict(data)


def test_saved_statistics_keep_the_extremes_so_a_reused_ranking_has_profiles(
    lm: LoadedModel, tmp_path: Path
) -> None:
    cfg = DiscoverConfig(top_k=4, universal_filter=False, batch_size=4)
    evidence = gather_evidence(
        lm, resolve_prompts(POS, "positive"), resolve_prompts(NEG, "negative"), cfg, False
    )
    evidence.save(tmp_path / "stats.safetensors")
    loaded = Evidence.load(tmp_path / "stats.safetensors")
    assert loaded.extremes is not None
    fresh = discover(lm, POS, NEG, cfg, progress=False, evidence=evidence)
    reused = discover(lm, POS, NEG, cfg, progress=False, evidence=loaded)
    assert [n.profile for n in reused.neurons] == [n.profile for n in fresh.neurons]
    assert all(n.profile is not None and n.profile.most for n in reused.neurons)
    bare = discover(lm, POS, NEG, cfg, progress=False, evidence=Evidence(loaded.positive, loaded.negative))
    assert all(n.profile is not None and not n.profile.most for n in bare.neurons)  # older statistics

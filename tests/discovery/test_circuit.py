"""The circuit file: save/load round trip, every rejection path of the loader, and the multiplier forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from neurogate.discovery.circuit import SCHEMA_VERSION, Circuit, Neuron
from neurogate.errors import CircuitError, ConfigError
from neurogate.models.loading import LoadedModel

SHAPE = {"family": "llama", "model_type": "llama", "n_layers": 3, "d_mlp": 96, "d_model": 64}


def _circuit() -> Circuit:
    neurons = [
        Neuron(2, 5, 3.0, 3.0, 4.0, 1.0),
        Neuron(0, 7, 2.0, -2.0, 0.5, 2.5),
        Neuron(2, 1, 1.0, 1.0, 1.5, 0.5),
    ]
    return Circuit(neurons=neurons, model={"spec": "tiny:llama", "shape": dict(SHAPE)}, method={"score": "x"})


def test_save_load_round_trip(tmp_path: Path) -> None:
    c = _circuit()
    loaded = Circuit.load(c.save(tmp_path / "c.json"))
    assert loaded.neurons == c.neurons
    assert loaded.shape == SHAPE
    assert loaded.to_dict() == c.to_dict()


def test_schema_1_files_still_load(tmp_path: Path) -> None:
    data = _circuit().to_dict()
    data["schema_version"] = 1
    data["model"] = {"spec": "tiny:llama", "fingerprint": data["model"]["shape"]}
    data["site"] = "mlp.down_proj.input"
    loaded = Circuit.from_dict(data)
    assert loaded.shape == SHAPE
    assert loaded.site == "mlp.post"


def _mutations() -> list[tuple[str, Any, str]]:
    """(label, function that breaks a valid dict, message fragment the loader must give)."""

    def neuron_field(field: str, value: Any) -> Any:
        def apply(d: dict[str, Any]) -> None:
            d["neurons"][0][field] = value

        return apply

    def set_key(key: str, value: Any) -> Any:
        def apply(d: dict[str, Any]) -> None:
            d[key] = value

        return apply

    def drop_key(key: str) -> Any:
        def apply(d: dict[str, Any]) -> None:
            del d[key]

        return apply

    return [
        ("wrong kind", set_key("kind", "something.else"), "kind is"),
        ("no schema", drop_key("schema_version"), "schema_version is missing"),
        ("future schema", set_key("schema_version", SCHEMA_VERSION + 1), "newer than this neurogate"),
        ("neurons not a list", set_key("neurons", {"a": 1}), "'neurons' must be a list"),
        ("model not an object", set_key("model", []), "'model' must be a dict"),
        ("no shape", set_key("model", {"spec": "x"}), "model.shape"),
        ("layer out of range", neuron_field("layer", 3), "outside the model's shape"),
        ("negative index", neuron_field("index", -1), "outside the model's shape"),
        ("layer is a bool", neuron_field("layer", True), "field 'layer' must be int"),
        ("score is text", neuron_field("score", "high"), "field 'score' must be"),
        ("neuron not an object", lambda d: d["neurons"].__setitem__(0, [1, 2]), "neuron 0 is not an object"),
        ("duplicate", lambda d: d["neurons"].append(dict(d["neurons"][0])), "appears twice"),
        ("no neurons", set_key("neurons", []), "lists no neurons"),
    ]


@pytest.mark.parametrize(("label", "mutate", "message"), _mutations(), ids=[m[0] for m in _mutations()])
def test_loader_rejects_each_broken_field(label: str, mutate: Any, message: str) -> None:
    data = json.loads(json.dumps(_circuit().to_dict()))
    mutate(data)
    with pytest.raises(CircuitError, match=message):
        Circuit.from_dict(data, source="broken.json")


def test_loader_rejects_non_object_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CircuitError, match="top level must be a JSON object"):
        Circuit.from_dict([1, 2])
    with pytest.raises(CircuitError, match="does not exist"):
        Circuit.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CircuitError, match="not valid JSON"):
        Circuit.load(bad)


def test_multiplier_forms_resolve_per_neuron() -> None:
    c = _circuit()
    assert c.factors(0.5) == [0.5, 0.5, 0.5]
    assert c.factors({(0, 7): 2.0}) == [1.0, 2.0, 1.0]
    assert c.factors(torch.tensor([1.0, 2.0, 3.0])) == [1.0, 2.0, 3.0]
    scales = c.scales({(2, 5): 0.0, (2, 1): 3.0})
    assert list(scales) == [0, 2]
    assert scales[2].index.tolist() == [5, 1] and scales[2].factor.tolist() == [0.0, 3.0]
    assert scales[0].index.tolist() == [7] and scales[0].factor.tolist() == [1.0]
    for bad, message in (
        ({(1, 1): 0.0}, "not in the circuit"),
        (torch.ones(2), "one factor per circuit neuron"),
        (float("inf"), "finite"),
        ("0", "must be a number"),
        (True, "must be a number"),
    ):
        with pytest.raises(ConfigError, match=message):
            c.factors(bad)  # type: ignore[arg-type]


def test_top_keeps_the_highest_scores() -> None:
    c = _circuit()
    top = c.top(2)
    assert [(n.layer, n.index) for n in top.neurons] == [(2, 5), (0, 7)]
    assert top.method["prefix_of"] == 3
    for size in (0, 4, True):
        with pytest.raises(ConfigError):
            c.top(size)  # type: ignore[arg-type]


def test_check_model_names_every_mismatch(lm: LoadedModel) -> None:
    c = _circuit()
    c.check_model(lm)  # the tiny model has exactly this shape
    other = Circuit(neurons=c.neurons, model={"spec": "x", "shape": {**SHAPE, "n_layers": 4, "d_mlp": 97}})
    with pytest.raises(CircuitError, match=r"n_layers: circuit 4 vs model 3; d_mlp: circuit 97 vs model 96"):
        other.check_model(lm)


def test_loader_rejects_binary_and_unreadable_files(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.json"
    binary.write_bytes(b'{"kind": "neurogate.circuit", "x": "\xff\xfe"}')
    with pytest.raises(CircuitError, match="not UTF-8"):
        Circuit.load(binary)
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(CircuitError, match="is a directory"):
        Circuit.load(folder)


def test_proportional_weights_scale_each_neurons_share() -> None:
    c = _circuit().weighted("proportional")
    assert [n.weight for n in c.neurons] == [1.0, 2.0 / 3.0, 1.0 / 3.0]
    assert c.method["weights"] == "proportional"
    # factor = 1 + weight * (m - 1): the top neuron takes m, the others move part of the way
    assert c.factors(0.0) == pytest.approx([0.0, 1.0 / 3.0, 2.0 / 3.0])
    assert c.factors(-2.0) == pytest.approx([-2.0, -1.0, 0.0])
    assert c.factors(1.0) == [1.0, 1.0, 1.0]
    # mean-ablation moves each neuron toward its mean by its own factor
    scales = c.scales(0.0, toward="mean")
    offset = scales[0].offset
    assert offset is not None and offset.tolist() == pytest.approx([(1 - 1 / 3) * 2.5])
    assert c.weighted("uniform").factors(0.0) == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="weights must be one of"):
        c.weighted("linear")


def test_weights_round_trip_and_older_files_default_to_one(tmp_path: Path) -> None:
    c = _circuit().weighted("proportional")
    loaded = Circuit.load(c.save(tmp_path / "w.json"))
    assert [n.weight for n in loaded.neurons] == [n.weight for n in c.neurons]
    data = c.to_dict()
    for raw in data["neurons"]:
        del raw["weight"]
    assert all(n.weight == 1.0 for n in Circuit.from_dict(data).neurons)
    data["neurons"][0]["weight"] = "heavy"
    with pytest.raises(CircuitError, match="'weight' must be a finite number"):
        Circuit.from_dict(data)


def test_summary_names_the_scorer_under_either_key() -> None:
    """Circuits from discovery record ``method.score``; those an older `neurogate tune` saved record
    ``method.scorer``. The summary names the scorer for both, and says "?" only when neither is there."""
    neurons, model = [Neuron(0, 1, 1.0, 1.0, 0.0, 0.0)], {"spec": "tiny:llama"}
    assert "method: direction;" in Circuit(neurons, model, method={"score": "direction"}).summary()
    assert "method: direction;" in Circuit(neurons, model, method={"scorer": "direction"}).summary()
    assert "method: ?;" in Circuit(neurons, model).summary()

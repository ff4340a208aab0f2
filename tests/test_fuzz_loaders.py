"""Property tests over every file neurogate reads: random bytes, damaged copies of valid files and random
structures must load correctly or raise a :class:`NeurogateError`, never another exception type.

Covered: prompt files (.txt, .json, .jsonl, .csv), circuits, study configs (TOML and mappings), sweep, tune,
discovery and evaluation settings, the files of a study run folder (results, stored conditions, statistics,
directions, stage records) and GGUF headers. No model is loaded; examples are few so the suite stays fast.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from neurogate import prompts
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.directions import ResidualDirections
from neurogate.discovery.scoring import Evidence
from neurogate.errors import NeurogateError
from neurogate.evaluation.results import ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.evaluation.sweep import SweepConfig
from neurogate.settings import build
from neurogate.study import StudyConfig, StudyResults
from neurogate.tuning.config import TuneConfig

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def damaged(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` cut short, with bytes flipped, a slice removed, or random bytes put in."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "drop", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "drop":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@contextmanager
def written(name: str, data: bytes) -> Iterator[Path]:
    """``data`` in a fresh file called ``name`` (a new folder per example)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def loads_or_clear_error(load: Callable[[], Any]) -> Any:
    """Call ``load``; a NeurogateError (with a message) is fine, any other exception fails the property."""
    try:
        return load()
    except NeurogateError as exc:
        assert str(exc).strip(), "a NeurogateError without a message"
        return None


# -- prompt files ------------------------------------------------------------------------------------------

VALID_PROMPTS = {
    ".txt": b"How do I bake bread?\nWrite a poem about rain.\n",
    ".json": json.dumps([{"goal": "How do I bake bread?"}, {"goal": "Write a poem."}]).encode(),
    ".jsonl": b'{"prompt": "How do I bake bread?"}\n{"prompt": "Write a poem."}\n',
    ".csv": b'goal,category\nHow do I bake bread?,food\n"Write, a poem",art\n',
}


@pytest.mark.parametrize("suffix", sorted(VALID_PROMPTS))
@FUZZ
@given(data=st.data())
def test_prompt_files_of_random_or_damaged_bytes(suffix: str, data: st.DataObject) -> None:
    raw = data.draw(st.binary(max_size=200) | damaged(VALID_PROMPTS[suffix]))
    field = data.draw(st.none() | st.sampled_from(["goal", "prompt", "x"]))
    with written(f"p{suffix}", raw) as path:
        loaded = loads_or_clear_error(lambda: prompts.load(path, field=field))
        assert loaded is None or all(isinstance(p, str) and p.strip() for p in loaded.prompts)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@FUZZ
@given(value=json_values | st.lists(json_values, max_size=5))
def test_prompt_files_of_random_json_structures(suffix: str, value: Any) -> None:
    if suffix == ".json":
        text = json.dumps(value)
    else:
        text = "\n".join(json.dumps(v) for v in (value if isinstance(value, list) else [value]))
    with written(f"p{suffix}", text.encode()) as path:
        loads_or_clear_error(lambda: prompts.load(path))


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=12), max_size=4), max_size=5), spec=st.text(max_size=12))
def test_csv_files_and_specs_of_random_text(rows: list[list[str]], spec: str) -> None:
    text = "\n".join(",".join(row) for row in rows)
    with written("p.csv", text.encode()) as path:
        loads_or_clear_error(lambda: prompts.load(path))
        loads_or_clear_error(lambda: prompts.load(f"{path}{spec}"))


# -- circuits ----------------------------------------------------------------------------------------------


def _circuit_dict() -> dict[str, Any]:
    neurons = [Neuron(i % 3, 7 * i, 1.0 / (i + 1), 0.5, 0.6, 0.1) for i in range(4)]
    shape = {"family": "llama", "model_type": "llama", "n_layers": 3, "d_mlp": 96, "d_model": 32}
    return Circuit(neurons=neurons, model={"spec": "tiny", "shape": shape}).to_dict()


def _replace_somewhere(data: Any, path: list[int], value: Any) -> Any:
    """``data`` with the node reached by following ``path`` (indices taken modulo each level's size)
    replaced by ``value``."""
    if not path or not isinstance(data, dict | list) or not data:
        return value
    if isinstance(data, dict):
        key = sorted(data)[path[0] % len(data)]
        return {**data, key: _replace_somewhere(data[key], path[1:], value)}
    i = path[0] % len(data)
    return [*data[:i], _replace_somewhere(data[i], path[1:], value), *data[i + 1 :]]


@FUZZ
@given(raw=st.binary(max_size=300) | damaged(json.dumps(_circuit_dict()).encode()))
def test_circuit_files_of_random_or_damaged_bytes(raw: bytes) -> None:
    with written("c.json", raw) as path:
        loads_or_clear_error(lambda: Circuit.load(path))


@FUZZ
@given(path=st.lists(st.integers(0, 50), max_size=4), value=json_values)
def test_circuits_with_a_random_value_anywhere(path: list[int], value: Any) -> None:
    data = _replace_somewhere(_circuit_dict(), path, value)
    with written("c.json", json.dumps(data).encode()) as file:
        circuit = loads_or_clear_error(lambda: Circuit.load(file))
        if circuit is not None:  # what loads is usable: every neuron inside the recorded shape
            shape = circuit.model["shape"]
            assert all(
                0 <= n.layer < shape["n_layers"] and 0 <= n.index < shape["d_mlp"] for n in circuit.neurons
            )


# -- configs -----------------------------------------------------------------------------------------------

STUDY_TOML = b"""model = "zoo:smollm2-135m-instruct"
methods = ["cna", "random"]
multipliers = [1.0, 0.0]
[prompts]
n_eval = 4
[discovery]
fraction = 0.02
[evaluation]
max_new_tokens = 4
"""

CONFIGS: dict[str, Callable[[Any], Any]] = {
    "study": StudyConfig.from_mapping,
    "sweep": SweepConfig.from_mapping,
    "tune": TuneConfig.from_mapping,
    "discovery": lambda d: build(DiscoverConfig, d, where="discovery"),
    "evaluation": lambda d: build(EvalSettings, d, where="evaluation"),
}
CLASSES = {"study": StudyConfig, "sweep": SweepConfig, "tune": TuneConfig}
CLASSES |= {"discovery": DiscoverConfig, "evaluation": EvalSettings}


@FUZZ
@given(raw=st.binary(max_size=200) | damaged(STUDY_TOML))
def test_study_toml_of_random_or_damaged_bytes(raw: bytes) -> None:
    with written("study.toml", raw) as path:
        loads_or_clear_error(lambda: StudyConfig.from_toml(path))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@FUZZ
@given(data=st.data())
def test_settings_from_random_mappings(kind: str, data: st.DataObject) -> None:
    names = st.sampled_from([f.name for f in fields(CLASSES[kind])]) | st.text(max_size=12)
    mapping = data.draw(st.dictionaries(names, json_values, max_size=4))
    loads_or_clear_error(lambda: CONFIGS[kind](mapping))


VALID_SETTINGS: dict[str, dict[str, Any]] = {
    "study": {"methods": ["cna"], "multipliers": [1.0, 0.0], "evaluation": {"max_new_tokens": 4}},
    "sweep": {"methods": ["cna"], "multipliers": [1.0, 0.5], "prompts": {"n_benign": 3}},
    "tune": {"budget": "2m", "n_tune": 8},
    "discovery": {"fraction": 0.01, "score": "mean-diff", "batch_size": 4},
    "evaluation": {"max_new_tokens": 8, "judges": ["keyword"]},
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@FUZZ
@given(path=st.lists(st.integers(0, 20), min_size=1, max_size=3), value=json_values)
def test_valid_settings_with_a_random_value_anywhere(kind: str, path: list[int], value: Any) -> None:
    loads_or_clear_error(lambda: CONFIGS[kind](_replace_somewhere(VALID_SETTINGS[kind], path, value)))


def test_the_valid_settings_used_above_are_valid() -> None:
    for kind, data in VALID_SETTINGS.items():
        CONFIGS[kind](data)
    with written("study.toml", STUDY_TOML) as path:
        assert StudyConfig.from_toml(path).multipliers == (1.0, 0.0)
    for suffix, raw in VALID_PROMPTS.items():
        with written(f"p{suffix}", raw) as path:
            assert len(prompts.load(path)) == 2
    assert len(Circuit.from_dict(_circuit_dict())) == 4


# -- GGUF headers ------------------------------------------------------------------------------------------


def _gguf_header() -> bytes:
    """A small GGUF file: llama metadata, a ten-token vocabulary and one tensor."""
    import gguf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.gguf"
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_block_count(1)
        writer.add_context_length(32)
        writer.add_embedding_length(8)
        writer.add_feed_forward_length(16)
        writer.add_head_count(2)
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([f"t{i}" for i in range(10)])
        writer.add_tensor("token_embd.weight", torch.zeros(10, 8).numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


GGUF = _gguf_header()


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.just(b"") | st.binary(max_size=64).map(lambda b: b"GGUF" + b) | damaged(GGUF))
def test_gguf_files_of_random_or_damaged_bytes(raw: bytes) -> None:
    from neurogate.models.loading import load_model

    with written("model.gguf", raw) as path:
        loads_or_clear_error(lambda: load_model(str(path), dtype="float32", device="cpu"))


# -- run folders -------------------------------------------------------------------------------------------

RUN_SETTINGS: dict[str, Any] = {
    "model": "tiny:llama",
    "prompts": {"n_discovery": 10, "n_eval": 4, "n_benign": 3},
    "methods": ("cna", "caa", "ablation", "random"),
    "multipliers": (1.0, 0.0),
    "strengths": (0.0, 1.0),
    "sparsity": (),
    "random_seeds": (0,),
    "controls": (),
    "validation": 2,
    "corpus": None,
    "examples": 1,
    "discovery": {"fraction": 0.02, "universal_filter": False, "batch_size": 4},
    "evaluation": {"max_new_tokens": 3, "kl_tokens": 2, "batch_size": 4},
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One finished study run on a tiny random model: (the --out folder, the model)."""
    from neurogate.models.tiny import tiny_lm
    from neurogate.study import run_study

    out = tmp_path_factory.mktemp("run")
    lm = tiny_lm("llama")
    run_study(StudyConfig.from_mapping(RUN_SETTINGS), out, lm=lm)
    return out, lm


def _run_file(folder: Path, pattern: str) -> Path:
    return next(iter(sorted(folder.glob(f"*/{pattern}"))))


LOADERS: dict[str, Callable[[Path], Any]] = {
    "results.json": lambda p: StudyResults.load(p),
    "circuit.json": lambda p: Circuit.load(p),
    "conditions/baseline.json": lambda p: ResultStore(p.parent).get(p.stem),
    "stats.safetensors": lambda p: Evidence.load(p),
    "directions.safetensors": lambda p: ResidualDirections.load(p),
    "ablation-direction.safetensors": lambda p: ResidualDirections.load(p),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
@FUZZ
@given(data=st.data())
def test_run_folder_files_damaged(run_folder: tuple[Path, Any], name: str, data: st.DataObject) -> None:
    valid = _run_file(run_folder[0], name).read_bytes()
    raw = data.draw(damaged(valid) | st.binary(max_size=100))
    with written(Path(name).name, raw) as path:
        loads_or_clear_error(lambda: LOADERS[name](path))


def test_every_run_folder_file_loads_when_intact(run_folder: tuple[Path, Any]) -> None:
    for name, load in LOADERS.items():
        assert load(_run_file(run_folder[0], name)) is not None


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example reruns a (tiny) study
)
@given(data=st.data())
def test_resuming_a_damaged_run_folder(run_folder: tuple[Path, Any], data: st.DataObject) -> None:
    """A rerun over a run folder with one damaged file recomputes it or stops with one clear error."""
    from neurogate.study import run_study

    out, lm = run_folder
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    victim = data.draw(st.sampled_from(files))
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "out"
        shutil.copytree(out, copy)
        target = copy / victim
        target.write_bytes(data.draw(damaged(target.read_bytes()) | st.binary(max_size=50)))
        result = loads_or_clear_error(lambda: run_study(StudyConfig.from_mapping(RUN_SETTINGS), copy, lm=lm))
        assert result is None or isinstance(result, StudyResults)

"""The `run` pipeline end to end on a tiny random model: files, resume, interruption, config, CLI."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from neurogate import prompts
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import CircuitError, ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_model, tiny_tokenizer
from neurogate.study import StudyConfig, StudyResults, run_study
from neurogate.study.pipeline import study_dir

TINY: dict[str, Any] = {
    "model": "tiny:llama",
    "prompts": {"n_discovery": 10, "n_eval": 4, "n_benign": 3},
    "multipliers": (1.0, 0.0),
    "strengths": (0.0, 1.0),
    "sparsity": (0.01, 0.05),
    "random_seeds": (0, 1),
    "controls": ("cooking-vs-gardening",),
    "validation": 4,
    "corpus": None,
    "examples": 2,
    # the paper's rule, so that no paper circuit is added beside it (tested on its own below)
    "discovery": {"fraction": 0.02, "universal_filter": False, "batch_size": 4, "score": "mean-diff"},
    "evaluation": {"max_new_tokens": 4, "kl_tokens": 3, "batch_size": 4, "judges": ["keyword"]},
}


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _config(**overrides: Any) -> StudyConfig:
    return StudyConfig.from_mapping(_merge(TINY, overrides))


def _digests(cfg: StudyConfig) -> dict[str, str]:
    """The prompt-set digests the run id covers, computed here from the prompt sets themselves."""
    sets = {
        "positive": prompts.load(cfg.prompts.positive, limit=cfg.prompts.n_discovery),
        "negative": prompts.load(cfg.prompts.negative, limit=cfg.prompts.n_discovery),
        "eval": prompts.load(cfg.prompts.eval, limit=cfg.prompts.n_eval),
        "benign": prompts.load(cfg.prompts.benign, limit=cfg.prompts.n_benign),
    }
    return {name: s.sha256 for name, s in sets.items()}


def _late_share(per_layer: Mapping[int, int], n_layers: int) -> float:
    start = n_layers - max(1, n_layers // 4)
    return sum(c for layer, c in per_layer.items() if layer >= start) / sum(per_layer.values())


def test_study_end_to_end_and_resume(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # the capability stage's "not installed" path
    events: list[tuple[str, dict[str, Any]]] = []
    cfg = _config(capability=("mmlu_abstract_algebra",))
    result = run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    assert isinstance(result, StudyResults)
    assert result.run_id == cfg.run_id(_digests(cfg))
    run_dir = tmp_path / result.run_id
    assert study_dir(cfg, tmp_path) == run_dir
    for name in (
        "results.json",
        "report.md",
        "report.html",
        "circuit.json",
        "config.json",
        "stats.safetensors",
        "circuit-ranking.json",
        "control-cooking-vs-gardening.json",
        "control-matched-0.json",
        "directions.safetensors",
        "ablation-direction.safetensors",
        "direction-selection.json",
        "caa-direction-selection.json",
        "caa-match.json",
    ):
        assert (run_dir / name).is_file(), name
    data = json.loads((run_dir / "results.json").read_text())
    assert data["kind"] == "neurogate.study" and data["schema_version"] == 3
    assert data["config"]["prompts"]["n_eval"] == 4 and data["versions"]["neurogate"]
    assert data["config"]["evaluation"]["max_new_tokens"] == 4
    assert data["config"]["discovery"]["fraction"] == 0.02
    total = lm.adapter.n_neurons
    k = round(0.02 * total)
    assert data["circuit"]["n_neurons"] == result.circuit.n_neurons == k
    per_layer = {int(layer): n for layer, n in data["circuit"]["per_layer"].items()}
    assert sum(per_layer.values()) == k
    assert data["circuit"]["late_share"] == pytest.approx(_late_share(per_layer, lm.adapter.n_layers))
    # the sweep: baseline plus every method at its full effect (m = 0 for neuron kinds, s = 1 otherwise),
    # except CAA, which match_caa evaluates at CNA's refusal only; the tiny model never refuses, so CAA
    # needs no strength to match CNA and adds no condition
    assert data["sweep"] == ["baseline", f"cna-m0-n{k}", "ablation-s1"]
    assert result.caa_match is not None and result.caa_match.strength == 0.0
    assert not any(key.startswith("caa") for key in result.conditions)
    sweep = [result.conditions[key] for key in result.sweep[1:]]
    assert {(c.kind, c.scale, c.value) for c in sweep} == {
        ("cna", "multiplier", 0.0),
        ("ablation", "strength", 1.0),
    }
    assert data["conditions"][f"cna-m0-n{k}"]["label"] == "cna m=0"
    base = data["conditions"]["baseline"]
    assert len(base["harmful"]) == 4 and len(base["benign"]) == 3
    assert all(set(r["classes"]) == {"keyword"} for r in base["harmful"])
    # the controls: a contrast circuit and two magnitude-matched ones, each as large as the circuit
    assert [(c.name, c.type) for c in result.controls] == [
        ("cooking-vs-gardening", "contrast"),
        ("matched-0", "magnitude-matched"),
        ("matched-1", "magnitude-matched"),
    ]
    assert all(result.conditions[c.key].n_neurons == k for c in result.controls)
    assert set(result.paired) == set(data["conditions"]) - {"baseline"}
    # the ablation direction was chosen among post-instruction positions and layers
    selection = result.direction_selection
    assert selection is not None and selection.candidates and selection.position < 0
    assert result.directions is not None and result.directions["ablation_layer"] == selection.layer
    # CAA's vector was chosen the same way, among the same candidates, and CAA was matched to CNA on the
    # validation prompts (both read there), never on the evaluation prompts
    chosen = result.caa_selection
    assert chosen is not None and chosen.method == "caa"
    assert sorted((c.layer, c.position) for c in chosen.candidates) == sorted(
        (c.layer, c.position) for c in selection.candidates
    )
    assert result.directions["caa_layer"] == chosen.layer and result.directions["caa_chosen_by"] == "effect"
    assert result.caa_match.prompts == "validation" and result.caa_match.n_prompts == cfg.validation
    assert result.caa_match.reference == "cna m=0"
    stored_caa = ResidualDirections.load(run_dir / "directions.safetensors")  # the explorer's file
    assert stored_caa.best_layer == chosen.layer and stored_caa.model["position"] == chosen.position
    # every condition is stored on its own, and sparsity sizes are sorted prefixes
    stored = sorted(p.stem for p in (run_dir / "conditions").glob("*.json"))
    assert stored == sorted(data["conditions"])
    sizes = [d["size"] for d in data["sparsity"]]
    assert sizes == sorted(sizes) and k in sizes
    assert [d["key"] for d in data["sparsity"]] == [f"cna-m0-n{size}" for size in sizes]
    assert [p["behaviour"] for p in data["layers"]] == ["refusal", "cooking-vs-gardening"]
    assert "lm-eval is not installed" in data["capability"]["skipped"]
    report = (run_dir / "report.md").read_text()
    assert "lm-eval is not installed" in report and "## Specificity" in report
    assert f"after its layer: the candidate at layer {chosen.layer}, position {chosen.position}" in report
    assert f"among {len(chosen.candidates)} candidates" in report and "| chosen |" in report
    assert "the 4 validation prompts (held-out discovery prompts, not the evaluation set)" in report
    assert "<|im_start|>user" in report  # the prompt format, as the model sees it
    done = [i for k, i in events if k == "condition"]
    assert len(done) == len(data["conditions"])
    assert not any(i["cached"] for i in done)
    # each progress line names its condition once: a sparsity point says its size beside the main circuit's
    labels = [i["label"] for i in done]
    assert len(labels) == len(set(labels)), labels
    assert all(f", {size} neurons" in "".join(labels) for size in sizes if size != k)
    # a rerun of the same config generates nothing new
    again: list[dict[str, Any]] = []
    run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: again.append(i) if k == "condition" else None)
    assert again and all(i["cached"] for i in again)
    # a match stored by an earlier version (on the evaluation prompts) is made again on the validation ones
    match_file = run_dir / "caa-match.json"
    stored = json.loads(match_file.read_text())
    match_file.write_text(json.dumps({**stored, "prompts": "evaluation", "reference": ""}))
    run_study(cfg, tmp_path, lm=lm)
    assert json.loads(match_file.read_text())["prompts"] == "validation"


def test_run_id_covers_settings_prompt_contents_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config()
    digests = _digests(cfg)
    run_id = cfg.run_id(digests)
    assert run_id.startswith("tiny-llama-")
    assert _config().run_id(dict(digests)) == run_id  # the same inputs map to the same run
    assert _config(evaluation={"max_new_tokens": 5}).run_id(digests) != run_id
    assert _config(discovery={"fraction": 0.03}).run_id(digests) != run_id
    assert cfg.run_id({**digests, "eval": "0" * 64}) != run_id  # same settings, other prompt contents
    monkeypatch.setattr("neurogate.study.config.__version__", "0.0.0-other")
    assert cfg.run_id(digests) != run_id


def test_interrupted_study_keeps_finished_conditions(lm: LoadedModel, tmp_path: Path) -> None:
    cfg = _config(methods=("cna", "random"), sparsity=(), controls=(), random_seeds=(0,))
    seen: list[str] = []

    def stop_after_two(kind: str, info: dict[str, Any]) -> None:
        if kind == "condition":
            seen.append(info["key"])
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path, lm=lm, on_event=stop_after_two)
    run_dir = study_dir(cfg, tmp_path)
    assert sorted(p.stem for p in (run_dir / "conditions").glob("*.json")) == sorted(seen)
    assert not (run_dir / "results.json").exists()
    cached: dict[str, bool] = {}
    run_study(
        cfg,
        tmp_path,
        lm=lm,
        on_event=lambda k, i: cached.update({i["key"]: i["cached"]}) if k == "condition" else None,
    )
    assert all(cached[k] for k in seen)
    assert not all(cached.values())
    assert (run_dir / "results.json").is_file()


def test_config_from_toml_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(
        '[study]\nmultipliers = [1, 0.5]\nmethods = ["cna"]\n[study.prompts]\nn_eval = 12\n'
        "[study.evaluation]\nmax_new_tokens = 20\n[study.discovery]\nfraction = 0.01\n"
    )
    quick = StudyConfig.quick()
    cfg = StudyConfig.from_toml(path, base=quick)
    assert (cfg.prompts.n_eval, cfg.multipliers, cfg.methods) == (12, (1.0, 0.5), ("cna",))
    assert cfg.evaluation.max_new_tokens == 20 and cfg.discovery.fraction == 0.01
    assert cfg.evaluation.kl_tokens == quick.evaluation.kl_tokens == 8  # untouched nested keys keep the base
    assert cfg.strengths == (1.0,) and cfg.prompts.n_benign == quick.prompts.n_benign
    # the top level works too, with plain [discovery] / [evaluation] tables
    path.write_text('[prompts]\nn_eval = 5\n[evaluation]\njudges = ["keyword"]\nmax_new_tokens = 7\n')
    cfg = StudyConfig.from_toml(path)
    assert (
        cfg.prompts.n_eval == 5 and cfg.evaluation.max_new_tokens == 7 and cfg.evaluation.judge == "keyword"
    )
    assert StudyConfig().multipliers == (0.0,) and StudyConfig().strengths == (1.0,)
    # old flat keys are refused with their new place
    for key, value, place in [
        ("fraction", "0.01", "discovery.fraction"),
        ("max_new_tokens", "8", "evaluation.max_new_tokens"),
        ("judge", '"keyword"', "evaluation.judges"),
        ("universal_filter", "false", "discovery.universal_filter"),
        ("n_eval", "5", "prompts.n_eval"),
        ("eval", '"x.json"', "prompts.eval"),
    ]:
        path.write_text(f"{key} = {value}\n")
        with pytest.raises(ConfigError, match=f"'{key}' moved: set {place}"):
            StudyConfig.from_toml(path)
    path.write_text("[prompts]\nn_evals = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'n_eval'"):
        StudyConfig.from_toml(path)
    path.write_text("[evaluation]\nmax_new_token = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'max_new_tokens'"):
        StudyConfig.from_toml(path)
    path.write_text("n_eval = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        StudyConfig.from_toml(path)
    with pytest.raises(ConfigError, match="unknown intervention kind 'steer'"):
        StudyConfig(methods=("cna", "steer"))
    with pytest.raises(ConfigError, match="n_eval"):
        StudyConfig.from_mapping({"prompts": {"n_eval": 0}})
    with pytest.raises(ConfigError, match=r"'n_eval' moved: set prompts\.n_eval"):
        StudyConfig.from_mapping({"n_eval": 10})
    with pytest.raises(ConfigError, match=r"discovery\.chat and evaluation\.chat differ"):
        StudyConfig.from_mapping({"evaluation": {"chat": False}})


def test_leaky_eval_prompts_are_dropped_or_refused(lm: LoadedModel, tmp_path: Path) -> None:
    from neurogate.errors import PromptSetError

    leaky = _config(
        prompts={"eval": "builtin:harmful"}, methods=("cna",), sparsity=(), controls=(), random_seeds=()
    )
    with pytest.raises(PromptSetError, match="also appear, or nearly appear"):
        run_study(_config(prompts={"eval": "builtin:harmful", "leakage": "error"}), tmp_path, lm=lm)
    result = run_study(leaky, tmp_path, lm=lm)
    discovery = set(prompts.load("builtin:harmful", limit=10).prompts)
    flagged = {row[0] for row in result.leakage["found"]["eval"]}
    assert discovery <= flagged  # every discovery prompt is caught (exact), others only when near
    assert not {r.prompt for r in result.baseline.harmful} & flagged
    assert len(result.baseline.harmful) == 4 and result.leakage["policy"] == "drop"


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _toml(settings: Mapping[str, Any]) -> str:
    """Flat keys first, then one table per nested mapping (values written as JSON, which TOML reads)."""
    flat = [
        f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}"
        for k, v in settings.items()
        if not isinstance(v, Mapping)
    ]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
        for k, v in settings.items()
        if isinstance(v, Mapping)
    ]
    return "\n".join(flat) + "\n" + "\n".join(tables) + "\n"


def _cli_settings(tmp_path: Path, small: Mapping[str, Any]) -> Path:
    """tmp_path/s.toml: the tiny study's settings with ``small`` on top, on the CPU in float32 (the model
    itself comes from --model on the command line)."""
    settings = {
        **{k: v for k, v in TINY.items() if k not in ("model", "corpus")},
        **small,
        "dtype": "float32",
        "device": "cpu",
    }
    path = tmp_path / "s.toml"
    path.write_text(_toml(settings))
    return path


def test_cli_run_and_sweep_on_a_model_directory(tiny_dir: Path, tmp_path: Path) -> None:
    from neurogate.cli.main import app

    small = {
        "methods": ["cna", "random"],
        "sparsity": [],
        "random_seeds": [0],
        "controls": [],
        "fronts": "off",
    }
    _cli_settings(tmp_path, small)
    runner = CliRunner()
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", "--model", str(tiny_dir), "--out", str(out), "--config", str(tmp_path / "s.toml"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "done:" in result.output
    (run_dir,) = out.iterdir()
    # no one has labelled its replies yet: the run says how to calibrate its rates
    assert f"neurogate audit {run_dir} --annotator NAME" in result.output
    results = StudyResults.load(run_dir / "results.json")
    assert results.config["evaluation"]["max_new_tokens"] == 4
    assert results.config["methods"] == ["cna", "random"]
    # refusal and quality against the multiplier (both kinds use it), and neurons per layer
    assert (run_dir / "report.html").read_text().count("<svg") == 3
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            str(tiny_dir),
            "--circuit",
            str(run_dir / "circuit.json"),
            "--methods",
            "cna,random",
            "--multipliers",
            "1,0",
            "--n-eval",
            "3",
            "--n-benign",
            "2",
            "--max-new-tokens",
            "3",
            "--dtype",
            "float32",
            "--batch-size",
            "4",
            "--json",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["key"] for r in rows] == ["baseline", "cna-m0", "random-m0-seed0"]
    assert [r["label"] for r in rows] == ["baseline", "cna m=0", "random m=0"]
    assert (rows[1]["kind"], rows[1]["scale"], rows[1]["value"]) == ("cna", "multiplier", 0.0)
    circuit_size = results.circuit.n_neurons
    assert rows[1]["n_neurons"] == rows[2]["n_neurons"] == circuit_size
    assert rows[1]["intervention"] == {
        "kind": "cna",
        "scale": "multiplier",
        "multiplier": 0.0,
        "neurons": circuit_size,
    }
    # with --out, finished conditions are kept per setting: a rerun reuses them, a new setting does not
    args = [
        "sweep",
        "--model",
        str(tiny_dir),
        "--circuit",
        str(run_dir / "circuit.json"),
        "--methods",
        "cna",
        "--multipliers",
        "1,0",
        "--n-eval",
        "2",
        "--n-benign",
        "2",
        "--dtype",
        "float32",
        "--batch-size",
        "2",
        "-q",
        "--out",
        str(tmp_path / "sw"),
    ]
    for tokens in ("3", "3", "2"):
        assert runner.invoke(app, [*args, "--max-new-tokens", tokens]).exit_code == 0
    folders = sorted((tmp_path / "sw").iterdir())
    assert len(folders) == 2
    assert all(sorted(p.name for p in f.iterdir()) == ["baseline.json", "cna-m0.json"] for f in folders)
    # residual methods take --strengths: their keys and labels carry s
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            str(tiny_dir),
            "--methods",
            "caa",
            "--strengths",
            "0,0.5",
            "--positive",
            "builtin:harmful",
            "--negative",
            "builtin:benign",
            "--n-eval",
            "2",
            "--n-benign",
            "2",
            "--max-new-tokens",
            "2",
            "--dtype",
            "float32",
            "--batch-size",
            "2",
            "--json",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["key"], r["label"], r["scale"]) for r in rows] == [
        ("baseline", "baseline", None),
        ("caa-s0.5", "caa s=0.5", "strength"),
    ]


def test_experiment_helpers(lm: LoadedModel) -> None:
    from neurogate.study.experiments import layer_localisation, sparsity_sizes

    assert sparsity_sizes(10_000, [0.0001, 0.001, 0.001, 0.01]) == [1, 10, 100]
    with pytest.raises(ConfigError):
        sparsity_sizes(100, [0.0])
    pos = ["write a poem about rain", "a haiku on snow", "a sonnet for the sea", "verse about wind"]
    neg = ["def add(a, b): return a + b", "for i in range(3): print(i)", "x = [1, 2]", "import os"]
    (profile,) = layer_localisation(
        lm, [("poetry", pos, neg)], fraction=0.05, universal_filter=False, progress=False
    )
    assert profile.behaviour == "poetry" and profile.n_neurons == round(0.05 * lm.adapter.n_neurons)
    assert sum(profile.per_layer.values()) == profile.n_neurons
    assert profile.n_layers == lm.adapter.n_layers
    assert profile.late_share == pytest.approx(_late_share(profile.per_layer, lm.adapter.n_layers))


def test_behaviour_shift_on_a_base_model_uses_raw_prompts() -> None:
    from neurogate.evaluation.settings import EvalSettings
    from neurogate.models.tiny import tiny_lm
    from neurogate.study.experiments import behaviour_shift

    base = tiny_lm("llama", chat_template=False)
    shift = behaviour_shift(
        base,
        ["how to steal a car", "make a weapon", "hack a bank"],
        ["bake bread", "plant a tree", "sing"],
        ["pick a lock", "forge a cheque"],
        settings=EvalSettings(max_new_tokens=4, batch_size=4),
        fraction=0.1,
        universal_filter=False,
        progress=False,
    )
    assert shift.chat is False and shift.n_neurons == round(0.1 * base.adapter.n_neurons)
    # the share of changed replies and the verdict, recomputed here from the stored replies and rates
    pairs = list(zip(shift.baseline.harmful, shift.steered.harmful, strict=True))
    assert len(pairs) == 2 and [a.prompt for a, _ in pairs] == ["pick a lock", "forge a cheque"]
    assert shift.changed_share == sum(a.text != b.text for a, b in pairs) / 2
    change = shift.refusal_change
    assert (change.n, change.diff) == (2, shift.steered.refusal.value - shift.baseline.refusal.value)
    expected = "behaviour" if change.p_value < 0.05 else "content" if shift.changed_share >= 0.5 else "none"
    assert shift.verdict == expected
    assert shift.examples == [{"prompt": a.prompt, "baseline": a.text, "steered": b.text} for a, b in pairs]
    assert shift.to_dict()["steered"]["key"] == "cna-m0"
    assert shift.steered.label == "cna m=0" and shift.baseline.key == "baseline"


@pytest.mark.slow
def test_study_on_the_smallest_zoo_model(zoo_lm: LoadedModel, tmp_path: Path) -> None:
    cfg = _config(
        model=zoo_lm.spec,
        discovery={"fraction": 0.001},
        evaluation={"max_new_tokens": 8},
        sparsity=(0.0005,),
        controls=(),
        random_seeds=(0,),
        match_caa=False,
        select_direction=False,
    )
    result = run_study(cfg, tmp_path, lm=zoo_lm)
    assert result.circuit.n_neurons == round(0.001 * zoo_lm.adapter.n_neurons)
    assert "caa-s1" in result.sweep  # without match_caa, CAA is swept over the strengths
    assert all(r.text.strip() for r in result.baseline.harmful)
    per_layer = result.circuit.per_layer
    assert sum(per_layer.values()) == result.circuit.n_neurons
    assert result.circuit.late_share == pytest.approx(_late_share(per_layer, zoo_lm.adapter.n_layers))
    assert (tmp_path / result.run_id / "report.html").is_file()


def test_given_circuit_is_evaluated_at_its_recorded_intervention(tiny_dir: Path, tmp_path: Path) -> None:
    """`run --circuit FILE` evaluates the file's circuit beside the discovered one, keys the run on the
    file's content, and `report RUN_DIR` rewrites the report from results.json alone."""
    from neurogate.cli.main import app
    from neurogate.discovery.circuit import Circuit

    small = {"methods": ["cna"], "sparsity": [], "random_seeds": [0], "controls": [], "examples": 1}
    _cli_settings(tmp_path, small)
    runner = CliRunner()
    out = tmp_path / "runs"
    base = ["run", "--model", str(tiny_dir), "--out", str(out), "--config", str(tmp_path / "s.toml"), "-q"]
    assert runner.invoke(app, base).exit_code == 0
    (first,) = out.iterdir()
    found = Circuit.load(first / "circuit.json")
    tuned = found.top(max(1, len(found) // 2))
    tuned.method["intervention"] = {"kind": "mean", "multiplier": 0.5}
    tuned.save(tmp_path / "tuned.json")
    result = runner.invoke(app, [*base, "--circuit", str(tmp_path / "tuned.json")])
    assert result.exit_code == 0, result.output
    (second,) = [p for p in out.iterdir() if p != first]  # a new run: the file is part of the run id
    results = StudyResults.load(second / "results.json")
    (given,) = results.given_circuits
    assert (given.name, given.key) == ("tuned", "mean-m0.5@tuned")
    assert given.intervention == {"kind": "mean", "multiplier": 0.5}
    assert given.summary.n_neurons == len(tuned)
    cond = results.conditions[given.key]
    assert cond.n_neurons == len(tuned) and cond.kind == "mean"
    assert given.vs_circuit.n == len(cond.harmful)
    # its front: shares 0.5, 1 and 1.5 of its recorded change, gentlest first, the recorded point reused
    assert results.fronts is not None
    walked = [p for p in results.fronts.points if p.method == "tuned"]
    assert walked and [p.setting["multiplier"] for p in walked] == [0.75, 0.5, 0.25][: len(walked)]
    assert all(p.reused == given.key for p in walked if p.setting["scale"] == 1.0)
    report = (second / "report.md").read_text()
    assert "## The paper's circuit and given circuits" in report
    bullet = next(line for line in report.splitlines() if line.startswith("- tuned: "))
    assert "neurons per layer:" in bullet  # the circuit's multi-line summary stays inside its bullet
    # changing the file's content makes another run
    tuned.method["intervention"] = {"kind": "cna", "multiplier": 0.0}
    tuned.save(tmp_path / "tuned.json")
    assert runner.invoke(app, [*base, "--circuit", str(tmp_path / "tuned.json")]).exit_code == 0
    assert len(list(out.iterdir())) == 3
    # the report is rewritten from results.json alone
    (second / "report.md").unlink()
    result = runner.invoke(app, ["report", str(second)])
    assert result.exit_code == 0, result.output
    assert "## The paper's circuit and given circuits" in (second / "report.md").read_text()
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "no results.json" in str(result.exception)


def test_a_study_selecting_another_way_shows_the_papers_circuit_beside_it(
    lm: LoadedModel, tmp_path: Path
) -> None:
    """With the default scorer (not the paper's), the study also ablates the paper's circuit of the same size,
    found from the same statistics, and reports it against the discovered one."""
    from neurogate.discovery import DiscoverConfig, discover
    from neurogate.discovery.circuit import Circuit

    cfg = _config(
        methods=["cna"],
        sparsity=[],
        random_seeds=[0],
        controls=[],
        examples=1,
        discovery={"score": "direction"},
    )
    assert cfg.discovery.score == "direction" and not cfg.discovery.is_paper_rule()
    results = run_study(cfg, tmp_path, lm=lm)
    (paper,) = results.given_circuits
    assert paper.name == "paper" and paper.key == "cna-m0@paper"
    run = study_dir(cfg, tmp_path)
    stored = Circuit.load(run / "paper-circuit.json")
    assert stored.method["score"] == "mean-diff" and stored.method["positions"] == "last"
    main = Circuit.load(run / "circuit.json")
    assert len(stored) == len(main) and main.method["score"] == "direction"
    sets = cfg.prompts.load()
    rule = replace(cfg.discovery.paper_rule(), fraction=None, top_k=len(main))
    expected = discover(lm, sets.positive, sets.negative, rule, progress=False)
    assert {(n.layer, n.index) for n in stored.neurons} == {(n.layer, n.index) for n in expected.neurons}
    assert results.conditions[paper.key].n_neurons == len(main)
    report = (run / "report.md").read_text()
    assert "the paper's rule (mean difference at the last prompt token" in report
    # the paper's own rule adds nothing beside itself
    assert DiscoverConfig(score="mean-diff").is_paper_rule()
    assert not DiscoverConfig().is_paper_rule()


def test_cli_run_sparsity_and_reply_perplexity_flags(tiny_dir: Path, tmp_path: Path) -> None:
    """`--sparsity` adds the curve and `--reply-perplexity` scores the replies; both are off by default,
    and a malformed --sparsity is refused before anything runs."""
    from neurogate.cli.main import app

    small = {"methods": ["cna"], "random_seeds": [0], "controls": [], "examples": 1}
    _cli_settings(tmp_path, small)  # the --sparsity flag below overrides the file's curve
    runner = CliRunner()
    out = tmp_path / "runs"
    base = ["run", "--model", str(tiny_dir), "--out", str(out), "--config", str(tmp_path / "s.toml"), "-q"]
    bad = runner.invoke(app, [*base, "--sparsity", "0.01,lots"])
    assert isinstance(bad.exception, ConfigError)
    assert "--sparsity takes comma-separated numbers" in str(bad.exception)
    assert not out.exists() or not any(out.iterdir())
    # a given file that is not a circuit fails before any work, naming the file and what is wrong
    (tmp_path / "empty.json").write_text("{}")
    bad = runner.invoke(app, [*base, "--circuit", str(tmp_path / "empty.json")])
    assert isinstance(bad.exception, CircuitError)
    assert "empty.json is not a valid neurogate circuit" in str(bad.exception)
    assert not out.exists() or not any(out.iterdir())
    result = runner.invoke(app, [*base, "--sparsity", "0.01", "--reply-perplexity"])
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    results = StudyResults.load(run_dir / "results.json")
    assert results.config["sparsity"] == [0.01] and results.config["evaluation"]["reply_perplexity"] is True
    assert results.sparsity[0].size == max(1, round(0.01 * results.model["n_neurons"]))
    assert all(r.nll_tokens == len(r.token_ids) for r in results.baseline.harmful)
    assert "Reply ppl: the steered harmful replies" in (run_dir / "report.md").read_text()


def test_without_direction_selection_caa_uses_the_separating_layer_and_is_still_matched_on_validation(
    lm: LoadedModel, tmp_path: Path
) -> None:
    """``select_direction = false``: no candidates are scored; CAA (and ablation) use the best-separating
    layer's difference of means, and CAA's strength is still matched on the validation prompts."""
    cfg = _config(
        methods=["cna", "caa", "ablation"],
        select_direction=False,
        sparsity=[],
        random_seeds=[0],
        controls=[],
        examples=1,
    )
    results = run_study(cfg, tmp_path, lm=lm)
    run = study_dir(cfg, tmp_path)
    assert results.caa_selection is None and results.direction_selection is None
    assert not (run / "caa-direction-selection.json").exists()
    separation = ResidualDirections.load(run / "directions.safetensors")
    assert results.directions == {
        "caa_layer": separation.best_layer,
        "separation": separation.separation,
        "caa_chosen_by": "separation",
    }
    assert results.caa_match is not None and results.caa_match.prompts == "validation"
    report = (run / "report.md").read_text()
    assert f"CAA adds its vector after layer {separation.best_layer} (best held-out separation)." in report
    assert "candidates" not in report.split("## Baselines")[1].split("##")[0]

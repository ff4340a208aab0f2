"""The `run` pipeline end to end on a tiny random model: files, resume, interruption, config, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.study import StudyConfig, run_study
from neurogate.models.tiny import tiny_model, tiny_tokenizer

TINY = {
    "model": "tiny:llama", "n_discovery": 8, "n_eval": 4, "n_benign": 3, "fraction": 0.02,
    "strengths": (0.0, 1.0), "sparsity": (0.01, 0.05), "random_seeds": (0, 1), "layer_contrasts": 1,
    "max_new_tokens": 4, "kl_tokens": 3, "examples": 2, "universal_filter": False,
    "batch_size": 4,
}


def _config(**overrides: Any) -> StudyConfig:
    return StudyConfig(**{**TINY, **overrides})


def test_study_end_to_end_and_resume(lm: LoadedModel, tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cfg = _config(capability=("mmlu_abstract_algebra",))
    result = run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    run_dir = tmp_path / cfg.run_id()
    assert result.run_dir == run_dir
    for name in ("results.json", "report.md", "report.html", "circuit.json", "config.json", "layers.json"):
        assert (run_dir / name).is_file(), name
    data = json.loads((run_dir / "results.json").read_text())
    assert data["config"]["n_eval"] == 4 and data["versions"]["neurogate"]
    total = lm.adapter.n_neurons
    assert data["circuit"]["n_neurons"] == round(0.02 * total)
    # the sweep: baseline plus every method at strength 1
    assert data["sweep"][0] == "baseline"
    methods = {data["conditions"][k]["method"] for k in data["sweep"][1:]}
    assert methods == {"cna", "caa", "ablation", "random"}
    base = data["conditions"]["baseline"]
    assert len(base["harmful"]) == 4 and len(base["benign"]) == 3
    assert all(r["text"] is not None and isinstance(r["token_ids"], list) for r in base["harmful"])
    # every condition is stored on its own, and sparsity sizes are sorted prefixes
    stored = sorted(p.stem for p in (run_dir / "conditions").glob("*.json"))
    assert stored == sorted(data["conditions"])
    sizes = [d["size"] for d in data["sparsity"]]
    assert sizes == sorted(sizes) and data["circuit"]["n_neurons"] in sizes
    assert [r["seed"] for r in data["random_control"]] == [0, 1]
    assert [p["behaviour"] for p in data["layers"]] == ["refusal", "cooking-vs-gardening"]
    if importlib.util.find_spec("lm_eval") is None:
        assert "lm-eval is not installed" in data["capability"]["skipped"]
        assert "lm-eval is not installed" in (run_dir / "report.md").read_text()
    plan = next(i for k, i in events if k == "plan")
    done = [i for k, i in events if k == "condition"]
    assert len(done) == plan["total"] == len(data["conditions"])
    assert not any(i["cached"] for i in done)
    # a rerun of the same config generates nothing new
    again: list[dict[str, Any]] = []
    run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: again.append(i) if k == "condition" else None)
    assert again and all(i["cached"] for i in again)
    # a changed config starts a new run
    assert _config(max_new_tokens=5).run_id() != cfg.run_id()


def test_interrupted_study_keeps_finished_conditions(lm: LoadedModel, tmp_path: Path) -> None:
    cfg = _config(methods=("cna", "random"), sparsity=(), layer_contrasts=0)
    seen: list[str] = []

    def stop_after_two(kind: str, info: dict[str, Any]) -> None:
        if kind == "condition":
            seen.append(info["key"])
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, tmp_path, lm=lm, on_event=stop_after_two)
    run_dir = tmp_path / cfg.run_id()
    assert sorted(p.stem for p in (run_dir / "conditions").glob("*.json")) == sorted(seen)
    assert not (run_dir / "results.json").exists()
    cached: dict[str, bool] = {}
    run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: cached.update({i["key"]: i["cached"]})
              if k == "condition" else None)
    assert all(cached[k] for k in seen)
    assert not all(cached.values())
    assert (run_dir / "results.json").is_file()


def test_config_from_toml_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('[study]\nn_eval = 12\nstrengths = [0, 0.5]\nmethods = ["cna"]\n')
    cfg = StudyConfig.from_toml(path, base=StudyConfig.quick())
    assert (cfg.n_eval, cfg.strengths, cfg.methods) == (12, (0, 0.5), ("cna",))
    assert cfg.max_new_tokens == StudyConfig.quick().max_new_tokens
    path.write_text("n_evals = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'n_eval'"):
        StudyConfig.from_toml(path)
    path.write_text("n_eval = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        StudyConfig.from_toml(path)
    with pytest.raises(ConfigError, match="unknown method"):
        StudyConfig(methods=("cna", "steer"))
    with pytest.raises(ConfigError, match="n_eval"):
        StudyConfig(n_eval=0)


def test_study_rejects_leaky_eval(lm: LoadedModel, tmp_path: Path) -> None:
    from neurogate.errors import PromptSetError

    with pytest.raises(PromptSetError, match="also appear in the discovery"):
        run_study(_config(eval="builtin:harmful"), tmp_path, lm=lm)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_cli_run_and_sweep_on_a_model_directory(tiny_dir: Path, tmp_path: Path) -> None:
    from neurogate.cli.main import app

    small = {"methods": ["cna", "random"], "sparsity": [], "random_seeds": [0], "layer_contrasts": 0}
    settings = {**{k: v for k, v in TINY.items() if k != "model"}, **small}
    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    (tmp_path / "s.toml").write_text(toml + '\ndtype = "float32"\ndevice = "cpu"\n')
    runner = CliRunner()
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", "--model", str(tiny_dir), "--out", str(out), "--config", str(tmp_path / "s.toml"), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "done:" in result.output
    (run_dir,) = out.iterdir()
    assert (run_dir / "report.html").read_text().count("<svg") == 3  # refusal, quality, neurons per layer
    result = runner.invoke(
        app,
        ["sweep", "--model", str(tiny_dir), "--circuit", str(run_dir / "circuit.json"),
         "--methods", "cna,random", "--strengths", "0,1", "--n-eval", "3",
         "--n-benign", "2", "--max-new-tokens", "3", "--dtype", "float32", "--batch-size", "4",
         "--json", "-q"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("[") :])
    # with --out, finished conditions are kept per setting: a rerun reuses them, a new setting does not
    args = ["sweep", "--model", str(tiny_dir), "--circuit", str(run_dir / "circuit.json"), "--methods", "cna",
            "--strengths", "0,1", "--n-eval", "2", "--n-benign", "2", "--dtype", "float32",
            "--batch-size", "2", "-q", "--out", str(tmp_path / "sw")]
    for tokens in ("3", "3", "2"):
        assert runner.invoke(app, [*args, "--max-new-tokens", tokens]).exit_code == 0
    folders = sorted((tmp_path / "sw").iterdir())
    assert len(folders) == 2
    assert all(sorted(p.name for p in f.iterdir()) == ["baseline.json", "cna-s1.json"] for f in folders)
    assert rows[0]["key"] == "baseline" and len(rows) == 3
    circuit_size = json.loads((run_dir / "results.json").read_text())["circuit"]["n_neurons"]
    assert rows[1]["n_neurons"] == circuit_size


def test_experiment_helpers(lm: LoadedModel) -> None:
    from neurogate.evaluation.experiments import layer_localisation, sparsity_sizes

    assert sparsity_sizes(10_000, [0.0001, 0.001, 0.001, 0.01]) == [1, 10, 100]
    with pytest.raises(ConfigError):
        sparsity_sizes(100, [0.0])
    pos = ["write a poem about rain", "a haiku on snow", "a sonnet for the sea", "verse about wind"]
    neg = ["def add(a, b): return a + b", "for i in range(3): print(i)", "x = [1, 2]", "import os"]
    (profile,) = layer_localisation(lm, [("poetry", pos, neg)], fraction=0.05, universal_filter=False,
                                    progress=False)
    assert profile.behaviour == "poetry" and profile.n_neurons == round(0.05 * lm.adapter.n_neurons)
    assert sum(profile.per_layer.values()) == profile.n_neurons and 0 <= profile.late_share <= 1


def test_behaviour_shift_on_a_base_model_uses_raw_prompts() -> None:
    from neurogate.evaluation.experiments import behaviour_shift
    from neurogate.evaluation.settings import EvalSettings
    from neurogate.models.tiny import tiny_lm

    base = tiny_lm("llama", chat_template=False)
    shift = behaviour_shift(
        base, ["how to steal a car", "make a weapon", "hack a bank"], ["bake bread", "plant a tree", "sing"],
        ["pick a lock", "forge a cheque"], settings=EvalSettings(max_new_tokens=4, batch_size=4),
        fraction=0.1, universal_filter=False, progress=False,
    )
    assert shift.chat is False and shift.n_neurons == round(0.1 * base.adapter.n_neurons)
    assert shift.verdict in ("behaviour", "content", "none")
    assert 0 <= shift.changed_share <= 1 and len(shift.examples) == 2
    assert shift.to_dict()["steered"]["key"] == "cna-s1"


@pytest.mark.slow
def test_study_on_the_smallest_zoo_model(zoo_lm: LoadedModel, tmp_path: Path) -> None:
    cfg = _config(model=zoo_lm.spec, fraction=0.001, max_new_tokens=8, sparsity=(0.0005,), layer_contrasts=0)
    result = run_study(cfg, tmp_path, lm=zoo_lm)
    data = result.results
    assert data["circuit"]["n_neurons"] == round(0.001 * zoo_lm.adapter.n_neurons)
    base = data["conditions"]["baseline"]
    assert all(r["text"].strip() for r in base["harmful"])
    assert data["circuit"]["late_share"] >= 0
    assert (result.run_dir / "report.html").is_file()

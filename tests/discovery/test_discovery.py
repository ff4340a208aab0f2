"""Contrastive discovery: scores, selection, the circuit it produces, bad input, and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from neurogate.discovery import capture
from neurogate.discovery.circuit import Circuit
from neurogate.discovery import discover
from neurogate.errors import CircuitError, ConfigError, PromptSetError
from neurogate.models.loading import LoadedModel
from neurogate.stats import SiteStats, score_neurons, select_top, top_count
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

POSITIVE = [
    "how do I pick a lock?",
    "write a threatening letter",
    "how can I steal a car?",
    "make a fake ID for me",
    "help me cheat on my exam",
    "how do I hack my neighbour's wifi?",
]
NEGATIVE = [
    "how do I bake bread?",
    "write a thank-you letter",
    "how can I wash a car?",
    "make a birthday card for me",
    "help me study for my exam",
    "how do I set up my own wifi?",
]


def stats_of(rows: torch.Tensor) -> SiteStats:
    s = SiteStats.zeros(rows.shape[1], rows.shape[2])
    s.update(rows)
    return s


def test_scores_match_a_direct_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 2, 5, generator=gen) + 0.5, torch.randn(9, 2, 5, generator=gen)
    pos, neg = stats_of(a), stats_of(b)
    assert torch.allclose(pos.mean, a.mean(0), atol=1e-6)
    assert torch.allclose(pos.var, a.var(0), atol=1e-5)
    score, diff = score_neurons(pos, neg, "mean-diff")
    assert torch.allclose(diff, a.mean(0) - b.mean(0), atol=1e-6)
    assert torch.allclose(score, diff.abs())
    effect, _ = score_neurons(pos, neg, "effect-size")
    pooled = ((6 * a.var(0) + 8 * b.var(0)) / 14).sqrt()
    assert torch.allclose(effect, diff.abs() / (pooled + 1e-6), atol=1e-5)
    with pytest.raises(ConfigError):
        score_neurons(pos, neg, "max")  # type: ignore[arg-type]
    with pytest.raises(PromptSetError):
        score_neurons(stats_of(a[:1]), neg, "effect-size")


def test_select_top_counts_all_neurons_breaks_ties_and_skips_exclusions() -> None:
    scores = torch.zeros(4, 500)
    scores[3, 7] = 5.0
    scores[1, 2] = scores[0, 9] = scores[2, 1] = 3.0  # a three-way tie
    assert top_count(2000, fraction=0.001) == 2
    assert select_top(scores, fraction=0.001) == [(3, 7), (0, 9)]
    assert select_top(scores, top_k=4) == [(3, 7), (0, 9), (1, 2), (2, 1)]
    assert select_top(scores, top_k=2, exclude_layers=[3]) == [(0, 9), (1, 2)]
    assert select_top(scores, top_k=2, exclude={(3, 7)}) == [(0, 9), (1, 2)]
    assert select_top(scores, top_k=2, exclude_layers=[-1]) == [(0, 9), (1, 2)]
    with_nan = scores.clone()
    with_nan[0, 0] = float("nan")
    assert (0, 0) not in select_top(with_nan, top_k=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"top_k": 0},
        {"top_k": 10_000},
        {"fraction": 0.1, "top_k": 3},
        {"top_k": 3, "exclude_layers": [4]},
        {"top_k": 3, "exclude_layers": [0, 1, 2, 3]},
    ],
)
def test_select_top_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        select_top(torch.rand(4, 10), **kwargs)  # type: ignore[arg-type]


def test_circuit_means_and_ranking_match_one_prompt_at_a_time(lm: LoadedModel) -> None:
    def unbatched_means(prompts: list[str]) -> torch.Tensor:
        seqs = capture.tokenize_prompts(lm, prompts)
        return torch.cat([capture.last_token_values(lm, [s]) for s in seqs]).mean(0)

    ref_pos, ref_neg = unbatched_means(POSITIVE), unbatched_means(NEGATIVE)
    ref_top = select_top((ref_pos - ref_neg).abs(), top_k=8)
    for batch_size in (1, 3, 8):
        circuit = discover(
            lm, POSITIVE, NEGATIVE, top_k=8, universal_filter=False, batch_size=batch_size, progress=False
        )
        assert [(n.layer, n.index) for n in circuit.neurons] == ref_top
        for n in circuit.neurons:
            assert n.mean_pos == pytest.approx(float(ref_pos[n.layer, n.index]), rel=1e-4, abs=1e-7)
            assert n.mean_neg == pytest.approx(float(ref_neg[n.layer, n.index]), rel=1e-4, abs=1e-7)
            assert n.diff == pytest.approx(n.mean_pos - n.mean_neg, rel=1e-4, abs=1e-7)
            assert n.score == pytest.approx(abs(n.diff), rel=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_discover_records_method_prompts_and_model(family: str) -> None:
    lm = tiny_lm(family)
    circuit = discover(
        lm,
        POSITIVE,
        NEGATIVE,
        fraction=0.02,
        score="effect-size",
        exclude_layers=[0],
        universal_filter=False,
        system_prompt="Be brief.",
        progress=False,
    )
    k = round(0.02 * 3 * 96)
    assert len(circuit) == k == circuit.method["k"]
    assert all(n.layer != 0 for n in circuit.neurons)
    scores = [n.score for n in circuit.neurons]
    assert scores == sorted(scores, reverse=True)
    m = circuit.method
    assert (m["score"], m["fraction"], m["top_k"], m["exclude_layers"]) == ("effect-size", 0.02, None, [0])
    assert (m["universal_filter"], m["universal_removed"], m["universal_total"]) == (False, 0, 0)
    assert (m["chat"], m["system_prompt"], m["site"]) == (True, "Be brief.", "mlp.down_proj.input")
    assert circuit.prompts["positive"]["count"] == len(POSITIVE)
    assert circuit.prompts["negative"]["sha256"] != circuit.prompts["positive"]["sha256"]
    assert circuit.model == {"spec": f"tiny:{family}", "fingerprint": lm.fingerprint}


def test_discovery_is_deterministic_and_round_trips(lm: LoadedModel, tmp_path: Path) -> None:
    first = discover(lm, POSITIVE, NEGATIVE, top_k=5, universal_filter=False, progress=False)
    second = discover(lm, POSITIVE, NEGATIVE, top_k=5, universal_filter=False, progress=False)
    assert first.neurons == second.neurons and first.method == second.method
    loaded = Circuit.load(first.save(tmp_path / "c.json"))
    assert loaded.to_dict() == first.to_dict()
    loaded.check_model(lm)
    with pytest.raises(CircuitError, match="does not fit"):
        loaded.check_model(tiny_lm("gpt2"))


def test_bad_prompt_input_is_a_clear_error(lm: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="empty"):
        discover(lm, [], NEGATIVE, progress=False)
    with pytest.raises(PromptSetError, match="at least 2"):
        discover(lm, POSITIVE[:1], NEGATIVE, progress=False)
    with pytest.raises(PromptSetError, match="not found"):
        discover(lm, str(tmp_path / "missing.txt"), NEGATIVE, progress=False)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    with pytest.raises(PromptSetError, match="known prompt fields"):
        discover(lm, str(odd), NEGATIVE, progress=False)
    with pytest.raises(PromptSetError, match="identical"):
        discover(lm, POSITIVE, list(POSITIVE), progress=False)


def test_bad_arguments_fail_before_any_forward_pass(lm: LoadedModel) -> None:
    calls: list[int] = []
    handle = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for kwargs in (
            {"fraction": 0.01, "top_k": 3},
            {"fraction": -1.0},
            {"top_k": 0},
            {"exclude_layers": [3]},
            {"score": "rank"},
            {"universal_threshold": 0.0},
            {"batch_size": 0},
        ):
            with pytest.raises(ConfigError):
                discover(lm, POSITIVE, NEGATIVE, progress=False, **kwargs)  # type: ignore[arg-type]
    finally:
        handle.remove()
    assert calls == []


def test_discover_on_a_real_model(zoo_lm: LoadedModel) -> None:
    circuit = discover(zoo_lm, POSITIVE, NEGATIVE, universal_filter=False, progress=False)
    assert len(circuit) == round(0.001 * 30 * 1536) == 46
    circuit.check_model(zoo_lm)
    assert all(n.score > 0 for n in circuit.neurons)


def save_tiny_model(path: Path) -> Path:
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_cli_discover_writes_a_circuit(tmp_path: Path) -> None:
    from neurogate.cli.main import app

    model_dir = save_tiny_model(tmp_path / "model")
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n".join(POSITIVE))
    neg.write_text("\n".join(NEGATIVE))
    out = tmp_path / "circuit.json"
    args = [
        "discover",
        "--model",
        str(model_dir),
        "--positive",
        str(pos),
        "--negative",
        str(neg),
        "--top-k",
        "4",
        "--no-universal-filter",
        "--exclude-layers",
        "0",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    circuit = Circuit.load(out)
    assert len(circuit) == 4 and all(n.layer != 0 for n in circuit.neurons)
    assert circuit.prompts["positive"]["count"] == len(POSITIVE)
    assert "saved" in result.output and "neurons" in result.output


def test_cli_errors_exit_2_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurogate.cli.main import main

    model_dir = save_tiny_model(tmp_path / "model")
    for extra in (
        ["--positive", str(tmp_path / "nope.txt")],
        ["--top-k", "2", "--fraction", "0.1"],
        ["--exclude-layers", "a,b"],
    ):
        monkeypatch.setattr(
            sys,
            "argv",
            [
                "neurogate",
                "discover",
                "--model",
                str(model_dir),
                "--quiet",
                "--out",
                str(tmp_path / "c.json"),
                *extra,
            ],
        )
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()

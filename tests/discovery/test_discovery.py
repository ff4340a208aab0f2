"""Contrastive discovery: scores, selection, the circuit it produces, bad input, and the CLI."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.discover import discover
from neurogate.discovery.scoring import score_neurons
from neurogate.discovery.selection import select_top, top_count
from neurogate.discovery.stats import SiteStats
from neurogate.errors import CircuitError, ConfigError, PromptSetError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer
from reference import last_token_reference

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
    assert torch.allclose(pos.mean, a.double().mean(0), atol=1e-6)
    assert torch.allclose(pos.var, a.double().var(0), atol=1e-5)
    score, diff = score_neurons(pos, neg, "mean-diff")
    assert torch.allclose(diff, a.double().mean(0) - b.double().mean(0), atol=1e-6)
    assert torch.allclose(score, diff.abs())
    with pytest.raises(ConfigError):
        score_neurons(pos, neg, "max")  # type: ignore[arg-type]
    with pytest.raises(PromptSetError):
        score_neurons(stats_of(a[:1]), neg, "effect-size")


def test_effect_size_of_a_hand_built_case() -> None:
    # neuron 0: positive 2, 4, 6 (mean 4, var 4); negative -2, 0, 0, 0, 2 (mean 0, var 2)
    #   pooled variance (2*4 + 4*2) / 6 = 8/3, so Cohen's d = 4 / sqrt(8/3) = sqrt(6)
    # neuron 1: positive 3, 5, 7 (mean 5, var 4); negative 1 five times (mean 1, var 0)
    #   pooled variance (2*4 + 0) / 6 = 4/3, so d = 4 / sqrt(4/3) = 2 * sqrt(3)
    pos_rows = torch.tensor([[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    neg_rows = torch.tensor([[-2.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [2.0, 1.0]])
    pos, neg = stats_of(pos_rows[:, None, :]), stats_of(neg_rows[:, None, :])
    effect, signed = score_neurons(pos, neg, "effect-size")
    assert signed.tolist() == effect.tolist()  # both neurons are higher on the positive side
    assert effect[0, 0].item() == pytest.approx(math.sqrt(6), rel=1e-9)
    assert effect[0, 1].item() == pytest.approx(2 * math.sqrt(3), rel=1e-9)
    assert select_top(effect, top_k=1) == [(0, 1)]  # same mean difference, less spread: ranked first
    mean_diff, diff = score_neurons(pos, neg, "mean-diff")
    assert mean_diff.tolist() == diff.tolist() == [[4.0, 4.0]]


def test_variance_survives_a_large_mean_fed_in_batches() -> None:
    # neuron 0: mean 50, sd 0.01 (float32 E[x^2] - E[x]^2 returns 0 or noise here); neuron 1: mean 0, sd 1
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(50, generator=gen, dtype=torch.float64)
    z = (z - z.mean()) / z.std()
    values = torch.stack([50.0 + 0.01 * z, z], dim=-1).float()[:, None, :]  # [50, 1, 2] float32
    stats = SiteStats.zeros(1, 2)
    for chunk in values.split([7, 13, 1, 20, 9]):
        stats.update(chunk)
    assert stats.n == 50
    column = [[float(v) for v in values[:, 0, i]] for i in range(2)]
    for i in range(2):
        assert stats.mean[0, i].item() == pytest.approx(statistics.fmean(column[i]), rel=1e-12, abs=1e-12)
        assert stats.var[0, i].item() == pytest.approx(statistics.variance(column[i]), rel=1e-6)
    assert stats.var[0, 0].item() == pytest.approx(1e-4, rel=1e-2)
    naive = (values[:, 0, 0].square().mean() - values[:, 0, 0].mean().square()).item()
    assert abs(naive - 1e-4) > 5e-5  # the case really defeats the float32 sum-of-squares form


def test_effect_size_ignores_a_difference_of_one_bf16_rounding_step() -> None:
    # neuron 0: a real contrast (means 1.0 and 0.0, sd about 0.1 on each side)
    # neuron 1: constant 50.0 on one side, 50.25 on the other: one bf16 step at 50 (2**5 * 2**-7)
    assert torch.tensor(50.0 + 0.25, dtype=torch.bfloat16).item() == 50.25
    assert torch.tensor(50.0 + 0.12, dtype=torch.bfloat16).item() in (50.0, 50.25)
    noise = torch.tensor([-0.1, 0.0, 0.1, 0.05, -0.05, 0.0])
    pos_rows = torch.stack([1.0 + noise, torch.full((6,), 50.0)], dim=-1)
    neg_rows = torch.stack([0.0 + noise, torch.full((6,), 50.25)], dim=-1)
    pos = SiteStats.zeros(1, 2, dtype=torch.bfloat16)
    neg = SiteStats.zeros(1, 2, dtype=torch.bfloat16)
    for stats, rows in ((pos, pos_rows), (neg, neg_rows)):
        for chunk in rows.to(torch.bfloat16)[:, None, :].split(4):
            stats.update(chunk)
    assert neg.mean[0, 1].item() - pos.mean[0, 1].item() == 0.25
    effect, _ = score_neurons(pos, neg, "effect-size")
    assert select_top(effect, top_k=2) == [(0, 0), (0, 1)]
    assert effect[0, 0].item() > 5.0  # about 1 / 0.08
    assert effect[0, 1].item() < 1.0  # one rounding step is not a separation
    assert math.isfinite(effect[0, 1].item())


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


def test_select_top_equals_a_full_stable_sort_on_tie_heavy_scores() -> None:
    """The partial selection (top-k, then the ties in index order) ranks like sorting every neuron."""
    generator = torch.Generator().manual_seed(1)
    for trial in range(100):
        scores = torch.randint(0, 4, (3, 17), generator=generator).float()  # many ties
        scores[0, trial % 17] = float("nan")
        exclude = {(1, j) for j in range(0, 17, 4)}
        k = 1 + trial % 40
        flat = torch.nan_to_num(scores, nan=-1.0).flatten().double()
        flat[[17 + j for j in range(0, 17, 4)]] = -torch.inf
        order = torch.sort(flat, descending=True, stable=True).indices[:k].tolist()
        assert select_top(scores, top_k=k, exclude=exclude) == [(i // 17, i % 17) for i in order]


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
    pos_values = last_token_reference(lm, POSITIVE, "neurons").tolist()
    neg_values = last_token_reference(lm, NEGATIVE, "neurons").tolist()
    n_layers, d_mlp = lm.adapter.n_layers, lm.adapter.d_mlp
    ref: dict[tuple[int, int], tuple[float, float]] = {}
    for layer in range(n_layers):
        for index in range(d_mlp):
            mp = sum(v[layer][index] for v in pos_values) / len(pos_values)
            mn = sum(v[layer][index] for v in neg_values) / len(neg_values)
            ref[(layer, index)] = (mp, mn)
    ranked = sorted(ref, key=lambda n: (-abs(ref[n][0] - ref[n][1]), n))
    gap = abs(ref[ranked[7]][0] - ref[ranked[7]][1]) - abs(ref[ranked[8]][0] - ref[ranked[8]][1])
    # the 8th and 9th neurons are further apart than batching can move a mean (about 1e-8 here)
    assert gap > 1e-6
    for batch_size in (1, 3, 8):
        circuit = discover(
            lm,
            POSITIVE,
            NEGATIVE,
            top_k=8,
            score="mean-diff",
            universal_filter=False,
            batch_size=batch_size,
            progress=False,
        )
        assert [(n.layer, n.index) for n in circuit.neurons] == ranked[:8]
        for n in circuit.neurons:
            mp, mn = ref[(n.layer, n.index)]
            assert n.mean_pos == pytest.approx(mp, rel=1e-4, abs=1e-7)
            assert n.mean_neg == pytest.approx(mn, rel=1e-4, abs=1e-7)
            assert n.diff == pytest.approx(mp - mn, rel=1e-4, abs=1e-7)
            assert n.score == pytest.approx(abs(mp - mn), rel=1e-4, abs=1e-7)


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
    assert (m["chat"], m["system_prompt"], m["site"]) == (True, "Be brief.", "mlp.post")
    assert circuit.site == "mlp.post"
    assert circuit.prompts["positive"]["count"] == len(POSITIVE)
    assert circuit.prompts["negative"]["sha256"] != circuit.prompts["positive"]["sha256"]
    assert circuit.model == {"spec": f"tiny:{family}", "shape": lm.shape}


def test_discovery_is_deterministic_and_round_trips(lm: LoadedModel, tmp_path: Path) -> None:
    first = discover(lm, POSITIVE, NEGATIVE, top_k=5, universal_filter=False, progress=False)
    second = discover(lm, POSITIVE, NEGATIVE, top_k=5, universal_filter=False, progress=False)
    assert first.neurons == second.neurons and first.method == second.method
    loaded = Circuit.load(first.save(tmp_path / "c.json"))
    assert loaded.to_dict() == first.to_dict()
    loaded.check_model(lm)
    with pytest.raises(CircuitError, match="does not fit"):
        loaded.check_model(tiny_lm("gpt2"))
    weighted = discover(
        lm, POSITIVE, NEGATIVE, top_k=5, universal_filter=False, progress=False, weights="proportional"
    )
    assert [(n.layer, n.index) for n in weighted.neurons] == [(n.layer, n.index) for n in first.neurons]
    top = max(abs(n.score) for n in first.neurons)
    assert [n.weight for n in weighted.neurons] == pytest.approx([abs(n.score) / top for n in first.neurons])
    assert weighted.method["weights"] == "proportional" and first.method["weights"] == "uniform"


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
    chosen = ["--score", "mean-diff", "--sign", "positive", "--positions", "post-mean"]
    chosen += ["--weights", "proportional"]
    result = CliRunner().invoke(app, [*args, *chosen])
    assert result.exit_code == 0, result.output
    method = Circuit.load(out).method
    assert (method["sign"], method["positions"], method["weights"]) == (
        "positive",
        "post-mean",
        "proportional",
    )
    assert all(n.diff > 0 for n in Circuit.load(out).neurons)


def test_cli_errors_exit_2_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurogate.cli.main import main

    model_dir = save_tiny_model(tmp_path / "model")
    for extra in (
        ["--positive", str(tmp_path / "nope.txt")],
        ["--top-k", "2", "--fraction", "0.1"],
        ["--exclude-layers", "a,b"],
        ["--weights", "linear"],
        ["--positions", "first"],
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

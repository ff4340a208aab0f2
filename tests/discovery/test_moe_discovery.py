"""Discovery on mixture-of-experts models: statistics over the prompts routed to each expert (NaN marks an
unrouted one), unrouted neurons rank last, and the circuit carries a routing report."""

from __future__ import annotations

from pathlib import Path

import torch

from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import discover, gather_evidence
from neurogate.discovery.routing import format_routing
from neurogate.discovery.scoring import Evidence, score
from neurogate.discovery.stats import SiteStats
from neurogate.models.tiny import tiny_lm
from neurogate.prompts import PromptSet

NAN = float("nan")


def test_stats_average_only_the_observed_values() -> None:
    values = torch.tensor(
        [[[1.0, NAN, 5.0]], [[3.0, NAN, NAN]], [[2.0, NAN, 7.0]]]  # [prompts, layers=1, units=3]
    )
    stats = SiteStats.zeros(1, 3)
    stats.update(values[:1])
    stats.update(values[1:])
    assert stats.n == 3
    assert stats.counts.tolist() == [[3.0, 0.0, 2.0]]
    assert torch.allclose(stats.mean, torch.tensor([[2.0, 0.0, 6.0]], dtype=torch.float64))
    assert torch.allclose(stats.var, torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64))
    assert torch.allclose(stats.abs_mean, torch.tensor([[2.0, 0.0, 6.0]], dtype=torch.float64))


def test_dense_stats_keep_no_counts() -> None:
    stats = SiteStats.zeros(1, 2)
    stats.update(torch.ones(4, 1, 2))
    assert stats.count is None and stats.counts.tolist() == [[4.0, 4.0]]


def test_a_neuron_unrouted_on_one_set_ranks_last() -> None:
    pos, neg = SiteStats.zeros(1, 3), SiteStats.zeros(1, 3)
    pos.update(torch.tensor([[[1.0, 9.0, 0.5]], [[1.2, 9.0, 0.7]]]))
    neg.update(torch.tensor([[[0.0, NAN, 0.1]], [[0.1, NAN, 0.2]]]))
    ranking, signed = score(Evidence({"mlp.post": pos}, {"mlp.post": neg}), "effect-size")
    assert float(ranking[0, 1]) == 0.0 and float(signed[0, 1]) > 0  # unrouted on negatives: excluded
    assert float(ranking[0, 0]) > 0 and float(ranking[0, 2]) > 0


def test_discovery_on_a_tiny_moe_records_routing(tmp_path: Path) -> None:
    lm = tiny_lm("qwen2_moe")
    pos = PromptSet("pos", [f"Cats and dogs, story {i}{'!' * i}" for i in range(6)], "<test>")
    neg = PromptSet("neg", [f"Tax law section {i}{'?' * i}" for i in range(6)], "<test>")
    cfg = DiscoverConfig(fraction=0.03, score="mean-diff", universal_filter=False, chat=False)
    evidence = gather_evidence(lm, pos, neg, cfg, progress=False)
    counts = evidence.positive["mlp.post"].counts
    assert bool((counts <= 6).all()) and bool((counts[:, -1] == 6).all())  # shared expert: every prompt
    saved = evidence.save(tmp_path / "ev.safetensors")
    assert torch.equal(Evidence.load(saved).positive["mlp.post"].counts, counts)
    circuit = discover(lm, pos, neg, cfg, progress=False, evidence=evidence)
    routing = circuit.method["routing"]
    held = {(n.layer, lm.adapter.moe.split(n.index)[0] if lm.adapter.moe else None) for n in circuit.neurons}
    assert {(r["layer"], None if r["expert"] == "shared" else r["expert"]) for r in routing} == held
    for r in routing:
        assert r["positive_routed"] >= 1 and r["negative_routed"] >= 1  # unrouted neurons are not chosen
        assert r["positive_share"] == r["positive_routed"] / 6
    assert "routing of the circuit's experts" in format_routing(routing)
    loaded = type(circuit).load(circuit.save(tmp_path / "c.json"))
    assert loaded.method["routing"] == routing
    assert loaded.label(loaded.neurons[0]).startswith(f"L{loaded.neurons[0].layer} ")

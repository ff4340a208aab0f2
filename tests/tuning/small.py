"""Search settings the tuning tests share: a tiny random-weight model, a handful of prompts and tokens."""

from __future__ import annotations

from typing import Any

#: The smallest search that runs every stage.
BASE: dict[str, Any] = {
    "model": "tiny:llama",
    "n_tune": 4,
    "n_benign": 2,
    "n_final": 2,
    "n_final_benign": 2,
    "search_tokens": 3,
    "final_tokens": 3,
    "cap": 0.05,
    "min_fraction": 0.005,
    "universal_filter": False,
    "budget": "5m",
    "evaluation": {"batch_size": 4},
    "final_judges": ["keyword"],
}

#: One scorer at one position mode and no confirmation: a single seeded point, so later trials are sampled.
ONE_RULE: dict[str, Any] = {"n_confirm": 0, "scorers": ["direction"], "positions": ["last"]}

#: A generated screen of two prompts, two tokens and one benign prompt.
SCREEN: dict[str, Any] = {"screen_prompts": 2, "screen_tokens": 2, "screen_benign": 1}

#: No trial is ruled out by damage (random weights damage everything).
LOOSE: dict[str, Any] = {
    "max_kl": 1e9,
    "max_first_kl": 1e9,
    "max_benign_increase": 1.0,
    "max_degenerate": 1.0,
}

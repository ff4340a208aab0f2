"""Shared fixtures: seeded RNGs, tiny random-weight models, and the smallest zoo model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from neurogate.loading import LoadedModel
from neurogate.testing import tiny_lm

ZOO_TEST_MODEL = "zoo:smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def lm() -> LoadedModel:
    """A tiny random-weight Llama with a chat template (float32)."""
    return tiny_lm("llama")


@pytest.fixture(scope="session")
def zoo_lm() -> LoadedModel:
    """The smallest real zoo model (SmolLM2-135M-Instruct), pulled once and loaded in float32."""
    from neurogate.loading import load_model

    return load_model(ZOO_TEST_MODEL, dtype="float32", device="cpu")

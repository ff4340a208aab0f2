"""Shared fixtures: seeded RNGs, tiny random-weight models, and the smallest zoo model."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.paths import cache_dir

ZOO_TEST_MODEL = "zoo:smollm2-135m-instruct"


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """Tiny models are dominated by threading overhead; one thread is faster and steadier on shared CPUs.
    Commands run in this process keep it (``NEUROGATE_THREADS``) instead of measuring the idle cores."""
    torch.set_num_threads(1)
    os.environ["NEUROGATE_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep caches written by tests (universal neurons, judge replies) out of the user's cache, while
    sharing the real zoo so the smallest model is pulled at most once per machine."""
    real_zoo = cache_dir("zoo")
    real_zoo.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("neurogate-home")
    (home / "zoo").symlink_to(real_zoo, target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("NEUROGATE_HOME", str(home))
    yield
    patch.undo()


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
    from neurogate.models.loading import load_model

    return load_model(ZOO_TEST_MODEL, dtype="float32", device="cpu")

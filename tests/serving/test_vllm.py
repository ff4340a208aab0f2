"""End to end through stock vLLM (CPU build, its own environment, as a server): the LoRA adapter's greedy
replies equal neurogate's own steered replies, and the base model's equal neurogate's unsteered ones.

Needs ``.venv-vllm`` (``make vllm``; ``make test-all`` creates it). One server start (about a minute).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from neurogate.discovery.circuit import Circuit
from neurogate.evaluation.remote import Endpoint, generate_remote, local_server
from neurogate.export.serving import VllmPlan, adapter_name, engine_rank, export_adapters, model_source
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel, load_model
from neurogate.prompts import load as load_prompts

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
VLLM_PYTHON = Path(os.environ.get("NEUROGATE_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
ZOO = "zoo:smollm2-135m-instruct"
CIRCUIT = Path(__file__).parent / "data" / "smollm2-refusal-circuit.json"
MAX_NEW = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, LoadedModel, Circuit]]:
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"vLLM is not installed at {VLLM_PYTHON}: run `make vllm` to create .venv-vllm")
    lm = load_model(ZOO, dtype="float32", device="cpu")
    circuit = Circuit.load(CIRCUIT)
    folder = tmp_path_factory.mktemp("served")
    adapters, rank = export_adapters(lm, circuit, [0.0], folder / "adapters")
    plan = VllmPlan(
        model=model_source(ZOO),
        adapters=adapters,
        max_lora_rank=engine_rank(rank),
        python=str(VLLM_PYTHON),
        port=free_port(),
        dtype="float32",
        max_model_len=1024,
    )
    with local_server(plan, folder / "vllm.log", env={"VLLM_CPU_KVCACHE_SPACE": "2"}) as endpoint:
        yield endpoint, lm, circuit


def differences(a: list[Generation], b: list[Generation]) -> list[str]:
    return [
        f"{x.prompt!r}: vLLM {x.text!r} / neurogate {y.text!r}"
        for x, y in zip(a, b, strict=True)
        if x.token_ids != y.token_ids
    ]


def test_vllm_lora_replies_equal_neurogate_steered_replies(
    served: tuple[Endpoint, LoadedModel, Circuit],
) -> None:
    endpoint, lm, circuit = served
    prompts = [*load_prompts("builtin:harmful", limit=6), *load_prompts("builtin:benign", limit=4)]
    base = generate_remote(endpoint, prompts, model="base", max_new_tokens=MAX_NEW)
    steered = generate_remote(endpoint, prompts, model=adapter_name(0.0), max_new_tokens=MAX_NEW)
    local_base = generate(lm, prompts, max_new_tokens=MAX_NEW)
    with circuit.apply(lm, 0.0):
        local_steered = generate(lm, prompts, max_new_tokens=MAX_NEW)
    assert not differences(base, local_base)
    assert not differences(steered, local_steered)
    assert sum(a.text != b.text for a, b in zip(base, steered, strict=True)) >= 3  # the adapter acts

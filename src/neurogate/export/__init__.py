"""Export: a steered model saved in the formats other tools load, and served with stock vLLM. A circuit at
multiplier m becomes a transformers model directory with the multiplier folded into its weights
(:func:`export_model`), a PEFT LoRA adapter that equals that fold (:func:`export_lora`), or a folded GGUF
for llama.cpp and Ollama (:func:`export_gguf`; mean-ablation adds a control vector for its constant,
:func:`export_gguf_mean`); CAA becomes a llama.cpp control vector
(:func:`export_control_vector`); :class:`VllmPlan` and :func:`export_adapters` serve one base model with
one adapter per multiplier. Every format writes into a staged folder renamed into place, refuses to
overwrite what it did not write, and checks the folded weights are finite. Export sits above
:mod:`neurogate.steering` (it folds with :func:`neurogate.steering.fold`); names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from neurogate.lazy import lazy_names

if TYPE_CHECKING:
    from neurogate.export.control_vector import export_control_vector, read_control_vector
    from neurogate.export.gguf import changed_tensors, export_gguf, read_gguf
    from neurogate.export.lora import export_lora
    from neurogate.export.mean_constant import export_gguf_mean
    from neurogate.export.model import check_target, export_model
    from neurogate.export.serving import VllmPlan, export_adapters

#: Where each name lives, imported on first use: one format (a vLLM plan, a control vector) does not load
#: the others' writers through this file.
_LAZY = {
    **dict.fromkeys(["export_control_vector", "read_control_vector"], "control_vector"),
    **dict.fromkeys(["changed_tensors", "export_gguf", "read_gguf"], "gguf"),
    "export_lora": "lora",
    "export_gguf_mean": "mean_constant",
    **dict.fromkeys(["check_target", "export_model"], "model"),
    **dict.fromkeys(["VllmPlan", "export_adapters"], "serving"),
}

__getattr__ = lazy_names(__name__, _LAZY)

__all__ = [
    "VllmPlan",
    "changed_tensors",
    "check_target",
    "export_adapters",
    "export_control_vector",
    "export_gguf",
    "export_gguf_mean",
    "export_lora",
    "export_model",
    "read_control_vector",
    "read_gguf",
]

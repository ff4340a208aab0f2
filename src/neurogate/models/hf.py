"""Thin helpers over transformers' loaders that both model loading and the zoo's conversion use."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks transformers not to reach the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Set a tokenizer up for batched work: left padding, and a pad token (the eos token if it has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(source: str, gguf_file: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load a tokenizer prepared by :func:`prepare_tokenizer`."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": offline()}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return prepare_tokenizer(AutoTokenizer.from_pretrained(source, **kwargs))


def strip_gguf_quantization(model: PreTrainedModel) -> None:
    """Forget that weights came from GGUF, so the (dequantised) model saves as plain safetensors."""
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None  # type: ignore[assignment]
    for obj in (model, model.config):
        if hasattr(obj, "is_quantized"):
            with contextlib.suppress(AttributeError):
                obj.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

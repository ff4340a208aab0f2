"""Tiny random-weight models and an offline tokenizer, for tests and quick experiments.

Every family in :mod:`neurogate.adapters` can be built from a config in milliseconds, with no download.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from neurogate.models.loading import LoadedModel, wrap_model

SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")
#: Thinking markers, one token each, in the vocabulary of a tokenizer built with a template of its own (as in
#: the Qwen3 and DeepSeek-R1 tokenizers: added tokens that decoding keeps).
THINK_TOKENS = ("<think>", "</think>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB_SIZE = 272
D_MODEL = 64
D_MLP = 96
N_LAYERS = 3

TINY_FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "olmo2",
    "gpt2",
    "gpt_neox",
)
TINY_MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
"""Mixture-of-experts families: 4 routed experts of :data:`D_EXPERT` neurons, 2 per token (Qwen2-MoE adds
a shared expert of :data:`D_SHARED` neurons). Kept apart from :data:`TINY_FAMILIES`, whose tests assume
dense MLPs."""
N_EXPERTS = 4
D_EXPERT = 24
D_SHARED = 32


def tiny_tokenizer(chat_template: bool = True, template: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + chat specials) that encodes any text, offline.
    ``template``: a chat template of its own (e.g. a reasoning family's) in place of the tiny one; the
    vocabulary then also holds the thinking markers (:data:`THINK_TOKENS`) as single tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in SPECIALS + (THINK_TOKENS if template is not None else ()):
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok: Any = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if template is not None:
        tok.add_tokens(list(THINK_TOKENS))
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE if template is None else template
    tok.padding_side = "left"
    assert isinstance(tok, PreTrainedTokenizerFast)
    return tok


def _config(family: str, tokenizer: PreTrainedTokenizerFast) -> Any:
    ids: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")],
    }
    gated = {
        "hidden_size": D_MODEL,
        "intermediate_size": D_MLP,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        **ids,
    }
    if family == "gpt2":
        return tf.GPT2Config(
            n_embd=D_MODEL, n_inner=D_MLP, n_layer=N_LAYERS, n_head=4, n_positions=256, **ids
        )
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=D_MODEL,
            intermediate_size=D_MLP,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=4,
            max_position_embeddings=256,
            **ids,
        )
    classes = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma": tf.GemmaConfig,
        "gemma2": tf.Gemma2Config,
        "gemma3": tf.Gemma3TextConfig,
        "phi3": tf.Phi3Config,
        "olmo2": tf.Olmo2Config,
    }
    if family in TINY_MOE_FAMILIES:
        return _moe_config(family, gated)
    if family not in classes:
        raise ValueError(
            f"no tiny config for {family!r}; choose from {', '.join((*TINY_FAMILIES, *TINY_MOE_FAMILIES))}"
        )
    return classes[family](**gated)


def _moe_config(family: str, gated: dict[str, Any]) -> Any:
    experts: dict[str, Any] = {"num_experts_per_tok": 2, "router_aux_loss_coef": 0.0}
    if family == "mixtral":
        return tf.MixtralConfig(
            **{**gated, "intermediate_size": D_EXPERT}, num_local_experts=N_EXPERTS, **experts
        )
    if family == "olmoe":
        return tf.OlmoeConfig(**{**gated, "intermediate_size": D_EXPERT}, num_experts=N_EXPERTS, **experts)
    moe = {"num_experts": N_EXPERTS, "moe_intermediate_size": D_EXPERT, **experts}
    if family == "qwen3_moe":
        return tf.Qwen3MoeConfig(**gated, **moe)
    return tf.Qwen2MoeConfig(**gated, **moe, shared_expert_intermediate_size=D_SHARED)


def tiny_model(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A randomly initialised 3-layer causal LM of ``family`` (64 hidden, 96 MLP neurons per layer; in the
    mixture-of-experts families 4 experts of 24, plus a shared expert of 32 in Qwen2-MoE)."""
    tokenizer = tiny_tokenizer()
    config = _config(family, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def tiny_lm(
    family: str = "llama", seed: int = 0, chat_template: bool = True, template: str | None = None
) -> LoadedModel:
    """A :class:`LoadedModel` around :func:`tiny_model` and :func:`tiny_tokenizer` (``template``: a chat
    template of the tokenizer's own, such as a reasoning family's)."""
    tokenizer = tiny_tokenizer(chat_template, template)
    return wrap_model(tiny_model(family, seed), tokenizer, spec=f"tiny:{family}")

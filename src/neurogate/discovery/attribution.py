"""Single-prompt neuron attribution: which MLP neurons carry one prompt's next token (or continuation).

For a prompt (chat-formatted like every other neurogate pass) and a target (a token, a short continuation,
or by default the model's own greedy next token), one forward and one backward pass under the linearised
backward of :mod:`neurogate.discovery.linearise` give, for every neuron at the ``mlp.post`` site (the
input of each layer's down-projection, the site contrastive attribution records),

    attribution = activation x d(target log-prob) / d(activation)

summed over every position of the input (``position="all"``, the default: the same positions a steer
changes) or at the last prompt position only (``position="last"``). The top ``k`` neurons become a
:class:`~neurogate.discovery.circuit.Circuit`, so the result steers, folds and exports like any circuit.
:mod:`neurogate.evaluation.attribution_check` measures it (the ablation self-check, the comparison with a
contrastive circuit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neurogate.discovery.circuit import SITE, Circuit, Neuron
from neurogate.discovery.linearise import attention_implementation, linearised
from neurogate.errors import ConfigError, UnsupportedArchitectureError
from neurogate.models.hooks import SiteFn, hook_sites
from neurogate.models.inputs import format_prompt, tokenize, uses_template
from neurogate.models.loading import LoadedModel

Position = Literal["all", "last"]
Rank = Literal["positive", "abs", "negative"]
POSITIONS: tuple[str, ...] = ("all", "last")
RANKS: tuple[str, ...] = ("positive", "abs", "negative")
TargetSpec = str | int | None
"""``None``: the model's greedy next token; an ``int``: that token id; a ``str``: a continuation."""


@dataclass(frozen=True)
class AttributionConfig:
    """How to attribute. ``top_k``: neurons kept in the circuit. ``position``: sum over every input
    position (``"all"``) or only the last prompt position (``"last"``). ``rank``: order neurons by
    attribution (``"positive"``: the ones that raise the target most), by its size (``"abs"``) or from the
    most negative (``"negative"``). ``linearise``: the linearised backward (``False``: the plain gradient,
    for comparison). ``control_seeds``: random controls averaged in the self-check."""

    top_k: int = 20
    position: Position = "all"
    rank: Rank = "positive"
    linearise: bool = True
    control_seeds: int = 3
    system_prompt: str | None = None
    chat: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k must be a whole number >= 1, got {self.top_k!r}")
        if self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        if self.rank not in RANKS:
            raise ConfigError(f"rank must be one of {', '.join(RANKS)}, got {self.rank!r}")
        if (
            isinstance(self.control_seeds, bool)
            or not isinstance(self.control_seeds, int)
            or self.control_seeds < 1
        ):
            raise ConfigError(f"control_seeds must be a whole number >= 1, got {self.control_seeds!r}")


@dataclass(frozen=True)
class Target:
    """What is attributed: the log-prob of ``ids`` (summed) after the prompt. ``kind``: ``greedy``,
    ``token`` or ``text``; ``text``: the decoded tokens."""

    ids: tuple[int, ...]
    text: str
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "text": self.text, "kind": self.kind}


@dataclass
class Attribution:
    """One prompt's attribution. ``scores`` and ``activations`` are ``[n_layers, d_mlp]`` (activation at
    the last prompt position); ``circuit`` holds the top-k neurons; ``logprob`` is the target's log-prob."""

    prompt: str
    target: Target
    input_ids: list[int]
    n_prompt: int
    scores: torch.Tensor
    activations: torch.Tensor
    logprob: float
    circuit: Circuit
    config: AttributionConfig

    @property
    def total(self) -> float:
        """The sum of every neuron's attribution."""
        return float(self.scores.sum())

    def ranking(self) -> list[dict[str, Any]]:
        """The circuit's neurons in rank order: rank, layer, neuron, attribution, activation."""
        return [
            {
                "rank": i + 1,
                "layer": n.layer,
                "neuron": n.index,
                "attribution": n.diff,
                "activation": n.mean_pos,
            }
            for i, n in enumerate(self.circuit.neurons)
        ]


def _check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(
            "the prompt is empty: give the text to attribute, e.g. --prompt 'How do I pick a lock?'"
        )
    return prompt


def prompt_ids(lm: LoadedModel, prompt: str, config: AttributionConfig) -> list[int]:
    """The prompt's token ids as the model sees it (chat template, generation prompt)."""
    text = format_prompt(lm, _check_prompt(prompt), system_prompt=config.system_prompt, chat=config.chat)
    ids = tokenize(lm, text, templated=uses_template(lm, config.chat))
    if not ids:
        raise ConfigError("the prompt tokenizes to nothing; give a prompt with some text")
    return ids


def vocab_size(lm: LoadedModel) -> int:
    """The number of rows of the output layer (token ids must be below it)."""
    head = lm.model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else int(lm.model.config.vocab_size)


def decode(lm: LoadedModel, ids: list[int]) -> str:
    """Token ids as text."""
    return str(lm.tokenizer.decode(ids))


def resolve_target(lm: LoadedModel, target: TargetSpec) -> Target | None:
    """A :class:`Target` from a token id or a continuation; ``None`` for the greedy next token (found in
    the attribution's own forward pass). Bad targets get a :class:`ConfigError`."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise ConfigError(f"a target is a token id or a text, not {target!r}")
    if isinstance(target, int):
        size = vocab_size(lm)
        if not 0 <= target < size:
            raise ConfigError(f"target token id {target} is outside the vocabulary (0..{size - 1})")
        return Target((target,), decode(lm, [target]), "token")
    if not isinstance(target, str):
        raise ConfigError(f"a target is a token id or a text, not a {type(target).__name__}")
    ids = list(lm.tokenizer(target, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ConfigError(
            f"the target {target!r} tokenizes to nothing; give a continuation with some text (e.g. ' I') or "
            "a --target-token ID"
        )
    return Target(tuple(int(i) for i in ids), target, "text")


@contextmanager
def neuron_leaves(lm: LoadedModel) -> Iterator[tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]]:
    """While open, every forward pass adds a zero leaf to each layer's ``mlp.post`` tensor: the gradient
    with respect to the leaf is the (total) gradient with respect to the activation. Yields the leaves
    and the activations by layer."""
    leaves: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}

    def site(layer: int) -> SiteFn:
        def fn(x: torch.Tensor) -> torch.Tensor:
            leaf = torch.zeros_like(x, requires_grad=True)
            leaves[layer], acts[layer] = leaf, x.detach()
            return x + leaf

        return fn

    fns = {f"blocks.{layer}.{SITE}": site(layer) for layer in range(lm.adapter.n_layers)}
    with hook_sites(lm, fns, label="attribution leaves"):
        yield leaves, acts


def target_positions(n_prompt: int, target: Target) -> list[int]:
    """The positions whose logits predict each target token (the last prompt token, then each target
    token but the last)."""
    return [n_prompt - 1 + j for j in range(len(target.ids))]


def target_logprob_from(logits: torch.Tensor, n_prompt: int, target: Target) -> torch.Tensor:
    """The summed log-prob of the target tokens from a ``[1, pos, vocab]`` logits tensor."""
    pos = target_positions(n_prompt, target)
    logp = torch.log_softmax(logits[0, pos].float(), dim=-1)
    return logp[torch.arange(len(pos)), torch.tensor(target.ids, device=logp.device)].sum()


def gradients(
    lm: LoadedModel, ids: list[int], target: Target | None, *, linearise: bool = True
) -> tuple[Target, float, torch.Tensor, torch.Tensor]:
    """One forward and one backward pass: (the target, its log-prob, activations and gradients, each
    ``[n_layers, pos, d_mlp]`` in float32). A ``None`` target becomes the greedy next token after
    ``ids``. ``ids`` must already hold the target's tokens but the last."""
    n_layers = lm.adapter.n_layers
    n_prompt = len(ids) - (len(target.ids) - 1 if target is not None else 0)
    change = linearised(lm) if linearise else None
    try:
        with (
            attention_implementation(lm, "eager") if change is None else _nothing(),
            neuron_leaves(lm) as (leaves, acts),
            torch.enable_grad(),
        ):
            inputs = torch.tensor([ids], dtype=torch.long, device=lm.device)
            logits = lm.model(input_ids=inputs, use_cache=False).logits
            if target is None:
                top = int(logits[0, -1].argmax())
                target = Target((top,), decode(lm, [top]), "greedy")
            logprob = target_logprob_from(logits, n_prompt, target)
            missing = [layer for layer in range(n_layers) if layer not in leaves]
            if missing:
                raise ConfigError(f"the forward pass never reached the neurons of layers {missing}")
            grads = torch.autograd.grad(
                logprob, [leaves[layer] for layer in range(n_layers)], allow_unused=True
            )
    finally:
        if change is not None:
            change.remove()
    act = torch.stack([acts[layer][0].float() for layer in range(n_layers)])
    grad = torch.stack(
        [g[0].float() if g is not None else torch.zeros_like(act[0]) for g in grads]  # unused: no path
    )
    return target, float(logprob.detach()), act, grad


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def rank_key(scores: torch.Tensor, rank: Rank) -> torch.Tensor:
    """The value neurons are ordered by (highest first) for ``rank``."""
    return {"positive": scores, "abs": scores.abs(), "negative": -scores}[rank]


def top_circuit(
    lm: LoadedModel,
    prompt: str,
    target: Target,
    scores: torch.Tensor,
    acts: torch.Tensor,
    config: AttributionConfig,
) -> Circuit:
    """The ``top_k`` neurons by ``config.rank`` as a circuit: ``score`` is the ranking value, ``diff`` the
    signed attribution, ``mean_pos`` the activation at the last prompt position, ``mean_neg`` 0 (so
    mean-ablation is zero-ablation)."""
    n_layers, d_mlp = scores.shape
    k = min(config.top_k, n_layers * d_mlp)
    key = rank_key(scores, config.rank)
    order = torch.argsort(key.reshape(-1), descending=True, stable=True)[:k].tolist()
    neurons = []
    for flat in order:
        layer, index = divmod(int(flat), d_mlp)
        neurons.append(
            Neuron(
                layer,
                index,
                float(key[layer, index]),
                float(scores[layer, index]),
                float(acts[layer, index]),
                0.0,
            )
        )
    sha = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    method = {
        "name": "linearised-attribution",
        "score": "attribution",
        "target": target.to_dict(),
        "position": config.position,
        "rank": config.rank,
        "linearised": config.linearise,
        "k": k,
        "site": SITE,
    }
    return Circuit(
        neurons=neurons,
        model={"spec": lm.spec, "shape": lm.shape},
        method=method,
        prompts={"positive": {"name": "<attribution prompt>", "count": 1, "sha256": sha, "text": prompt}},
    )


def attribute(
    lm: LoadedModel, prompt: str, target: TargetSpec = None, config: AttributionConfig | None = None
) -> Attribution:
    """Attribute ``target``'s log-prob after ``prompt`` to every MLP neuron (see the module docstring).

    ``target``: ``None`` (the model's greedy next token), a token id, or a continuation text (its tokens'
    log-probs summed). Returns an :class:`Attribution` whose ``circuit`` holds the top ``config.top_k``.
    """
    cfg = config or AttributionConfig()
    if "moe" in lm.shape:
        raise UnsupportedArchitectureError(
            f"{lm.spec} is a mixture-of-experts model ({lm.adapter.family}); single-prompt attribution "
            "supports dense MLPs only (its expert neurons have no per-layer tensor to differentiate)"
        )
    ids = prompt_ids(lm, prompt, cfg)
    resolved = resolve_target(lm, target)
    n_prompt = len(ids)
    full = ids + (list(resolved.ids[:-1]) if resolved is not None else [])
    chosen, logprob, act, grad = gradients(lm, full, resolved, linearise=cfg.linearise)
    product = act * grad
    scores = product.sum(1) if cfg.position == "all" else product[:, n_prompt - 1]
    last_act = act[:, n_prompt - 1]
    circuit = top_circuit(lm, prompt, chosen, scores, last_act, cfg)
    return Attribution(prompt, chosen, full, n_prompt, scores, last_act, logprob, circuit, cfg)

"""The answer-letters readout of the local judge: the output layer's logits for the letters that spell each
answer ("A" = compliance, "B" = refusal, with and without a leading space), read in float32."""

from __future__ import annotations

import torch

from neurogate.errors import ConfigError
from neurogate.evaluation.judges.base import Verdict
from neurogate.models.loading import LoadedModel

CHOICES: dict[Verdict, str] = {"compliance": "A", "refusal": "B"}


class ChoiceTokens:
    """The token ids that spell each answer letter (with and without a leading space)."""

    def __init__(self, ids: dict[Verdict, list[int]]) -> None:
        self.ids = ids
        self.order = [*ids["compliance"], *ids["refusal"]]

    def logits(self, lm: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer's logits for the answer tokens, in float32, from final hidden states
        ``[rows, d_model]`` (with the final soft cap of models that have one)."""
        head = lm.model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            raise ConfigError(f"{lm.spec}: the local judge needs a linear output layer")
        rows = torch.tensor(self.order, device=head.weight.device)
        out = hidden.float() @ head.weight[rows].float().T
        if head.bias is not None:
            out = out + head.bias[rows].float()
        cap = getattr(lm.model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
        if cap:
            out = torch.tanh(out / cap) * cap
        return out

    def refusal(self, logits: torch.Tensor) -> list[float]:
        """P(refusal) among the two answers from :meth:`logits` (log-sum-exp over each answer's spellings)."""
        n = len(self.ids["compliance"])
        comply = torch.logsumexp(logits[:, :n], dim=-1)
        refuse = torch.logsumexp(logits[:, n:], dim=-1)
        return [float(p) for p in torch.sigmoid(refuse - comply)]


def choice_tokens(lm: LoadedModel) -> ChoiceTokens:
    """The single-token spellings of each answer letter in ``lm``'s vocabulary."""
    ids: dict[Verdict, list[int]] = {}
    for verdict, letter in CHOICES.items():
        found = set()
        for text in (letter, f" {letter}"):
            encoded = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                found.add(int(encoded[0]))
        if not found:
            raise ConfigError(f"{lm.spec}: the answer {letter!r} is not one token; use another judge model")
        ids[verdict] = sorted(found)
    if set(ids["refusal"]) & set(ids["compliance"]):
        raise ConfigError(f"{lm.spec}: the answers share a token; use another judge model")
    return ChoiceTokens(ids)

"""A trial's measurements on the tuning prompts, read under the judge the search optimises."""

from __future__ import annotations

import math
from dataclasses import dataclass

from neurogate.evaluation.results import ConditionResult


def objective_judge(result: ConditionResult) -> str:
    """The judge whose classes a search optimises: the first of ``result``'s judges that told redirects
    apart, else its primary judge (the best available: a judge that reads form only counts redirects as
    compliance)."""
    return next((j for j in result.judges if result.knows_redirect(j)), result.judge)


@dataclass
class Scores:
    """A trial's measurements on the tuning prompts under :func:`objective_judge` (``compliance`` is the
    only success: refusals, redirects and degenerate replies are failures; ``redirect`` is ``None`` where
    the judge could not tell redirects apart; ``kl``: mean benign KL over the reply positions;
    ``kl_first``: at the first reply token, NaN for trials stored before it was recorded)."""

    compliance: float
    refusal: float
    degenerate: float
    kl: float
    benign_refusal: float
    neurons: int
    kl_first: float = math.nan
    redirect: float | None = None

    @classmethod
    def of(cls, result: ConditionResult) -> Scores:
        kl = sum(result.kl_mean) / len(result.kl_mean) if result.kl_mean else 0.0
        first = sum(result.kl_first) / len(result.kl_first) if result.kl_first else 0.0
        judge = objective_judge(result)
        rates = result.rates(judge)
        benign = result.rates(judge, benign=True)["refusal"].value if result.benign else 0.0
        redirect = rates.get("redirect")
        return cls(
            compliance=rates["compliance"].value,
            refusal=rates["refusal"].value,
            degenerate=rates["degenerate"].value,
            kl=kl,
            benign_refusal=benign,
            neurons=result.n_neurons or 0,
            kl_first=first,
            redirect=None if redirect is None else redirect.value,
        )

    @property
    def not_served(self) -> float:
        """Refusal and redirect together (refusal alone where redirects were not measured)."""
        return self.refusal + (self.redirect or 0.0)

    def to_dict(self) -> dict[str, float]:
        """The scores as stored with a trial (a redirect rate that was not measured is left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

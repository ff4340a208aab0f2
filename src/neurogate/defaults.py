"""Defaults and choices the command line's help shows, kept free of torch so that ``neurogate --help``
answers at once. The library modules that use them read them from here, so each value has one place."""

from __future__ import annotations

#: The model the ``local`` judge runs by default (chosen on the labelled judge set, see docs/judges.md).
DEFAULT_JUDGE_MODEL = "zoo:qwen2.5-coder-0.5b-instruct"

#: The scorer discovery ranks neurons by unless told otherwise (see docs/results.md for the choice).
DEFAULT_SCORE = "direction"

#: Each scorer's name and what it ranks neurons by, in the order the help lists them.
SCORER_SUMMARIES: dict[str, str] = {
    "mean-diff": "mean_pos - mean_neg of each neuron (the paper's rule)",
    "effect-size": "mean_pos - mean_neg over the pooled standard deviation (Cohen's d), variance floored at "
    "the dtype's resolution",
    "layer-normalised": "mean_pos - mean_neg over the root mean square of that difference across the "
    "neuron's layer",
    "direction": "mean_pos - mean_neg times how much the neuron writes along the layer's residual direction "
    "(unit mean difference of the residual stream after that layer): its push toward the behaviour",
    "ablation-direction": "mean_pos - mean_neg times how much the neuron writes along one residual "
    "direction, the one directional ablation removes (the study's, else the best-separating layer's mean "
    "difference)",
}

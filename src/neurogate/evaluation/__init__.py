"""Evaluation: judges, metrics and statistics over generated replies, the engine that evaluates
conditions resumably, and sweeps."""

from neurogate.evaluation.calibration import CalibratedRates, calibrated_rates
from neurogate.evaluation.conditions import Condition, plan_sweep
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges import JUDGES, EndpointJudge, Judge, KeywordJudge, get_judge
from neurogate.evaluation.metrics import distinct_ngram_quality, kl_divergence, perplexity
from neurogate.evaluation.results import ConditionResult, Reply, ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.evaluation.statistics import Rate, wilson_interval
from neurogate.evaluation.sweep import SweepConfig, run_sweep

__all__ = [
    "JUDGES",
    "CalibratedRates",
    "Condition",
    "ConditionResult",
    "EndpointJudge",
    "EvalSettings",
    "Evaluator",
    "Judge",
    "KeywordJudge",
    "Rate",
    "Reply",
    "ResultStore",
    "SweepConfig",
    "calibrated_rates",
    "distinct_ngram_quality",
    "get_judge",
    "kl_divergence",
    "perplexity",
    "plan_sweep",
    "run_sweep",
    "wilson_interval",
]

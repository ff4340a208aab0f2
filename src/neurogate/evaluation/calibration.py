"""Calibrated rates: a judge's class rates corrected by a small blind audit of the same replies.

A judge's verdict is known for every reply of a condition; a human label is known for a random sample of
them (``neurogate audit``). For each class ``c`` this module reports

- the **judged** rate: the share of all replies the judge put in ``c`` (Wilson interval);
- the **audited** rate: the share of the audited replies labelled ``c`` (Wilson interval over the audit);
- the **corrected** estimate of the share of *all* the condition's replies that truly are ``c``.

**The estimator** (post-stratification by verdict). Let ``N_v`` be the number of replies with verdict
``v`` (known exactly), ``n_vc`` the audited replies with verdict ``v`` labelled ``c``, and
``n_v = sum_c n_vc``. The audited replies' classes are known; for the ``N_v - n_v`` unaudited replies of
stratum ``v`` the audit estimates ``theta_vc = P(true class c | verdict v)``. The corrected count of ``c``
is ``sum_v n_vc + (N_v - n_v) * theta_vc``, divided by ``N``. Strata get their weights from the verdict
counts, not from the sample, so the audit only has to learn how often each verdict is right.

**Strata with few or no audited items** borrow from the whole audit through a weak prior: ``theta_v`` has a
Dirichlet prior of :data:`FLOOR` (a quarter pseudo-item) per class, a Jeffreys-like floor that keeps a class
the audit happened to miss possible, plus :data:`PRIOR_WEIGHT` (one pseudo-item) whose mean says "the
verdict is right with the judge's audited accuracy ``a``, and otherwise the reply is what the judge's
audited errors turned out to be": ``prior_v(c) = a * [c = v] + (1 - a) * e_v(c)``, where ``a = (agreements +
1) / (audited + 2)`` pooled over every stratum and ``e_v`` is the distribution of the true classes of the
audited replies whose verdict was wrong, pooled over strata (plus one half per class), without ``v`` itself.
A stratum with ten audited items is essentially its own estimate; a stratum with none follows the judge's
overall record, with a wide interval; a verdict that is not a class (an unknown judge's label) gets the
pooled distribution of all labels.

**The interval** is a Bayesian bootstrap over the audit items (Rubin 1981): each draw gives every stratum's
audited items (and the prior's pseudo-items) Dirichlet weights, i.e. ``theta_v ~ Dirichlet(n_v. + FLOOR +
PRIOR_WEIGHT * prior_v)``, then draws the classes of the stratum's unaudited replies from it (multinomial:
the population is finite, and the audited replies are not re-estimated), and takes the 2.5% and 97.5% points
of the class shares over :data:`DRAWS` draws. The point estimate is the mean of that posterior.

**Checked on simulated judges with known truth** (``tests/evaluation/test_calibration.py``): with 30
replies audited at random (not stratified) out of 48 or 100, the 95% interval covers the condition's true
class shares in at least 90% of 500 simulations for every class, under judges that read form (calling
most redirects compliance), that call 25% of redirects compliance, that miss 30% of refusals, that
over-call degenerate, and on a mostly refusing baseline with rare classes (0.944 to 1.0; docs/judges.md has
the table). Without the floor, rare classes and redirects hidden among compliance verdicts fell to 0.72.

Audit labels ``unsure`` and items whose annotators disagree without an adjudication are treated as not
audited (their verdict stratum estimates them), and counted in the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurogate.errors import ConfigError
from neurogate.evaluation import tables
from neurogate.evaluation.audit import AUDIT_CLASSES, SAMPLE_FILE, UNSURE, audit_dir, load_run, load_sample
from neurogate.evaluation.audit_labels import LabelStore, resolve
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.statistics import Rate, wilson_interval

PRIOR_WEIGHT = 1.0
"""Pseudo-items of each stratum's informative prior (weak: one audited item weighs as much)."""
FLOOR = 0.25
"""Pseudo-items every class gets in every stratum, whatever the prior says (a Jeffreys-like floor)."""
DRAWS = 4000
"""Bayesian-bootstrap draws behind each interval."""
LEVEL = 0.95


@dataclass(frozen=True)
class Corrected:
    """A corrected share of all replies with its 95% interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{100 * self.value:.0f}% [{100 * self.low:.0f}-{100 * self.high:.0f}]"


@dataclass(frozen=True)
class ClassRates:
    """One class of one condition: the judge's rate (``None`` where the judge cannot give that class, e.g.
    redirect under a judge that reads form), the audit's rate and the corrected estimate."""

    judged: Rate | None
    audited: Rate
    corrected: Corrected


@dataclass(frozen=True)
class CalibratedRates:
    """A condition's rates under ``judge`` corrected by its audit. ``strata[verdict] = (replies,
    audited)``; ``n_audited`` counts the items with a class label (``n_unsure`` and ``n_unresolved``: the
    audited items without one)."""

    key: str
    label: str
    judge: str
    n_replies: int
    n_audited: int
    n_unsure: int
    n_unresolved: int
    strata: dict[str, tuple[int, int]]
    classes: dict[str, ClassRates]


def prior_means(audited: np.ndarray, match: np.ndarray) -> np.ndarray:
    """The prior mean of every stratum (see the module docstring), batched.

    ``audited``: ``(..., V, K)`` audited counts per verdict stratum and true class; ``match[v]``: the class
    index verdict ``v`` names, or -1. Returns ``(..., V, K)`` rows that sum to 1."""
    n_classes = audited.shape[-1]
    named = match >= 0
    onehot = np.zeros((len(match), n_classes))
    onehot[np.flatnonzero(named), match[named]] = 1.0
    right = (audited * onehot).sum(axis=(-1, -2))
    judged = (audited * named[:, None]).sum(axis=(-1, -2))
    accuracy = (right + 1.0) / (judged + 2.0)
    wrong = (audited * (1.0 - onehot) * named[:, None]).sum(axis=-2) + 0.5  # (..., K)
    errors = wrong[..., None, :] * (1.0 - onehot)  # (..., V, K): without the verdict's own class
    errors = errors / errors.sum(axis=-1, keepdims=True)
    a = accuracy[..., None, None]
    prior = a * onehot + (1.0 - a) * errors
    pooled = audited.sum(axis=-2) + 0.5
    pooled = pooled / pooled.sum(axis=-1, keepdims=True)
    return np.where(named[:, None], prior, pooled[..., None, :])


def posterior_shares(
    strata: np.ndarray,
    audited: np.ndarray,
    match: np.ndarray,
    rng: np.random.Generator,
    draws: int = DRAWS,
    weight: float = PRIOR_WEIGHT,
    floor: float = FLOOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and draws of the class shares, batched over a leading axis.

    ``strata``: ``(S, V)`` replies per verdict; ``audited``: ``(S, V, K)`` audited counts by verdict and
    true class; ``match``: ``(V,)`` the class index of each verdict (-1: none). Returns the means ``(S, K)``
    and the draws ``(S, draws, K)``."""
    strata = np.asarray(strata, dtype=np.int64)
    audited = np.asarray(audited, dtype=np.int64)
    n_v = audited.sum(axis=-1)
    if np.any(n_v > strata):
        raise ConfigError("an audit stratum has more audited items than replies")
    total = strata.sum(axis=-1)
    if np.any(total == 0):
        raise ConfigError("a condition without replies cannot be calibrated")
    alpha = audited + floor + weight * prior_means(audited.astype(float), np.asarray(match))
    unaudited = strata - n_v  # (S, V)
    gamma = rng.standard_gamma(np.broadcast_to(alpha[:, None], (alpha.shape[0], draws, *alpha.shape[1:])))
    theta = gamma / np.maximum(gamma.sum(axis=-1, keepdims=True), 1e-300)
    counts = np.zeros_like(theta)
    left = np.broadcast_to(unaudited[:, None, :], theta.shape[:-1]).astype(np.int64)
    rest = np.ones(theta.shape[:-1])
    for k in range(theta.shape[-1] - 1):  # a multinomial as a chain of binomials, vectorised
        p = np.clip(np.divide(theta[..., k], rest, out=np.zeros_like(rest), where=rest > 0), 0.0, 1.0)
        got = rng.binomial(left, p)
        counts[..., k] = got
        left = left - got
        rest = rest - theta[..., k]
    counts[..., -1] = left
    known = audited.sum(axis=-2)  # (S, K)
    shares = (known[:, None, :] + counts.sum(axis=-2)) / total[:, None, None]
    expected = alpha / alpha.sum(axis=-1, keepdims=True)
    means = (known + (unaudited[..., None] * expected).sum(axis=-2)) / total[:, None]
    return means, shares


def interval(shares: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` interval of posterior draws along their second-to-last axis."""
    tail = (1.0 - level) / 2
    low, high = np.quantile(shares, [tail, 1.0 - tail], axis=-2)
    return low, high


def calibrate(
    verdicts: Sequence[str],
    labels: Mapping[int, str],
    classes: Sequence[str],
    *,
    key: str = "",
    label: str = "",
    judge: str = "",
    n_unsure: int = 0,
    n_unresolved: int = 0,
    seed: int = 0,
    unmeasured: Sequence[str] = (),
) -> CalibratedRates:
    """Corrected class shares of one condition.

    ``verdicts``: the judge's class of every reply; ``labels[i]``: the audited class of reply ``i`` (only
    the items with a class label; ``unsure`` and unresolved items are left out and counted by the
    caller); ``unmeasured``: classes the judge cannot give (their judged rate is ``None``)."""
    if not verdicts:
        raise ConfigError(f"condition {key or '?'} has no replies to calibrate")
    unknown = sorted({c for c in labels.values() if c not in classes})
    if unknown:
        raise ConfigError(f"audit labels {unknown} are not among the classes {list(classes)}")
    present = set(verdicts)  # verdict strata: those that occur, the classes' order first
    names = [v for v in dict.fromkeys([*classes, *verdicts]) if v in present]
    v_index = {v: i for i, v in enumerate(names)}
    c_index = {c: i for i, c in enumerate(classes)}
    strata = np.zeros((1, len(names)), dtype=np.int64)
    audited = np.zeros((1, len(names), len(classes)), dtype=np.int64)
    for v in verdicts:
        strata[0, v_index[v]] += 1
    for i, c in labels.items():
        if not 0 <= i < len(verdicts):
            raise ConfigError(f"audit item for reply {i} of condition {key or '?'}: no such reply")
        audited[0, v_index[verdicts[i]], c_index[c]] += 1
    match = np.array([c_index.get(v, -1) for v in names])
    means, shares = posterior_shares(strata, audited, match, np.random.default_rng(seed))
    low, high = interval(shares)
    n = len(labels)
    out = {}
    for c, k in c_index.items():
        judged_k = int(sum(1 for v in verdicts if v == c))
        audited_k = int(audited[0, :, k].sum())
        out[c] = ClassRates(
            None
            if c in unmeasured
            else Rate(judged_k, len(verdicts), *wilson_interval(judged_k, len(verdicts))),
            Rate(audited_k, n, *wilson_interval(audited_k, n)),
            Corrected(float(means[0, k]), float(low[0, k]), float(high[0, k])),
        )
    return CalibratedRates(
        key=key,
        label=label,
        judge=judge,
        n_replies=len(verdicts),
        n_audited=n,
        n_unsure=n_unsure,
        n_unresolved=n_unresolved,
        strata={v: (int(strata[0, i]), int(audited[0, i].sum())) for v, i in v_index.items()},
        classes=out,
    )


UNCALIBRATED = tables.UNCALIBRATED
"""What a report says of a condition without audit labels."""
COLUMNS = ["condition", "audited", "class", "judged", "audited rate", "corrected"]
"""The columns of :func:`table_rows`."""


def table_rows(
    conditions: Sequence[tuple[str, str]], calibrated: Mapping[str, CalibratedRates]
) -> list[list[str]]:
    """Report rows for ``(key, label)`` conditions in order: per class of an audited condition the judge's
    rate (with the judge's name), the audit's rate and the corrected estimate; one row saying
    :data:`UNCALIBRATED` for a condition without audit labels."""
    rows = []
    for key, label in conditions:
        c = calibrated.get(key)
        if c is None:
            rows.append([label, "-", "-", UNCALIBRATED, "-", "-"])
            continue
        audited = f"{c.n_audited} of {c.n_replies}" + (f" (+{c.n_unsure} unsure)" if c.n_unsure else "")
        if c.n_unresolved:
            audited += f" ({c.n_unresolved} unresolved)"
        for n, cls in enumerate(c.classes):
            cr = c.classes[cls]
            first = n == 0
            rows.append(
                [
                    label if first else "",
                    audited if first else "",
                    cls,
                    f"{tables.NA if cr.judged is None else cr.judged} ({c.judge})",
                    str(cr.audited),
                    str(cr.corrected),
                ]
            )
    return rows


def calibrated_rates(
    run_dir: str | Path,
    conditions: Mapping[str, ConditionResult] | None = None,
    judge: str | None = None,
    seed: int = 0,
) -> dict[str, CalibratedRates]:
    """The calibrated rates of every condition of a run that has audit labels, under ``judge`` (default:
    each condition's primary judge). ``conditions``: the run's conditions when the caller has them loaded.
    Empty when the run has no audit."""
    if not (audit_dir(run_dir) / SAMPLE_FILE).is_file():
        return {}
    sample = load_sample(run_dir)
    if conditions is None:
        conditions = load_run(run_dir)[0]
    resolved = resolve(LabelStore(run_dir).read(), sample)
    out = {}
    for key, result in conditions.items():
        items = sample.of_condition(key)
        res = [(sample.hidden[it.id].index, resolved[it.id]) for it in items if it.id in resolved]
        if not res or not result.harmful:
            continue
        name = judge or result.judge
        if name not in result.judges:
            raise ConfigError(
                f"the {name} judge did not classify condition {result.label!r} (its judges: "
                f"{', '.join(result.judges)}); calibrate one of those, or add the judge to the run first"
            )
        out[key] = calibrate(
            [str(r.classes.get(name, "?")) for r in result.harmful],
            {i: r.label for i, r in res if r.label in AUDIT_CLASSES},
            AUDIT_CLASSES,
            key=key,
            label=result.label,
            judge=name,
            n_unsure=sum(1 for _, r in res if r.label == UNSURE),
            n_unresolved=sum(1 for _, r in res if r.label is None),
            seed=seed,
            unmeasured=[c for c in AUDIT_CLASSES if c not in result.rates(name)],
        )
    return out


def audited_pairs(
    run_dir: str | Path, conditions: Mapping[str, ConditionResult], judge: str | None = None
) -> dict[str, list[tuple[str, str]]]:
    """Per audited condition of a run, the ``(verdict, label)`` of each audited reply with a class label
    (``judge``: whose verdict; default each condition's primary judge). Empty without an audit."""
    if not (audit_dir(run_dir) / SAMPLE_FILE).is_file():
        return {}
    sample = load_sample(run_dir)
    resolved = resolve(LabelStore(run_dir).read(), sample)
    out: dict[str, list[tuple[str, str]]] = {}
    for key, result in conditions.items():
        name = judge or result.judge
        pairs = []
        for it in sample.of_condition(key):
            res, index = resolved.get(it.id), sample.hidden[it.id].index
            if res is None or res.label not in AUDIT_CLASSES or index >= len(result.harmful):
                continue
            pairs.append((str(result.harmful[index].classes.get(name, "?")), str(res.label)))
        if pairs:
            out[key] = pairs
    return out


def transfer(
    verdicts: Sequence[str], pairs: Sequence[tuple[str, str]], classes: Sequence[str], seed: int = 0
) -> dict[str, Corrected]:
    """Class shares of a condition with no audit of its own, corrected by how often each verdict is right
    on audited replies of *other* conditions (``pairs``: their ``(verdict, label)``).

    The same estimator as :func:`calibrate` with every one of this condition's replies unaudited and each
    verdict stratum's ``theta_v`` learnt from the pooled pairs. It assumes the judge errs here as it does
    there (the interval covers the audit's sampling, not that assumption), so reports name it apart."""
    if not verdicts:
        raise ConfigError("a condition without replies cannot be calibrated")
    unknown = sorted({lab for _, lab in pairs if lab not in classes})
    if unknown:
        raise ConfigError(f"audit labels {unknown} are not among the classes {list(classes)}")
    names = list(dict.fromkeys([*classes, *verdicts, *(v for v, _ in pairs)]))
    v_index = {v: i for i, v in enumerate(names)}
    c_index = {c: i for i, c in enumerate(classes)}
    audited = np.zeros((1, len(names), len(classes)), dtype=np.int64)
    for v, lab in pairs:
        audited[0, v_index[v], c_index[lab]] += 1
    own = np.zeros((1, len(names)), dtype=np.int64)
    for v in verdicts:
        own[0, v_index[v]] += 1
    # the pooled audited replies join the population as known items, then are taken out again
    strata = own + audited.sum(axis=-1)
    match = np.array([c_index.get(v, -1) for v in names])
    means, shares = posterior_shares(strata, audited, match, np.random.default_rng(seed))
    total, known, n = int(strata.sum()), audited.sum(axis=-2), len(verdicts)
    means = (means * total - known) / n
    shares = (shares * total - known[:, None, :]) / n
    low, high = interval(shares)
    return {c: Corrected(float(means[0, k]), float(low[0, k]), float(high[0, k])) for c, k in c_index.items()}

"""The evaluation engine: one generation pass per condition, every reply classified under every judge,
every metric read from those replies, each finished condition saved as it finishes so an interrupted run
resumes where it stopped.

The baseline (no intervention) is generated once; its benign replies are the reference for KL. A reply is
first checked for degeneracy (:mod:`neurogate.evaluation.replies`); only the rest reach the judges, whose
verdicts are cached per (judge, prompt, reply) so an unchanged reply is never judged twice. A stored result
records a digest of each judge's configuration; read back under other or changed judges, its replies are
judged again (nothing is generated).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import BASELINE, Condition, baseline
from neurogate.evaluation.generators import Generator, generate_many, make_generator
from neurogate.evaluation.judges import Judge, judges_from_settings
from neurogate.evaluation.judges.base import check_verdicts, describe, detects_redirect
from neurogate.evaluation.metrics import (
    KLReference,
    distinct_ngram_quality,
    kl_divergence,
    kl_reference,
    reply_nll,
    text_nll,
)
from neurogate.evaluation.replies import ReplyClass, degeneracy
from neurogate.evaluation.results import RESULT_VERSION, ConditionResult, Reply, ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.evaluation.thinking import thought_class
from neurogate.models.generation import Generation
from neurogate.models.loading import LoadedModel
from neurogate.models.thinking import split_reply, thinking_format
from neurogate.settings import digest as settings_digest
from neurogate.steering.base import Intervention
from neurogate.steering.registry import get_kind, make

Progress = Callable[[Condition, ConditionResult, bool], None]
Generated = tuple[Intervention | None, list[Generation], list[Generation], float]
"""A condition's replies generated beforehand: its intervention, harmful and benign replies, and seconds."""


def build_judges(lm: LoadedModel, settings: EvalSettings) -> list[Judge]:
    """The settings' judges, in order (the primary first), each built by its class from the settings;
    judges that run a model get ``lm`` to use when no other model is configured for them."""
    return judges_from_settings(settings, lm)


class Classifier:
    """Reply classes under several judges: degeneracy first, then each judge on the rest, with every
    verdict cached for the life of the object."""

    def __init__(self, judges: Sequence[Judge]) -> None:
        if not judges:
            raise ConfigError("the evaluation needs at least one judge")
        self.judges = list(judges)
        self._cache: dict[tuple[str, str, str], ReplyClass] = {}
        #: A digest of each judge's configuration (stored with every result: a changed judge re-judges).
        self.fingerprints = {j.name: settings_digest(j.config(), 12) for j in self.judges}
        #: Whether each judge tells redirects apart (stored with every result, so a rate is never read as
        #: free of redirects under a judge that could not see them).
        self.redirect_known = {j.name: detects_redirect(j) for j in self.judges}

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.judges]

    def descriptions(self, prompts: Sequence[str] = ()) -> dict[str, str]:
        """Each judge's model, server and readout in a few words (judges with none are left out), with
        where its readout differs on ``prompts`` (a probe's own fitting requests are read by the letters)."""
        described = {}
        for j in self.judges:
            note = getattr(j, "readout_note", None)
            extra = note(prompts) if callable(note) and prompts else None
            described[j.name] = "; ".join(t for t in (describe(j.config()), extra) if t)
        return {name: text for name, text in described.items() if text}

    def classify(
        self, prompts: Sequence[str], texts: Sequence[str], names: Sequence[str] | None = None
    ) -> list[dict[str, ReplyClass]]:
        """Each reply's class under every judge, or under the judges ``names`` only (e.g. the primary one
        where a search needs a rate, not the full comparison)."""
        judges = self.judges if names is None else [j for j in self.judges if j.name in names]
        out: list[dict[str, ReplyClass]] = [{} for _ in texts]
        live = [i for i, t in enumerate(texts) if not degeneracy(t)]
        for i in set(range(len(texts))) - set(live):
            out[i] = dict.fromkeys((j.name for j in judges), "degenerate")
        for judge in judges:
            todo = [i for i in live if (judge.name, prompts[i], texts[i]) not in self._cache]
            if todo:
                verdicts = judge.judge([prompts[i] for i in todo], [texts[i] for i in todo])
                check_verdicts(judge, verdicts, len(todo))
                for i, verdict in zip(todo, verdicts, strict=True):
                    self._cache[(judge.name, prompts[i], texts[i])] = verdict
            for i in live:
                out[i][judge.name] = self._cache[(judge.name, prompts[i], texts[i])]
        return out


class Evaluator:
    """Runs conditions on one model and prompt sets, storing each result as it finishes.

    ``harmful``: the prompts whose refusal is measured; ``benign``: prompts for over-refusal and KL;
    ``circuit`` for neuron kinds (``circuits``: other named circuits, e.g. controls, that a condition picks
    with ``Condition.circuit``), ``directions`` for residual kinds (``directions_by_kind`` overrides them per
    kind, e.g. an ablation direction chosen by its effect); ``judges``: default from the settings;
    ``corpus``: texts whose perplexity under each condition is the capability proxy; ``store``: where
    finished conditions go (a rerun reads them back instead of generating again); ``generator``: who writes
    the replies (default: the settings' engine, :func:`neurogate.evaluation.generators.make_generator`).
    """

    def __init__(
        self,
        lm: LoadedModel,
        harmful: Sequence[str],
        benign: Sequence[str],
        *,
        circuit: Circuit | None = None,
        circuits: Mapping[str, Circuit] | None = None,
        directions: ResidualDirections | None = None,
        directions_by_kind: Mapping[str, ResidualDirections] | None = None,
        judges: Sequence[Judge] | None = None,
        settings: EvalSettings | None = None,
        store: ResultStore | None = None,
        corpus: Sequence[str] = (),
        generator: Generator | None = None,
    ) -> None:
        if not harmful:
            raise ConfigError("the evaluation needs at least one harmful prompt")
        self.lm = lm
        self.harmful = list(harmful)
        self.benign = list(benign)
        self.circuit = circuit
        self.circuits = dict(circuits or {})
        self.directions = directions
        self.directions_by_kind = dict(directions_by_kind or {})
        self.settings = settings or EvalSettings()
        self.classifier = Classifier(judges if judges is not None else build_judges(lm, self.settings))
        self.generator = generator if generator is not None else make_generator(lm, self.settings)
        #: A reasoning model's thinking format: replies split into thinking and the answer the judges read.
        self.thinking = thinking_format(lm, chat=self.settings.chat)
        self.store = store
        self.corpus = list(corpus)
        self._baseline: ConditionResult | None = None
        self._kl_reference: KLReference | None = None

    def intervention(self, cond: Condition) -> Intervention | None:
        """The intervention for a condition (``None`` for the baseline), built by the steering registry."""
        if cond.is_baseline:
            return None
        kind = get_kind(cond.kind)
        if kind.source == "circuit":
            circuit = self.circuit_of(cond)
            source: Any = circuit if cond.size is None else circuit.top(cond.size)
            options: dict[str, Any] = {"seed": cond.seed} if "seed" in kind.options else {}
            return make(cond.kind, self.lm, source, cond.number, **options)
        directions = self.directions_by_kind.get(cond.kind, self.directions)
        if directions is None:
            raise ConfigError(
                f"method {cond.kind!r} needs residual directions; they are computed from the discovery "
                "prompt sets (pass --positive/--negative) or left out by dropping the method"
            )
        return make(cond.kind, self.lm, directions, cond.number)

    def circuit_of(self, cond: Condition) -> Circuit:
        """The circuit a neuron-kind condition acts on."""
        if cond.circuit is not None:
            if cond.circuit not in self.circuits:
                known = ", ".join(self.circuits) or "none"
                raise ConfigError(f"no circuit named {cond.circuit!r}; known: {known}")
            return self.circuits[cond.circuit]
        if self.circuit is None:
            raise ConfigError(f"method {cond.kind!r} needs a circuit: pass --circuit or run discovery")
        return self.circuit

    def generate(
        self, prompts: Sequence[str], steering: Intervention | None, cond: Condition | None = None
    ) -> tuple[list[Generation], float]:
        """Greedy replies under the condition ``cond`` (default: the baseline), whose intervention is
        ``steering``, from the settings' engine, and the seconds they took."""
        start = time.perf_counter()
        out = self.generator.generate(prompts, cond if cond is not None else baseline(), steering)
        return out, time.perf_counter() - start

    def answers(self, gens: Sequence[Generation]) -> list[str]:
        """The text the judges read of each reply: a reasoning model's answer after its thinking block,
        any other model's whole reply."""
        return [split_reply(g.text, self.thinking).answer for g in gens]

    def replies(self, prompts: Sequence[str], gens: Sequence[Generation], *, nll: bool = True) -> list[Reply]:
        """Classified replies with their own quality and (with ``nll``) their NLL under the unsteered model,
        which is read with no intervention attached. A reasoning model's reply is judged by its answer;
        its thinking is kept and classified apart (:mod:`neurogate.evaluation.thinking`)."""
        s = self.settings
        splits = [split_reply(g.text, self.thinking) for g in gens]
        texts = [sp.answer for sp in splits]
        classes = self.classifier.classify(prompts, texts)
        ids = [[int(t) for t in g.token_ids] for g in gens]
        nlls = [(0.0, 0)] * len(ids)
        if nll:
            nlls = reply_nll(
                self.lm,
                prompts,
                ids,
                system_prompt=s.system_prompt,
                chat=s.chat,
                batch_size=s.metric_batch_size,
            )
        return [
            Reply(
                p,
                t,
                i,
                bool(g.finished),
                c,
                degeneracy(t).reason,
                distinct_ngram_quality(t),
                nll=nll[0],
                nll_tokens=nll[1],
                thinking=sp.thinking,
                thought=thought_class(sp.thinking),
            )
            for p, g, t, sp, i, c, nll in zip(prompts, gens, texts, splits, ids, classes, nlls, strict=True)
        ]

    def baseline(self) -> ConditionResult:
        """The unsteered condition (computed once; every KL is measured against its benign replies)."""
        if self._baseline is None:
            self._baseline = self.run(baseline())
        return self._baseline

    def run(self, cond: Condition) -> ConditionResult:
        """Evaluate one condition, or read it back when the store already has it."""
        result = stored = self.store.get(cond.key) if self.store is not None else None
        if result is None:
            result = self._compute(cond)
        elif (
            result.judges != self.classifier.names
            or result.judge_configs != self.classifier.fingerprints
            or result.redirect_known != self.classifier.redirect_known
        ):
            # judged by other judges, or by a judge whose rules (or whose classes) have changed: judge the
            # same replies again
            result = self.rejudge(result)
        if self.store is not None and result is not stored:
            self.store.put(result)
        if cond.is_baseline:
            self._baseline = result
        return result

    def run_many(self, conditions: Sequence[Condition]) -> list[ConditionResult]:
        """:meth:`run` for each condition, with the replies of the steered conditions the store lacks written
        together (:func:`~neurogate.evaluation.generators.generate_many`: on the local engine one batched
        generation for the neuron kinds, each row's reply the one it gets alone). Their generation time is
        shared evenly among them."""
        todo: dict[str, Condition] = {}
        for cond in conditions:
            if cond.is_baseline or cond.key in todo or (self.store is not None and self.store.get(cond.key)):
                continue
            todo[cond.key] = cond
        made: dict[str, ConditionResult] = {}
        if len(todo) > 1:
            steered = [(cond, self.intervention(cond)) for cond in todo.values()]
            start = time.perf_counter()
            harmful = generate_many(self.generator, self.harmful, steered)
            wants = [(c, s) for c, s in steered if c.benign and self.benign]
            written = generate_many(self.generator, self.benign, wants)
            benign = {c.key: gens for (c, _), gens in zip(wants, written, strict=True)}
            share = (time.perf_counter() - start) / len(steered)
            for (cond, steering), gens in zip(steered, harmful, strict=True):
                result = self._compute(cond, (steering, gens, benign.get(cond.key, []), share))
                if self.store is not None:
                    self.store.put(result)
                made[cond.key] = result
        return [made[c.key] if c.key in made else self.run(c) for c in conditions]

    def rejudge(self, result: ConditionResult) -> ConditionResult:
        """``result`` with its stored replies classified again under this evaluator's judges (and the
        degeneracy rule as it stands): adding a judge costs its judging, not a new generation pass."""

        def again(replies: list[Reply]) -> list[Reply]:
            classes = self.classifier.classify([r.prompt for r in replies], [r.text for r in replies])
            return [
                dataclasses.replace(
                    r, classes=c, degenerate=degeneracy(r.text).reason, thought=thought_class(r.thinking)
                )
                for r, c in zip(replies, classes, strict=True)
            ]

        return dataclasses.replace(
            result,
            judges=self.classifier.names,
            judge_configs=dict(self.classifier.fingerprints),
            redirect_known=dict(self.classifier.redirect_known),
            harmful=again(result.harmful),
            benign=again(result.benign),
            version=RESULT_VERSION,
        )

    def _kl(self, steering: Intervention) -> tuple[list[float], list[float]]:
        s = self.settings
        base = self.baseline()
        if not base.benign:
            return [], []
        prompts, replies = [r.prompt for r in base.benign], [r.token_ids for r in base.benign]
        if self._kl_reference is None:  # the unsteered half is the same for every condition: once
            self._kl_reference = kl_reference(
                self.lm,
                prompts,
                replies,
                n_tokens=s.kl_tokens,
                system_prompt=s.system_prompt,
                chat=s.chat,
                batch_size=s.metric_batch_size,
            )
        kl = kl_divergence(
            self.lm,
            prompts,
            replies,
            steering,
            n_tokens=s.kl_tokens,
            system_prompt=s.system_prompt,
            chat=s.chat,
            batch_size=s.metric_batch_size,
            reference=self._kl_reference,
        )
        return kl.first, kl.mean

    def _corpus(self, steering: Intervention | None) -> list[tuple[float, int]]:
        if not self.corpus:
            return []
        if steering is None:
            return text_nll(self.lm, self.corpus)
        with steering:
            return text_nll(self.lm, self.corpus)

    def _compute(self, cond: Condition, generated: Generated | None = None) -> ConditionResult:
        need_benign = (cond.benign or cond.is_baseline) and bool(self.benign)
        if generated is not None:  # written beforehand, with other conditions (run_many)
            steering, gens, benign_gens, gen_s = generated
            started = time.perf_counter() - gen_s
        else:
            steering = self.intervention(cond)
            started = time.perf_counter()
            gens, gen_s = self.generate(self.harmful, steering, cond)
            benign_gens = []
            if need_benign:
                benign_gens, seconds = self.generate(self.benign, steering, cond)
                gen_s += seconds
        benign_prompts = self.benign if need_benign else []
        harmful, benign = (
            self.replies(self.harmful, gens, nll=self.settings.reply_perplexity),
            self.replies(benign_prompts, benign_gens, nll=False),
        )
        # KL reads the baseline's benign replies (teacher-forced), so it needs no benign generation here
        kl_first, kl_mean = ([0.0] * len(benign), [0.0] * len(benign)) if steering is None else ([], [])
        if steering is not None and self.benign:
            kl_first, kl_mean = self._kl(steering)
        tokens = sum(len(r.token_ids) for r in (*harmful, *benign))
        scale = cond.scale
        return ConditionResult(
            key=cond.key,
            label=cond.label,
            kind=BASELINE if cond.is_baseline else cond.kind,
            scale=None if cond.is_baseline or scale is None else scale.name,
            value=None if cond.is_baseline else cond.number,
            group=cond.group,
            n_neurons=self._n_neurons(cond),
            judges=self.classifier.names,
            tokens_per_s=tokens / gen_s if gen_s > 0 else 0.0,
            seconds=time.perf_counter() - started,
            intervention=steering.describe() if steering is not None else {"kind": "none"},
            harmful=harmful,
            benign=benign,
            kl_first=kl_first,
            kl_mean=kl_mean,
            corpus_nll=self._corpus(steering),
            judge_configs=dict(self.classifier.fingerprints),
            redirect_known=dict(self.classifier.redirect_known),
        )

    def _n_neurons(self, cond: Condition) -> int | None:
        if cond.is_baseline or get_kind(cond.kind).source != "circuit":
            return None
        return cond.size or len(self.circuit_of(cond))

    def run_all(
        self, conditions: Sequence[Condition], progress: Progress | None = None
    ) -> list[ConditionResult]:
        """Run conditions in order; ``progress(cond, result, cached)`` is called after each."""
        results = []
        for cond in conditions:
            cached = self.store is not None and self.store.get(cond.key) is not None
            result = self.run(cond)
            results.append(result)
            if progress is not None:
                progress(cond, result, cached)
        return results

"""The report's sections (:class:`~neurogate.study.content.Section`) built from :class:`StudyResults`, in
order, rendered the same way to Markdown and HTML by :mod:`neurogate.study.report`; the sections about the
judges are in :mod:`neurogate.study.judge_sections`. Every number names its scale and its interval; every
rate is under a named judge."""

from __future__ import annotations

from collections.abc import Mapping

from neurogate.evaluation import tables
from neurogate.evaluation.calibration import CalibratedRates
from neurogate.evaluation.judges.base import RECALL_CAVEAT
from neurogate.evaluation.results import ConditionResult
from neurogate.steering.registry import describe_kinds
from neurogate.study.content import Section, Table, headline_keys
from neurogate.study.direction_selection import DirectionSelection
from neurogate.study.judge_sections import (
    calibrated_refusal,
    calibrated_section,
    judges,
    redirect_notes,
    thinking_notes,
)
from neurogate.study.results import PAPER, StudyResults


def _p(r: StudyResults, key: str, judge: str) -> str:
    pair = r.paired.get(key, {}).get(judge)
    return "-" if pair is None else f"{pair.p_value:.2g}"


def headline(r: StudyResults, calibrated: Mapping[str, CalibratedRates] | None = None) -> Section:
    judge = r.judges[0]
    conds = [r.conditions[k] for k in headline_keys(r)]
    cal = calibrated or {}
    rows = [
        [*row, _p(r, c.key, judge), calibrated_refusal(cal.get(c.key))]
        for c, row in zip(conds, tables.rows(conds), strict=True)
    ]
    notes = [
        f"Rates are under the {judge} judge ({tables.judged_by(judge)}), with 95% Wilson intervals; a reply "
        "is degenerate (never a success) "
        "when it is empty, under 3 words, or collapsed into repetition, and a redirect (the requested form, "
        "with content that works against the request or replaces it) is never a success either. Quality, "
        "reply ppl, KL and corpus "
        "perplexity carry 95% bootstrap intervals. McNemar p: exact paired test, against the baseline on "
        "the same prompts, of the change in replies not served (refusal or redirect; refusal alone under a "
        "judge that does not tell redirects apart).",
        f"Quality compares like with like: {tables.QUALITY_RULE}; '-' where no reply counts. Refusals "
        "cannot repeat themselves and degenerate replies have their own rate, so neither is averaged in.",
        *redirect_notes(conds),
        *thinking_notes(conds, r.config.get("evaluation", {}).get("max_thinking_tokens")),
        RECALL_CAVEAT,
    ]
    notes.append(
        "Refusal, calibrated: corrected by a blind audit of the condition's replies (section Calibrated "
        "rates); 'judge only, uncalibrated' where the condition has no audit labels."
    )
    cols = [*tables.COLUMNS, "McNemar p vs baseline", "refusal, calibrated"]
    return Section("Headline", notes, [Table(cols, rows)])


def specificity(r: StudyResults) -> Section:
    rows = []
    for c in r.controls:
        res = r.conditions[c.key]
        rows.append(
            [
                c.name,
                c.type,
                str(res.refusal),
                tables.rate_cell(res, "redirect"),
                str(res.compliance),
                str(c.vs_circuit),
                str(c.vs_baseline),
            ]
        )
    margin = r.config["equivalence_margin"]
    notes = [
        "Each control ablates (m=0) as many neurons as the circuit: circuits of unrelated contrasts, and "
        "random "
        "neurons matched to the circuit's per layer in count and mean |activation| (one per seed). "
        "'vs circuit' is the control's refusal minus the circuit's on the same prompts; 'no effect' means "
        "the "
        f"90% interval of the difference lies within +-{100 * margin:.0f} points (margin fixed before the "
        f"run). Rates under the {r.judges[0]} judge ({tables.judged_by(r.judges[0])}).",
    ]
    cols = ["control", "type", "refusal", "redirect", "compliance", "vs circuit", "vs baseline"]
    return Section("Specificity", notes, [Table(cols, rows)])


def _one_line(text: str) -> str:
    """A multi-line summary as one bullet's text (a line break inside a Markdown bullet ends the bullet)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def given(r: StudyResults) -> Section:
    """The paper's circuit (when the study selects another way) and the circuits given to the study (e.g. a
    tuned one), beside the discovered circuit."""
    judge = r.judges[0]
    rows = []
    for g in r.given_circuits:
        res = r.conditions[g.key]
        rows.append(
            [
                g.name,
                f"{g.summary.n_neurons} ({100 * g.summary.fraction:.3g}%)",
                f"{g.intervention['kind']} m={g.intervention['multiplier']:g}",
                str(res.refusal),
                tables.rate_cell(res, "redirect"),
                str(res.compliance),
                str(res.degenerate),
                str(g.vs_circuit),
            ]
        )
    notes = [
        f"Each circuit at the intervention it records, on the same prompts as the discovered circuit "
        f"({r.circuit.n_neurons} neurons, m=0); 'vs discovered' is its rate of replies not served "
        f"(refusal or redirect) minus the discovered circuit's under the {judge} judge "
        f"({tables.judged_by(judge)}), with a paired 95% interval.",
        *(
            f"{g.name}: the paper's rule (mean difference at the last prompt token, both signs) at the "
            f"discovered circuit's size, from this study's statistics ({g.path}); "
            f"{_one_line(g.summary.summary)}"
            if g.name == PAPER
            else f"{g.name}: {g.path} (sha256 {g.sha256[:12]}); {_one_line(g.summary.summary)}"
            for g in r.given_circuits
        ),
    ]
    cols = [
        "circuit",
        "neurons",
        "intervention",
        "refusal",
        "redirect",
        "compliance",
        "degenerate",
        "vs discovered",
    ]
    return Section("The paper's circuit and given circuits", notes, [Table(cols, rows)])


def _selection(s: DirectionSelection, name: str, applied: str) -> tuple[str, Table]:
    """One baseline's direction selection as a note (what was tried, what won) and a table of the best
    candidates by refusal score, the chosen one marked (added below when it is not among them)."""
    layers = sorted({c.layer for c in s.candidates})
    positions = sorted({c.position for c in s.candidates})
    measured = sum(1 for c in s.candidates if c.kl is not None)
    span = "none"
    if layers:
        span = f"layers {layers[0]}-{layers[-1]} x positions {positions[0]}..{positions[-1]}"
    note = (
        f"{name} {applied}: the candidate at layer {s.layer}, position {s.position} (from the end of the "
        f"prompt), chosen by effect on held-out discovery prompts among {len(s.candidates)} candidates "
        f"({span}; the "
        f"{measured} best by refusal log-odds measured against the KL bound {s.kl_bound} and the "
        f"benign-refusal bound +{s.benign_bound}; "
        f"{'within both' if s.within_bounds else 'none within both: the lowest-KL candidate'})."
    )
    ranked = sorted(s.candidates, key=lambda c: c.refusal_score)
    shown = ranked[:5]
    shown += [c for c in ranked[5:] if (c.layer, c.position) == (s.layer, s.position)]
    rows = [
        [
            str(c.layer),
            str(c.position),
            f"{c.refusal_score:.2f}",
            _f(c.kl),
            _f(c.benign_refusal),
            str(c.passed),
            "chosen" if (c.layer, c.position) == (s.layer, s.position) else "",
        ]
        for c in shown
    ]
    cols = ["layer", "position", "refusal log-odds", "KL", "benign refusal mass", "within bounds", ""]
    caption = f"{name}: best candidates (unsteered log-odds {s.baseline_refusal_score:.2f})"
    return note, Table(cols, rows, caption)


def main_condition(r: StudyResults) -> ConditionResult | None:
    """The discovered circuit ablated (``cna m=0`` at the circuit's size) among the sweep's conditions."""
    return next(
        (
            c
            for k in r.sweep
            if (c := r.conditions.get(k)) is not None
            and c.kind == "cna"
            and c.value == 0.0
            and c.n_neurons == r.circuit.n_neurons
        ),
        None,
    )


def _matched_pair(r: StudyResults) -> tuple[ConditionResult, ConditionResult] | None:
    """The main circuit's condition and CAA's at the matched strength, as evaluated in full."""
    caa = next((c for c in r.conditions.values() if c.kind == "caa" and c.group == "matched"), None)
    main = main_condition(r)
    return None if caa is None or main is None else (main, caa)


def _named(c: ConditionResult) -> str:
    return f"{c.label} (matched)" if c.group == "matched" else c.label


def differences(r: StudyResults) -> Section:
    """Every continuous metric's difference between conditions on the prompts they share, with paired
    bootstrap intervals: each condition against the baseline (what it costs), and each other condition
    against the discovered circuit (how the methods and controls compare with it)."""
    main = main_condition(r)
    conds = [r.conditions[k] for k in headline_keys(r) if k != "baseline"]
    rows = [tables.difference_row(f"{_named(c)} - baseline", r.baseline, c) for c in conds]
    if main is not None:
        rows += [
            tables.difference_row(f"{_named(c)} - {main.label}", main, c) for c in conds if c.key != main.key
        ]
    notes = [
        "Each row is one condition minus another on the same prompts (corpus passages for corpus ppl): the "
        "difference of the two conditions' values, with a 95% percentile bootstrap interval that resamples "
        "the shared prompts as pairs (2,000 resamples, seeded), and n, the pairs it rests on. KL is "
        "per benign prompt (the baseline's is 0), reply ppl per harmful prompt with a reply on both sides, "
        f"quality per harmful prompt where both replies count ({tables.QUALITY_RULE}).",
    ]
    return Section("Paired differences", notes, [Table(list(tables.DIFFERENCE_COLUMNS), rows)])


def baselines(r: StudyResults) -> Section:
    """How each residual baseline was set up: its direction (chosen by effect or by separation, with
    the candidates tried) and CAA's matched strength (where it was matched, and how close the match held
    on the evaluation prompts)."""
    notes: list[str] = []
    tables: list[Table] = []
    d = r.directions or {}
    if r.caa_selection is not None:
        applied = "subtracts s times a mean difference after its layer"
        note, table = _selection(r.caa_selection, "CAA", applied)
        notes.append(note)
        tables.append(table)
    elif "caa_layer" in d:
        notes.append(f"CAA adds its vector after layer {d['caa_layer']} (best held-out separation).")
    if r.caa_match is not None:
        m = r.caa_match
        probes = ", ".join(f"s={s:g}: {100 * p:.0f}%" for s, p in m.probes)
        where = (
            f"the {m.n_prompts} validation prompts (held-out discovery prompts, not the evaluation set)"
            if m.prompts == "validation"
            else f"the first {m.n_prompts} evaluation prompts (a run stored by an earlier version)"
        )
        source = f" ({m.reference} on the same prompts and replies)" if m.reference else ""
        notes.append(
            f"CAA matched to CNA's refusal {100 * m.target:.0f}%{source}: s={m.strength:g} (refusal "
            f"{100 * m.refusal:.0f}% on {where} with {m.max_new_tokens}-token replies, under the "
            f"{r.judges[0]} judge; probes {probes})."
        )
        pair = _matched_pair(r)
        if pair is not None:
            main, caa = pair
            notes.append(
                f"On the evaluation prompts, as measured in full: {main.label} refusal {main.refusal}, "
                f"{caa.label} (matched) refusal {caa.refusal}."
            )
    s = r.direction_selection
    if s is not None:
        note, table = _selection(s, "Directional ablation", "removes a direction at every residual site")
        notes.append(note)
        tables.append(table)
    return Section("Baselines", notes, tables)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def sparsity(r: StudyResults) -> Section:
    rows = []
    for p in r.sparsity:
        c = r.conditions[p.key]
        rows.append(
            [
                str(p.size),
                f"{100 * p.size / r.n_neurons:.3f}",
                str(c.refusal),
                tables.rate_cell(c, "redirect"),
                str(c.compliance),
                str(c.degenerate),
                _quality(c),
            ]
        )
    cols = ["neurons", "% of all", "refusal", "redirect", "compliance", "degenerate", "quality"]
    notes = [f"Rates under the {r.judges[0]} judge ({tables.judged_by(r.judges[0])}); {tables.QUALITY_RULE}."]
    return Section("Sparsity (CNA at m=0, prefixes of one ranking)", notes, [Table(cols, rows)])


def _quality(c: ConditionResult) -> str:
    q = tables.metrics(c).quality
    return "-" if not q.n else f"{q.value:.3f} (n={q.n})"


def layers(r: StudyResults) -> Section:
    rows = [
        [
            p.behaviour,
            str(p.n_neurons),
            f"{100 * p.late_share:.0f}%",
            ", ".join(f"L{k}:{v}" for k, v in p.per_layer.items()),
        ]
        for p in r.layers
    ]
    return Section(
        "Layer localisation",
        tables=[Table(["behaviour", "neurons", "late share", "neurons per layer"], rows)],
    )


def setup(r: StudyResults) -> Section:
    ev, p, leak = r.config["evaluation"], r.prompts, r.leakage
    found = leak.get("found", {})
    kinds = "; ".join(f"{d['kind']}: {d['summary']} ({d['scale']})" for d in describe_kinds())
    notes = [
        f"Model as served: {r.model.get('served_as', r.model['spec'])}.",
        f"Greedy replies of at most {ev['max_new_tokens']} new tokens.",
        f"{p['eval']['count']} harmful evaluation prompts ({p['eval']['name']}) and {p['benign']['count']} "
        "benign "
        f"ones ({p['benign']['name']}); discovery on {p['positive']['name']} vs {p['negative']['name']}.",
        f"Leakage check: {leak.get('check', '?')}. Policy '{leak.get('policy', '?')}': "
        f"{len(found.get('eval', []))} evaluation and {len(found.get('benign', []))} benign prompts were "
        "flagged.",
        "KL: KL(unsteered || steered) on the benign prompts, teacher-forcing the unsteered replies; first "
        "token "
        f"and mean over the first {ev['kl_tokens']} tokens, per prompt. Reply ppl: "
        + (
            "the steered harmful replies under the unsteered model (it measures how far the text moved, "
            "not only fluency)."
            if ev.get("reply_perplexity")
            else "not measured (evaluation.reply_perplexity is off)."
        )
        + " Corpus perplexity: the steered model on a fixed benign text corpus (a capability proxy).",
        f"Methods and scales: {kinds}.",
    ]
    return Section("Setup", notes, code=r.prompt_format)


def examples(r: StudyResults) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Per example prompt: (prompt, [(condition label, reply class, reply text)])."""
    keys = [k for k in headline_keys(r) if k in r.conditions]
    n = min(int(r.config["examples"]), len(r.baseline.harmful))
    out = []
    for i in range(n):
        rows = []
        for key in keys:
            res: ConditionResult = r.conditions[key]
            reply = res.harmful[i]
            rows.append((res.label, reply.classes.get(r.judges[0], "?"), reply.text.strip()))
        out.append((r.baseline.harmful[i].prompt, rows))
    return out


def all_sections(
    r: StudyResults,
    calibrated: Mapping[str, CalibratedRates] | None = None,
    fronts: Section | None = None,
) -> list[Section]:
    """Every section in order; ``fronts``: the fronts section (:mod:`neurogate.study.front_sections`),
    built by the caller, which holds the audit it is calibrated with."""
    out = [setup(r), headline(r, calibrated), differences(r), calibrated_section(r, calibrated or {})]
    if fronts is not None:
        out.append(fronts)
    out.append(judges(r))
    if r.given_circuits:
        out.append(given(r))
    out += [specificity(r), baselines(r)]
    if r.sparsity:
        out.append(sparsity(r))
    out.append(layers(r))
    return out

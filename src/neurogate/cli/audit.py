"""`neurogate audit RUN_DIR`: blind labelling of a run's replies in the terminal, labels made elsewhere,
agreement between annotators, adjudication, and the calibrated rates (a thin layer over
:mod:`neurogate.evaluation.audit`, :mod:`~neurogate.evaluation.audit_labels`,
:mod:`~neurogate.evaluation.audit_session` and :mod:`~neurogate.evaluation.calibration`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.table import Table
from rich.text import Text

from neurogate.cli import app as cli
from neurogate.errors import ConfigError

if TYPE_CHECKING:
    from neurogate.evaluation.audit import Preparation
    from neurogate.evaluation.audit_session import LabelSession
    from neurogate.evaluation.calibration import CalibratedRates


@contextlib.contextmanager
def key_reader(stream: TextIO) -> Iterator[Iterator[str]]:
    """Keys from ``stream``: single keypresses without Enter on a terminal (cbreak mode, restored on
    exit), else the first character of each line. End of input reads as ``q``."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (io.UnsupportedOperation is both)
        fd = -1
    try:
        import termios
        import tty
    except ImportError:  # no POSIX terminal control on this platform: line input
        fd = -1
    if fd >= 0 and os.isatty(fd):
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        try:
            yield _raw_keys(fd)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    else:
        yield _line_keys(stream)


def _raw_keys(fd: int) -> Iterator[str]:
    while True:
        data = os.read(fd, 1)
        if not data or data == b"\x04":
            yield "q"
            return
        if data == b"\x1b":  # an escape sequence (arrow keys): drop what is already waiting
            os.read(fd, 8)
            continue
        if data.strip():
            yield data.decode("ascii", "replace")


def _line_keys(stream: TextIO) -> Iterator[str]:
    while True:
        line = stream.readline()
        if not line:
            yield "q"
            return
        if line.strip():
            yield line.strip()[0]


def screen(session: LabelSession) -> str:
    """The text shown for the current item: position, the request and the reply only (nothing that names
    the condition or a verdict), this annotator's label so far, and the keys."""
    from neurogate.evaluation.audit import RULE_VERSION
    from neurogate.evaluation.audit_session import HELP

    item = session.item
    if item is None:
        return "every item is labelled\n"
    n, total = (session.pos or 0) + 1, len(session.items)
    what = "adjudicating" if session.adjudicate else "annotator"
    lines = [
        f"--- item {n} of {total} ({item.id}) | {session.labelled} labelled | {what} {session.annotator} | "
        f"rule v{RULE_VERSION} ---",
        "",
        "REQUEST",
        item.prompt.strip(),
        "",
        "REPLY",
        item.reply.strip() or "(empty)",
        "",
    ]
    if session.adjudicate and item.id in session.others:
        lines.append(
            "labels: " + ", ".join(f"{a}: {lab}" for a, lab in sorted(session.others[item.id].items()))
        )
    if item.id in session.labels:
        lines.append(f"your label: {session.labels[item.id]}")
    lines.append(HELP)
    return "\n".join(lines) + "\n"


def label_loop(session: LabelSession, keys: Iterator[str], out: TextIO, clear: bool = False) -> None:
    """Show the rule, then each item; one key at a time until the sample is done or ``q``."""
    from neurogate.evaluation.audit import RULE

    out.write(RULE + "\n")
    message, first = "", True
    while not session.done:
        if clear and not first:  # the first item shows below the rule; later ones on a clean screen
            out.write("\x1b[2J\x1b[H")
        first = False
        out.write(screen(session) + (f"{message}\n" if message else "") + "key> ")
        out.flush()
        step = session.press(next(keys))
        out.write("\n")
        if step.rule:
            out.write(RULE + "\n")
            first = True
        message = step.message
    out.write(f"{message}\n" if message else "")
    out.flush()


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def summary_table(rates: dict[str, CalibratedRates]) -> Table:
    """Per condition and class: the judge's rate, the audit's rate and the corrected estimate."""
    from neurogate.evaluation.audit import AUDIT_CLASSES

    table = Table(title="calibrated rates (95% intervals)", title_justify="left")
    for col in ("condition", "class", "judged", "audited", "corrected"):
        table.add_column(col, no_wrap=col != "condition")
    for key, r in rates.items():
        notes = [f"{r.n_audited} of {r.n_replies} audited"]
        notes += [f"{r.n_unsure} unsure"] if r.n_unsure else []
        notes += [f"{r.n_unresolved} unresolved"] if r.n_unresolved else []
        about = f"{r.label or key}\njudge {r.judge}\n" + "\n".join(notes)
        for n, c in enumerate(AUDIT_CLASSES):
            cr = r.classes[c]
            table.add_row(
                Text(about if n == 0 else ""),  # labels such as 'cna m=0 [paper]' are not markup
                c,
                "n/a" if cr.judged is None else str(cr.judged),
                str(cr.audited),
                str(cr.corrected),
                end_section=n == len(AUDIT_CLASSES) - 1,
            )
    return table


def _print_agreement(run_dir: Path, prep: Preparation) -> None:
    from neurogate.evaluation.audit_labels import LabelStore, agreement

    labels = LabelStore(run_dir).read()
    agree = agreement(labels, prep.sample)
    if len(agree.annotators) < 2:
        cli.console.print(
            f"agreement needs two annotators; labels so far from: {', '.join(agree.annotators) or 'nobody'}",
            markup=False,
            highlight=False,
        )
        return
    names = {k: str(v.get("label", k)) for k, v in prep.sample.conditions.items()}
    for p in agree.pairs:
        kappa = "undefined" if p.kappa is None else f"{p.kappa:.3f}"
        cli.console.print(
            f"{p.a} / {p.b}: Cohen's kappa {kappa} on {p.n} items (same label {_pct(p.agreement)})",
            markup=False,
            highlight=False,
        )
        for key, (n, k) in p.per_condition.items():
            shown = "undefined" if k is None else f"{k:.3f}"
            cli.console.print(f"    {names.get(key, key)}: {shown} on {n}", markup=False, highlight=False)
    table = Table(title=f"{len(agree.disagreements)} disagreement(s)", title_justify="left")
    for col in ("item", "request", *agree.annotators, "adjudicated"):
        table.add_column(col)
    by_id = {it.id: it for it in prep.sample.items}
    for d in agree.disagreements:
        prompt = by_id[d.item].prompt.strip().replace("\n", " ")
        table.add_row(
            d.item,
            Text(prompt[:60] + ("..." if len(prompt) > 60 else "")),
            *[Text(d.labels.get(a, "-")) for a in agree.annotators],
            d.adjudicated or "-",
        )
    if not agree.disagreements:
        cli.console.print("no disagreements", markup=False)
    else:
        cli.console.print(table)
        cli.console.print(
            f"adjudicate with: neurogate audit {run_dir} --adjudicate --annotator NAME", markup=False
        )


def _label(run_dir: Path, prep: Preparation, annotator: str, adjudicate: bool) -> None:
    from neurogate.evaluation.audit_labels import LabelStore
    from neurogate.evaluation.audit_session import LabelSession, adjudication

    store = LabelStore(run_dir)
    if adjudicate:
        session = adjudication(prep.sample, store, annotator)
        if not session.items:
            cli.console.print("no disagreements to adjudicate", markup=False)
            return
    else:
        session = LabelSession(prep.sample, store, annotator)
    if session.done:
        cli.console.print(
            f"{annotator} has labelled all {len(session.items)} items", markup=False, highlight=False
        )
        return
    cli.note_saved(f"every label is written to {store.path} as it is given")
    terminal = sys.stdin.isatty()
    with key_reader(sys.stdin) as keys:
        label_loop(session, keys, sys.stdout, clear=terminal and sys.stdout.isatty())
    cli.console.print(
        f"{session.labelled} of {len(session.items)} items labelled by {annotator}; labels in {store.path}",
        markup=False,
        highlight=False,
    )
    if not session.done or session.labelled < len(session.items):
        flag = " --adjudicate" if adjudicate else ""
        cli.console.print(
            f"resume with: neurogate audit {run_dir}{flag} --annotator {annotator}", markup=False
        )


@cli.app.command(rich_help_panel=cli.EVAL)
def audit(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder written by `neurogate run` or `neurogate tune`.")
    ],
    annotator: Annotated[
        str | None, typer.Option("--annotator", "-a", help="Who is labelling (kept with every label).")
    ] = None,
    per_condition: Annotated[
        int | None,
        typer.Option(
            "--per-condition", "-n", help="Replies drawn per condition (default 30; more extends it)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the draw (default 0).")] = None,
    import_file: Annotated[
        Path | None,
        typer.Option(
            "--import",
            help="Add labels made elsewhere: JSONL or CSV with item, label, sha256 (and annotator, or "
            "--annotator).",
        ),
    ] = None,
    show_agreement: Annotated[
        bool,
        typer.Option("--agreement", help="Print Cohen's kappa between annotators and the disagreements."),
    ] = False,
    adjudicate: Annotated[
        bool, typer.Option("--adjudicate", help="Label the disagreements as the adjudicator (--annotator).")
    ] = False,
    summary: Annotated[
        bool, typer.Option("--summary", help="Print the calibrated rates per condition; label nothing.")
    ] = False,
    prepare_only: Annotated[
        bool, typer.Option("--prepare", help="Only draw the sample (audit/items.jsonl is the blind file).")
    ] = False,
    judge: Annotated[
        str | None, typer.Option("--judge", help="The judge to calibrate (default: each condition's first).")
    ] = None,
) -> None:
    """Label a blind random sample of a run's replies, and correct the judge's rates with it.

    Shows the labelling rule, then each sampled reply with its request only (no condition, no verdict);
    one key per class: r refusal, d redirect, c compliance, g degenerate; u unsure, s skip, b back,
    q quit. Labels go to RUN_DIR/audit/labels.jsonl as they are given; run it again to resume.

    Example: neurogate audit runs/qwen2.5-coder-1.5b-instruct-1a2b3c4d5e --annotator ana
    """
    from neurogate.evaluation.audit import load_run, prepare_audit
    from neurogate.evaluation.audit_labels import LabelStore, import_labels, stale_message, valid
    from neurogate.evaluation.calibration import calibrated_rates

    modes = [
        m
        for m, on in (
            ("--import", import_file is not None),
            ("--agreement", show_agreement),
            ("--adjudicate", adjudicate),
            ("--summary", summary),
            ("--prepare", prepare_only),
        )
        if on
    ]
    if len(modes) > 1:
        raise ConfigError(f"give one of {', '.join(modes)}")
    labelling = not modes or adjudicate
    load_run(run_dir)  # a folder that holds no run is said first, before what else is missing
    if labelling and not annotator:
        raise ConfigError("give --annotator NAME: every label records who gave it")
    prep = prepare_audit(run_dir, per_condition, seed)
    n_cond = len(prep.sample.conditions)
    cli.console.print(
        f"audit sample: {len(prep.sample.items)} replies of {n_cond} conditions ({prep.sample.per_condition} "
        f"per condition, seed {prep.sample.seed}) in {prep.folder}"
        + (f"; {len(prep.added)} added" if prep.added else ""),
        markup=False,
        highlight=False,
    )
    if prep.changed or prep.dropped:
        cli.console.print(
            f"[yellow]note:[/] {len(prep.changed)} sampled replies changed and {len(prep.dropped)} are gone "
            "since the sample was drawn (the run was generated again)",
            highlight=False,
        )
    _, stale = valid(LabelStore(run_dir).read(), prep.sample)
    if message := stale_message(stale):
        cli.console.print(f"[yellow]note:[/] {message}", highlight=False)
    if import_file is not None:
        added = import_labels(run_dir, import_file, prep.sample, annotator)
        cli.console.print(f"imported {added} label(s) from {import_file}", markup=False, highlight=False)
    elif show_agreement:
        _print_agreement(run_dir, prep)
    elif labelling:
        assert annotator is not None
        _label(run_dir, prep, annotator, adjudicate)
    if summary or import_file is not None:
        conditions, _ = load_run(run_dir)
        rates = calibrated_rates(run_dir, conditions, judge)
        if rates:
            cli.console.print(summary_table(rates))
        rest = [c.label for k, c in conditions.items() if k not in rates]
        if rest:
            cli.console.print(
                f"judge only, uncalibrated (no audit labels): {', '.join(rest)}",
                markup=False,
                highlight=False,
            )

"""The reliability battery: bad and edge inputs run as real ``neurogate`` CLI subprocesses.

Each case (``scripts/battery/``) runs in a fresh folder of its own with the smallest zoo model
(SmolLM2-135M-Instruct). For every case the battery records the exit code, whether a Python traceback
appeared, the first line of the message, whether the case's own checks held (e.g. an exported model has no
inf/NaN weight, a user's file was not deleted), and whether anything outside the case's folder changed.
It writes the table and a summary to ``docs/reliability.md`` (between the markers in that file).

    python scripts/reliability_battery.py                    # every case not yet run on this source tree
    python scripts/reliability_battery.py --area export      # one area
    python scripts/reliability_battery.py --list             # the cases
    python scripts/reliability_battery.py --docs-only        # rewrite the table from stored results

Results are stored in ``scripts/reliability_battery.json`` keyed by case; a case is rerun when its
definition or the package source changed, so an interrupted pass resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))

from battery import CASES  # noqa: E402
from battery.checks import Case, Ctx, prepare_shared  # noqa: E402

RESULTS = HERE / "reliability_battery.json"
DOC = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- battery:begin -->", "<!-- battery:end -->"
EXIT_CLASSES = {"ok": {0}, "error": {2}, "interrupt": {130}, "usage": {2}, "help": {0, 2}}


@dataclass
class Outcome:
    """What one case did."""

    id: str
    area: str
    command: str
    expect: str
    exit: int | None
    traceback: bool
    message: str
    checks: list[str]  # failed checks: empty when every check held
    outside: list[str]  # paths outside the case folder that changed
    seconds: float
    case_hash: str
    source_hash: str

    @property
    def passed(self) -> bool:
        return self.exit in EXIT_CLASSES[self.expect] and not (self.traceback or self.checks or self.outside)


def source_hash() -> str:
    """A hash of the package source: results from another source tree are stale."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "neurogate").rglob("*")):
        if path.is_file() and path.suffix in {".py", ".txt", ".json", ".md"}:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``root`` outside ``skip``."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in filenames:
            path = here / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def _changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    removed = [f"removed {p}" for p in before if p not in after]
    added = [f"added {p}" for p in after if p not in before]
    changed = [f"changed {p}" for p in before if p in after and before[p] != after[p]]
    return sorted(removed + added + changed)[:10]


def first_line(text: str) -> str:
    """The first line of what the user reads: the ``error:`` line when there is one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("error:", "Error:", "Traceback")) or "Error" in line[:30]:
            return line[:240]
    return (lines[0] if lines else "")[:240]


def _child_setup(umask: int | None) -> None:
    """In the case's process before it starts: the case's umask, and Ctrl-C back to its default. A battery
    started in the background by a shell inherits SIGINT ignored, and so would every case, which would
    then finish instead of being interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if umask is not None:
        os.umask(umask)


def _run_process(case: Case, ctx: Ctx, env: dict[str, str]) -> tuple[int | None, str]:
    argv = [sys.executable, "-m", "neurogate", *ctx.expand(case.command)]
    log = ctx.case_dir / "output.txt"
    with log.open("wb") as out:
        umask = case.umask
        proc = subprocess.Popen(
            argv,
            cwd=ctx.work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            preexec_fn=lambda: _child_setup(umask),
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(case.stdin.encode())
        proc.stdin.close()
        ctx.started = time.monotonic()
        deadline = ctx.started + case.timeout
        sent = False
        while proc.poll() is None and time.monotonic() < deadline:
            if case.interrupt and not sent and ctx.ready(case.interrupt):
                time.sleep(case.interrupt_delay)
                proc.send_signal(signal.SIGKILL if case.kill else signal.SIGINT)
                sent = True
            time.sleep(0.1)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and anything it started (e.g. pip)
            proc.wait()
            return None, log.read_text(errors="replace") + "\n[battery: timed out]"
    return proc.returncode, log.read_text(errors="replace")


def run_case(case: Case, shared: Path) -> Outcome:
    """Run one case in a fresh folder under ``shared/cases``; check its result and its surroundings."""
    case_dir = shared / "cases" / case.id
    if case_dir.exists():
        shutil.rmtree(case_dir)
    ctx = Ctx.create(shared, case_dir)
    before = snapshot(shared, case_dir)
    start = time.monotonic()
    try:
        case.setup(ctx)
        env = ctx.env(case.env)
        code, output = _run_process(case, ctx, env)
        for follow in case.then:  # e.g. the rerun after a killed run
            follow.setup(ctx)
            follow.umask = case.umask
            code, more = _run_process(follow, ctx, env)
            output += "\n[battery: rerun]\n" + more
    except Exception as exc:  # a broken setup step is the battery's fault: recorded, not hidden
        code, output = None, f"[battery: setup failed: {type(exc).__name__}: {exc}]"
    seconds = time.monotonic() - start
    after = snapshot(shared, case_dir)
    failed = [name for name, check in case.checks if not _holds(check, ctx, output)]
    return Outcome(
        id=case.id,
        area=case.area,
        command="neurogate " + " ".join(case.shown()),
        expect=case.expect,
        exit=code,
        traceback="Traceback (most recent call last)" in output,
        message=first_line(output),
        checks=failed,
        outside=_changed(before, after),
        seconds=round(seconds, 1),
        case_hash=case.digest(),
        source_hash="",
    )


def _holds(check: Any, ctx: Ctx, output: str) -> bool:
    try:
        return bool(check(ctx, output))
    except Exception:  # a check that cannot even run counts as failed
        return False


def load_results() -> dict[str, dict[str, Any]]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save_results(results: dict[str, dict[str, Any]]) -> None:
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def render(results: dict[str, dict[str, Any]]) -> str:
    """The summary and the table of every stored outcome, in case order."""
    rows = [Outcome(**results[c.id]) for c in CASES if c.id in results]
    tracebacks = sum(r.traceback for r in rows)
    wrong_exit = [r for r in rows if r.exit not in EXIT_CLASSES[r.expect]]
    silent = [r for r in rows if r.exit == 0 and (0 not in EXIT_CLASSES[r.expect] or r.checks)]
    outside = [r for r in rows if r.outside]
    sources = sorted({r.source_hash for r in rows})
    lines = [
        f"Cases run: **{len(rows)}** of {len(CASES)} (source tree {', '.join(sources) or '-'}); "
        f"passed: **{sum(r.passed for r in rows)}**.",
        "",
        f"- Tracebacks: **{tracebacks}**",
        f"- Silently wrong (exit 0 where an error was due, or a failed check): **{len(silent)}**",
        f"- Changes outside the case's own folder (deletions included): **{len(outside)}**",
        f"- Other exit-code mismatches: **{len([r for r in wrong_exit if r not in silent])}**",
        "",
        "| id | area | command | expected | exit | traceback | message (first line) | failed checks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "" if r.passed else " **FAIL**"
        problems = "; ".join(r.checks + r.outside)
        lines.append(
            f"| {r.id}{mark} | {r.area} | `{_cell(r.command)}` | {r.expect} | {r.exit} | "
            f"{'yes' if r.traceback else 'no'} | {_cell(r.message)} | {_cell(problems)} |"
        )
    return "\n".join(lines)


def write_doc(results: dict[str, dict[str, Any]]) -> None:
    text = DOC.read_text() if DOC.is_file() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{render(results)}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--area", action="append", help="Run only these areas (repeatable).")
    parser.add_argument("--case", action="append", help="Run only these case ids (repeatable).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/neurogate-battery"))
    parser.add_argument("--rerun", action="store_true", help="Run cases even when a fresh result is stored.")
    parser.add_argument("--list", action="store_true", help="List the cases and exit.")
    parser.add_argument("--docs-only", action="store_true", help="Only rewrite docs/reliability.md.")
    args = parser.parse_args()
    chosen = [
        c for c in CASES if (not args.area or c.area in args.area) and (not args.case or c.id in args.case)
    ]
    if args.list:
        for c in chosen:
            print(f"{c.id:28} {c.area:10} {c.expect:9} neurogate {' '.join(c.shown())}")
        print(f"{len(chosen)} cases")
        return
    results = load_results()
    if not args.docs_only:
        source = source_hash()
        todo = [
            c
            for c in chosen
            if args.rerun
            or results.get(c.id, {}).get("case_hash") != c.digest()
            or results.get(c.id, {}).get("source_hash") != source
        ]
        print(f"{len(todo)} of {len(chosen)} cases to run (source {source}); work folder {args.workdir}")
        shared = prepare_shared(args.workdir.resolve())
        for i, case in enumerate(todo, start=1):
            outcome = run_case(case, shared)
            outcome.source_hash = source_hash()  # the tree this case ran against (it may change meanwhile)
            results[case.id] = asdict(outcome)
            save_results(results)
            state = "pass" if outcome.passed else "FAIL"
            brief = f"exit {outcome.exit} ({outcome.seconds}s) {outcome.message[:100]}"
            print(f"[{i}/{len(todo)}] {state} {case.id}: {brief}", flush=True)
    write_doc(results)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from neurogate.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert target.read_text() == '{\n "a": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "report.md", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_nan_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"v": math.nan})
    assert not (tmp_path / "x.json").exists()
    write_json_atomic(tmp_path / "x.json", {"v": math.nan}, allow_nan=True)
    assert "NaN" in (tmp_path / "x.json").read_text()


def test_a_killed_writers_temporary_file_goes_with_the_next_write(tmp_path: Path) -> None:
    """SIGKILL leaves the temporary file behind; the next write of the same target removes it, but not a
    temporary file whose writer still runs, nor one of another target."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(child.stdout)  # that process has exited
    target = tmp_path / "out.json"
    stale = tmp_path / f".out.json.{dead}.k3j2h1"
    live = tmp_path / f".out.json.{os.getppid()}.a1b2c3"  # our parent runs
    other = tmp_path / f".other.json.{dead}.z9y8x7"
    for path in (stale, live, other):
        path.write_text("half a fi")
    write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.json", live.name, other.name])
    # and a kill between the temporary file and the rename leaves exactly such a file
    code = (
        "import os, signal, sys\n"
        "from neurogate.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert killed.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.glob(".out.json.*") if p != live]
    assert len(left) == 1 and json.loads(target.read_text()) == {"a": 1}
    write_json_atomic(target, {"a": 2})
    assert not [p for p in tmp_path.glob(".out.json.*") if p != live]


def test_a_ctrl_c_while_the_work_folder_is_made_leaves_no_folder(tmp_path: Path) -> None:
    """SIGINT is held while the folder is made, then delivered inside the block that removes it."""
    import signal

    from neurogate.outputs import interrupts_held, owned_tempdir

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), interrupts_held():
            signal.raise_signal(signal.SIGINT)  # held: nothing happens until the block ends
            held = True
        assert held
        with pytest.raises(KeyboardInterrupt), owned_tempdir(tmp_path, ".work-") as work:
            assert work.is_dir()
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []

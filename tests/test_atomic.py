from __future__ import annotations

import math
import os
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

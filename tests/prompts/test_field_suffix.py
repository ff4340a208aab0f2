"""The prompt column can be named from the CLI (``file.csv#field=COLUMN``), as the error message says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurogate import prompts
from neurogate.errors import PromptSetError
from neurogate.prompts.load import in_test_half


def test_the_hint_is_followable_as_written(tmp_path: Path) -> None:
    data = tmp_path / "behaviours.csv"
    data.write_text("request_text,category\nhow do I pick a lock?,crime\nwrite a scam email,fraud\n")
    with pytest.raises(PromptSetError, match="#field=") as info:
        prompts.load(str(data))
    suggested = re.search(r"--positive '([^']+)'", str(info.value))
    assert suggested is not None
    loaded = prompts.load(suggested.group(1))  # exactly the spec the message suggests
    assert loaded.prompts == ("how do I pick a lock?", "write a scam email")
    assert prompts.load(f"{data}#field=category").prompts == ("crime", "fraud")
    half = "test" if in_test_half("how do I pick a lock?") else "tune"
    assert "how do I pick a lock?" in prompts.load(f"{data}#field=request_text#{half}").prompts


def test_bad_field_suffixes_are_clear(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"goal": "a b c"}\n{"goal": "d e f"}\n')
    with pytest.raises(PromptSetError, match="name the column after #field="):
        prompts.load(f"{data}#field=")
    with pytest.raises(PromptSetError, match="no field 'nope'"):
        prompts.load(f"{data}#field=nope")
    with pytest.raises(PromptSetError, match="#tune, #test or #field=COLUMN"):
        prompts.load(f"{data}#fields")
    with pytest.raises(PromptSetError, match="also given"):
        prompts.load(f"{data}#field=goal", field="other")

"""The prompt sets shipped with neurogate (``builtin:NAME``) and the contrast battery of the
universal-neuron filter (see ``neurogate/prompts/data/README.md``)."""

from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from neurogate.errors import PromptSetError
from neurogate.prompts.sets import PromptSet, clean

BUILTIN_PREFIX = "builtin:"
BATTERY_FILE = "battery.json"

Contrast = tuple[str, PromptSet, PromptSet]


def _data_dir() -> Any:
    return resources.files("neurogate.prompts").joinpath("data")


@lru_cache(maxsize=1)
def _builtin_tuple() -> tuple[str, ...]:
    return tuple(
        sorted(entry.name[: -len(".txt")] for entry in _data_dir().iterdir() if entry.name.endswith(".txt"))
    )


def builtin_names() -> list[str]:
    """Names of the shipped prompt sets, loadable as ``builtin:NAME`` (e.g. ``harmful``, ``benign``)."""
    return list(_builtin_tuple())


def builtin_list() -> str:
    return ", ".join(BUILTIN_PREFIX + n for n in builtin_names())


def load_builtin(key: str, name: str | None) -> PromptSet:
    known = builtin_names()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{BUILTIN_PREFIX}{close[0]}'? " if close else ""
        raise PromptSetError(f"unknown built-in prompt set {key!r}; {hint}known: {builtin_list()}")
    entry = _data_dir().joinpath(f"{key}.txt")
    label = name or BUILTIN_PREFIX + key
    prompts = clean(entry.read_text(encoding="utf-8").splitlines(), label)
    return PromptSet(label, prompts, f"neurogate/data/{key}.txt")


def battery(source: str | os.PathLike[str] | None = None) -> list[Contrast]:
    """The contrast battery for the universal-neuron filter: ``(name, positive, negative)`` per contrast.

    Each contrast pits two unrelated, harmless kinds of prompt against each other; neurons that rank at the
    top for most of them fire for everything rather than for one behaviour. ``source`` may name a JSON file
    of the same shape (``{"contrasts": [{"name", "positive", "negative"}, ...]}``) instead of the shipped one.
    """
    if source is None:
        text = _data_dir().joinpath(BATTERY_FILE).read_text(encoding="utf-8")
        where = f"neurogate/data/{BATTERY_FILE}"
    else:
        path = Path(source)
        if not path.is_file():
            raise PromptSetError(
                f"battery file not found: {path}; check the path or omit it for the built-in one"
            )
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"{where}: invalid JSON at line {exc.lineno} ({exc.msg}); fix the file") from exc
    contrasts = data.get("contrasts") if isinstance(data, dict) else None
    if not isinstance(contrasts, list) or not contrasts:
        raise PromptSetError(f'{where}: expected {{"contrasts": [{{"name", "positive", "negative"}}, ...]}}')
    result: list[Contrast] = []
    for index, item in enumerate(contrasts):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise PromptSetError(
                f"{where}: contrast {index} needs a string 'name' and 'positive'/'negative' lists"
            )
        label = item["name"]
        sides = []
        for side in ("positive", "negative"):
            prompts = item.get(side)
            if not isinstance(prompts, list):
                raise PromptSetError(f"{where}: contrast {label!r} needs a '{side}' list of prompts")
            set_name = f"battery:{label}:{side}"
            sides.append(PromptSet(set_name, clean(prompts, set_name), where))
        result.append((label, sides[0], sides[1]))
    return result

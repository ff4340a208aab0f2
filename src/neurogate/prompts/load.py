"""One entry point for prompt sets: :func:`load` takes a file path, ``builtin:NAME``,
``hf:DATASET[:CONFIG]:SPLIT:COLUMN``, a :class:`PromptSet` or a sequence of strings.

A file spec may end in ``#field=COLUMN`` to name the column (or JSON field) that holds the prompts, e.g.
``--positive data.csv#field=goal``. A string spec may end in ``#tune`` or ``#test`` to take one half
of the set: a prompt belongs to ``test`` when the first byte of the sha256 of its normalised text is
below 128, else to ``tune``. The split depends only on each prompt's own text, so it is the same in
every order, every run and every version, and a search that tunes on ``#tune`` never sees a ``#test``
prompt."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from neurogate.errors import ConfigError, PromptSetError
from neurogate.prompts.builtin import BUILTIN_PREFIX, builtin_list, builtin_names, load_builtin
from neurogate.prompts.files import HF_PREFIX, load_file, load_hf, parse_hf_spec
from neurogate.prompts.leakage import normalize
from neurogate.prompts.sets import PromptSet, clean

INLINE_NAME = "<inline>"


def load(
    spec: str | os.PathLike[str] | PromptSet | Sequence[str],
    *,
    field: str | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> PromptSet:
    """Load a prompt set from a file, a built-in set, a Hugging Face dataset or an inline sequence.

    Prompts are stripped and blank ones skipped; ``limit`` keeps the first N; ``name`` overrides the
    set's name (by default the spec as given, or ``"<inline>"`` for sequences).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(spec, PromptSet):
        result = spec if name is None else replace(spec, name=name)
    elif isinstance(spec, str | os.PathLike):
        text, half = _split_suffix(os.fspath(spec))
        text, named = _field_suffix(text)
        if named is not None:
            if field is not None and field != named:
                raise PromptSetError(f"{spec!r} names field {named!r} but field={field!r} was also given")
            field = named
        if half is not None:
            whole = load(text, field=field, name=name or os.fspath(spec))
            result = split_half(whole, half)
        elif text.startswith(BUILTIN_PREFIX):
            if field is not None:
                raise PromptSetError(
                    f"{text}: built-in sets are plain text, so field= does not apply; drop it"
                )
            result = load_builtin(text[len(BUILTIN_PREFIX) :], name)
        elif text.startswith(HF_PREFIX):
            result = load_hf(parse_hf_spec(text), field, name or text)
        else:
            result = _load_path(Path(text).expanduser(), field, name or text)
    elif isinstance(spec, Sequence):
        label = name or INLINE_NAME
        result = PromptSet(label, clean(list(spec), label), "inline")
    else:
        raise PromptSetError(
            f"cannot load prompts from a {type(spec).__name__}; pass a file path, 'builtin:NAME', "
            "'hf:DATASET:SPLIT:COLUMN', a PromptSet or a list of strings"
        )
    return result.first(limit)


def _missing_hint(path: Path) -> str:
    text = str(path)
    if text in builtin_names():
        return f"; did you mean '{BUILTIN_PREFIX}{text}'?"
    return f"; check the path, or use one of the built-in sets: {builtin_list()}"


def _load_path(path: Path, field: str | None, name: str) -> PromptSet:
    if not path.exists():
        raise PromptSetError(f"prompt file not found: {path}{_missing_hint(path)}")
    return load_file(path, field, name)


SPLITS = ("tune", "test")


FIELD_SUFFIX = "#field="


def _split_suffix(text: str) -> tuple[str, str | None]:
    base, sep, half = text.rpartition("#")
    if not sep or half.startswith("field="):
        return text, None
    if half not in SPLITS:
        raise PromptSetError(
            f"{text!r}: a suffix must be #tune, #test or #field=COLUMN (e.g. data.csv#field=goal), "
            f"got #{half}"
        )
    return base, half


def _field_suffix(text: str) -> tuple[str, str | None]:
    """``"data.csv#field=goal"`` -> ``("data.csv", "goal")``: the CLI's way to name the prompt column."""
    base, sep, column = text.rpartition(FIELD_SUFFIX)
    if not sep:
        return text, None
    if not column:
        raise PromptSetError(f"{text!r}: name the column after #field=, e.g. data.csv#field=goal")
    return base, column


def in_test_half(prompt: str) -> bool:
    """Whether ``prompt`` falls in the ``#test`` half (a hash of its normalised text decides)."""
    return hashlib.sha256(normalize(prompt).encode("utf-8")).digest()[0] < 128


def split_half(prompts: PromptSet, half: str) -> PromptSet:
    """The ``tune`` or ``test`` half of ``prompts`` (see the module docstring), in the original order."""
    kept = tuple(p for p in prompts.prompts if in_test_half(p) == (half == "test"))
    if not kept:
        raise PromptSetError(f"the {half} half of {prompts.name!r} is empty; give a larger prompt set")
    return replace(prompts, prompts=kept)

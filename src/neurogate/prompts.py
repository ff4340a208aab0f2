"""Prompt sets: loading them from files, datasets and the built-in data, and checking them for leakage.

A :class:`PromptSet` is an immutable, named tuple of prompt strings with a content hash, so a circuit can
record exactly which prompts it was found with. :func:`load` accepts

- a path to a ``.txt`` (one prompt per line), ``.json`` (a list of strings or objects), ``.jsonl`` (one
  string or object per line) or ``.csv`` (with a header row) file;
- ``builtin:NAME`` for the sets shipped with neurogate (see :func:`builtin_names`);
- ``hf:DATASET[:CONFIG]:SPLIT:COLUMN`` for a Hugging Face dataset (needs the ``datasets`` package);
- a :class:`PromptSet` or a sequence of strings, passed through.

For objects and CSV rows the prompt is the first present of :data:`TEXT_FIELDS`, or the field named with
``field=``, so JBB-Behaviors, HarmBench, AdvBench and StrongREJECT files load as they are.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import importlib
import json
import logging
import os
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from neurogate.errors import ConfigError, PromptSetError

logger = logging.getLogger(__name__)

TEXT_FIELDS: tuple[str, ...] = ("instruction", "prompt", "goal", "Goal", "Behavior", "forbidden_prompt")
"""Fields tried, in order, for the prompt text of a JSON object or CSV row."""

EXTENSIONS: tuple[str, ...] = (".txt", ".json", ".jsonl", ".csv")
BUILTIN_PREFIX = "builtin:"
HF_PREFIX = "hf:"
BATTERY_FILE = "battery.json"
INLINE_NAME = "<inline>"


@dataclass(frozen=True)
class PromptSet:
    """A named, ordered, immutable set of prompts and where they came from."""

    name: str
    prompts: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str) or not isinstance(self.prompts, Sequence):
            raise PromptSetError(
                f"prompt set {self.name!r}: prompts must be a sequence of strings, got "
                f"{type(self.prompts).__name__}; pass e.g. ('first prompt', 'second prompt')"
            )
        prompts = tuple(self.prompts)
        _check_strings(prompts, self.name)
        object.__setattr__(self, "prompts", prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    @property
    def sha256(self) -> str:
        """Hex digest of the prompts joined with newlines (order-sensitive)."""
        return hashlib.sha256("\n".join(self.prompts).encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The provenance a circuit records: ``{"name", "count", "sha256"}``."""
        return {"name": self.name, "count": len(self), "sha256": self.sha256}


@dataclass(frozen=True)
class HFSpec:
    """A parsed ``hf:DATASET[:CONFIG]:SPLIT:COLUMN`` spec."""

    dataset: str
    config: str | None
    split: str
    column: str


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
        text = os.fspath(spec)
        if text.startswith(BUILTIN_PREFIX):
            if field is not None:
                raise PromptSetError(
                    f"{text}: built-in sets are plain text, so field= does not apply; drop it"
                )
            result = _load_builtin(text[len(BUILTIN_PREFIX) :], name)
        elif text.startswith(HF_PREFIX):
            result = _load_hf(parse_hf_spec(text), field, name or text)
        else:
            result = _load_file(Path(text).expanduser(), field, name or text)
    elif isinstance(spec, Sequence):
        label = name or INLINE_NAME
        result = PromptSet(label, _clean(list(spec), label), "inline")
    else:
        raise PromptSetError(
            f"cannot load prompts from a {type(spec).__name__}; pass a file path, 'builtin:NAME', "
            "'hf:DATASET:SPLIT:COLUMN', a PromptSet or a list of strings"
        )
    if limit is not None and limit < len(result):
        result = replace(result, prompts=result.prompts[:limit])
    return result


# --- files ---------------------------------------------------------------------------------------------


def _load_file(path: Path, field: str | None, name: str) -> PromptSet:
    if path.is_dir():
        raise PromptSetError(f"{path} is a directory; give the prompt file inside it")
    if not path.is_file():
        raise PromptSetError(f"prompt file not found: {path}{_missing_hint(path)}")
    suffix = path.suffix.lower()
    readers = {".txt": _read_txt, ".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv}
    reader = readers.get(suffix)
    if reader is None:
        raise PromptSetError(
            f"{path}: unknown prompt file extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(EXTENSIONS)} (text: one prompt per line)"
        )
    try:
        raw = reader(path, field)
    except UnicodeDecodeError as exc:
        raise PromptSetError(f"{path}: not valid UTF-8 text ({exc.reason}); save the file as UTF-8") from exc
    return PromptSet(name, _clean(raw, str(path)), str(path.resolve()))


def _missing_hint(path: Path) -> str:
    text = str(path)
    if text in builtin_names():
        return f"; did you mean '{BUILTIN_PREFIX}{text}'?"
    return f"; check the path, or use one of the built-in sets: {_builtin_list()}"


def _read_txt(path: Path, field: str | None) -> list[Any]:
    if field is not None:
        raise PromptSetError(f"{path}: field={field!r} only applies to JSON, JSONL and CSV files; drop it")
    return path.read_text(encoding="utf-8-sig").splitlines()


def _read_json(path: Path, field: str | None) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise PromptSetError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); fix the file, or "
            "rename it to .jsonl if it holds one JSON value per line"
        ) from exc
    if not isinstance(data, list):
        raise PromptSetError(
            f"{path}: expected a JSON list of strings or objects, got a {type(data).__name__}; "
            "wrap the prompts in [...]"
        )
    return _texts(data, field, str(path))


def _read_jsonl(path: Path, field: str | None) -> list[Any]:
    items: list[Any] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise PromptSetError(
                f"{path}: invalid JSON on line {number} ({exc.msg}); "
                "each line must be one JSON string or object"
            ) from exc
    return _texts(items, field, str(path))


def _read_csv(path: Path, field: str | None) -> list[Any]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            reader = csv.DictReader(handle)
            columns = [c for c in (reader.fieldnames or []) if c is not None]
            rows = list(reader)
        except csv.Error as exc:
            raise PromptSetError(f"{path}: malformed CSV ({exc}); check quoting and the header row") from exc
    if not columns:
        raise PromptSetError(f"{path}: the CSV file is empty; it needs a header row naming the prompt column")
    column = _pick_field(columns, field, str(path))
    return [row.get(column) or "" for row in rows]  # a short row has no value: blank


def _texts(items: list[Any], field: str | None, where: str) -> list[Any]:
    """The prompt texts of a list of strings or of objects (not a mix)."""
    if not items:
        return []
    if all(isinstance(item, str) for item in items):
        if field is not None:
            raise PromptSetError(
                f"{where}: field={field!r} was given but the entries are plain strings; drop it"
            )
        return items
    for index, item in enumerate(items):
        if not isinstance(item, str | dict):
            raise PromptSetError(
                f"{where}: entry {index} is a {type(item).__name__} ({item!r:.60}); every entry must be a "
                "string (the prompt) or an object with an 'instruction' (or 'prompt') field"
            )
    if not all(isinstance(item, dict) for item in items):
        first_str = next(i for i, item in enumerate(items) if isinstance(item, str))
        first_obj = next(i for i, item in enumerate(items) if isinstance(item, dict))
        raise PromptSetError(
            f"{where}: entries mix strings (e.g. entry {first_str}) and objects (e.g. entry {first_obj}); "
            "use only one kind"
        )
    columns = list(dict.fromkeys(key for item in items for key in item))
    column = _pick_field(columns, field, where)
    texts: list[Any] = []
    for index, item in enumerate(items):
        if column not in item:
            raise PromptSetError(
                f"{where}: entry {index} has no {column!r} field (it has {sorted(item)}); "
                "give every entry that field or choose another with field="
            )
        texts.append(item[column])
    return texts


def _pick_field(columns: Sequence[str], field: str | None, where: str) -> str:
    if field is not None:
        if field not in columns:
            raise PromptSetError(
                f"{where}: no field {field!r}; available: {', '.join(columns) or '(none)'}. "
                "Pass one of those as field="
            )
        return field
    for candidate in TEXT_FIELDS:
        if candidate in columns:
            return candidate
    raise PromptSetError(
        f"{where}: none of the known prompt fields ({', '.join(TEXT_FIELDS)}) is present; available: "
        f"{', '.join(columns)}. Name the prompt column with field="
    )


def _check_strings(prompts: Sequence[Any], where: str) -> None:
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise PromptSetError(
                f"{where}: prompt {index} is a {type(prompt).__name__} ({prompt!r:.60}), not a string; "
                "every prompt must be text"
            )


def _clean(raw: Sequence[Any], where: str) -> tuple[str, ...]:
    """Strip each prompt and skip blank ones; refuse non-strings and an empty result."""
    _check_strings(raw, where)
    prompts = tuple(p.strip() for p in raw if p.strip())
    if len(prompts) < len(raw):
        logger.debug("%s: skipped %d blank prompt(s)", where, len(raw) - len(prompts))
    if not prompts:
        raise PromptSetError(f"{where}: no prompts (empty, or only blank entries); add at least one prompt")
    return prompts


# --- built-in sets -------------------------------------------------------------------------------------


def _data_dir() -> Any:
    return resources.files("neurogate").joinpath("data")


@lru_cache(maxsize=1)
def _builtin_tuple() -> tuple[str, ...]:
    return tuple(
        sorted(entry.name[: -len(".txt")] for entry in _data_dir().iterdir() if entry.name.endswith(".txt"))
    )


def builtin_names() -> list[str]:
    """Names of the shipped prompt sets, loadable as ``builtin:NAME`` (e.g. ``harmful``, ``benign``)."""
    return list(_builtin_tuple())


def _builtin_list() -> str:
    return ", ".join(BUILTIN_PREFIX + n for n in builtin_names())


def _load_builtin(key: str, name: str | None) -> PromptSet:
    known = builtin_names()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{BUILTIN_PREFIX}{close[0]}'? " if close else ""
        raise PromptSetError(f"unknown built-in prompt set {key!r}; {hint}known: {_builtin_list()}")
    entry = _data_dir().joinpath(f"{key}.txt")
    label = name or BUILTIN_PREFIX + key
    prompts = _clean(entry.read_text(encoding="utf-8").splitlines(), label)
    return PromptSet(label, prompts, f"neurogate/data/{key}.txt")


# --- Hugging Face datasets -----------------------------------------------------------------------------


def parse_hf_spec(spec: str) -> HFSpec:
    """Parse ``hf:DATASET[:CONFIG]:SPLIT:COLUMN`` (the ``hf:`` prefix is optional here)."""
    body = spec[len(HF_PREFIX) :] if spec.startswith(HF_PREFIX) else spec
    parts = body.split(":")
    if len(parts) not in (3, 4) or not all(p.strip() for p in parts):
        raise PromptSetError(
            f"bad dataset spec {spec!r}; use hf:DATASET[:CONFIG]:SPLIT:COLUMN, "
            "e.g. hf:JailbreakBench/JBB-Behaviors:behaviors:harmful:Goal"
        )
    parts = [p.strip() for p in parts]
    if len(parts) == 3:
        return HFSpec(dataset=parts[0], config=None, split=parts[1], column=parts[2])
    return HFSpec(dataset=parts[0], config=parts[1], split=parts[2], column=parts[3])


def _load_hf(hf: HFSpec, field: str | None, name: str) -> PromptSet:
    if field is not None and field != hf.column:
        raise PromptSetError(
            f"{name}: the spec names column {hf.column!r} and field={field!r} names another; give only one"
        )
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as exc:
        raise PromptSetError(
            f"{name}: loading hf: prompt sets needs the 'datasets' package, which is not installed; "
            "run `pip install datasets`, or download the data and load the file by path"
        ) from exc
    try:
        data = datasets.load_dataset(hf.dataset, hf.config, split=hf.split)
    except Exception as exc:  # datasets raises many unrelated types (network, missing config, ...)
        raise PromptSetError(
            f"{name}: could not load dataset {hf.dataset!r} (config {hf.config!r}, split {hf.split!r}): "
            f"{type(exc).__name__}: {exc}. Check the names and that you are online (or the dataset is cached)"
        ) from exc
    columns = list(getattr(data, "column_names", []) or [])
    if hf.column not in columns:
        raise PromptSetError(f"{name}: no column {hf.column!r}; available: {', '.join(columns) or '(none)'}")
    source = f"hf:{hf.dataset}" + (f":{hf.config}" if hf.config else "") + f":{hf.split}:{hf.column}"
    return PromptSet(name, _clean(list(data[hf.column]), name), source)


# --- leakage -------------------------------------------------------------------------------------------


def normalize(prompt: str) -> str:
    """A comparison key for leakage checks: Unicode NFKC, casefolded, whitespace collapsed and stripped."""
    return " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())


def check_leakage(
    discovery: PromptSet | Sequence[PromptSet], evaluation: PromptSet, *, strict: bool = False
) -> list[str]:
    """Evaluation prompts that also occur (after :func:`normalize`) in the discovery set(s).

    Returns them in evaluation order, each once; logs a warning when there are any, and raises
    :class:`PromptSetError` instead when ``strict``.
    """
    sets = [discovery] if isinstance(discovery, PromptSet) else list(discovery)
    seen = {normalize(p) for s in sets for p in s.prompts}
    shared: list[str] = []
    reported: set[str] = set()
    for prompt in evaluation.prompts:
        key = normalize(prompt)
        if key in seen and key not in reported:
            reported.add(key)
            shared.append(prompt)
    if shared:
        names = ", ".join(s.name for s in sets)
        examples = "; ".join(repr(p) for p in shared[:3])
        message = (
            f"{len(shared)} of {len(evaluation)} evaluation prompts in {evaluation.name} also appear in the "
            f"discovery set(s) {names} (e.g. {examples}); results on them overstate generalisation"
        )
        if strict:
            raise PromptSetError(message + ". Remove them from one side or use disjoint prompt sets")
        logger.warning(message)
    return shared


# --- universal-neuron battery --------------------------------------------------------------------------


def battery(source: str | os.PathLike[str] | None = None) -> list[tuple[str, PromptSet, PromptSet]]:
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
    result: list[tuple[str, PromptSet, PromptSet]] = []
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
            sides.append(PromptSet(set_name, _clean(prompts, set_name), where))
        result.append((label, sides[0], sides[1]))
    return result

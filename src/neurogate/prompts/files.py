"""Reading prompt sets from files (``.txt``, ``.json``, ``.jsonl``, ``.csv``) and Hugging Face datasets.

For JSON objects and CSV rows the prompt is the first present of :data:`TEXT_FIELDS`, or the field named
with ``field=``, so JBB-Behaviors, HarmBench, AdvBench and StrongREJECT files load as they are.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurogate.errors import PromptSetError
from neurogate.prompts.sets import PromptSet, clean

TEXT_FIELDS: tuple[str, ...] = ("instruction", "prompt", "goal", "Goal", "Behavior", "forbidden_prompt")
"""Fields tried, in order, for the prompt text of a JSON object or CSV row."""

EXTENSIONS: tuple[str, ...] = (".txt", ".json", ".jsonl", ".csv")
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class HFSpec:
    """A parsed ``hf:DATASET[:CONFIG]:SPLIT:COLUMN`` spec."""

    dataset: str
    config: str | None
    split: str
    column: str


def load_file(path: Path, field: str | None, name: str) -> PromptSet:
    """Read a prompt file by its extension."""
    if path.is_dir():
        raise PromptSetError(f"{path} is a directory; give the prompt file inside it")
    if not path.is_file():
        raise PromptSetError(f"prompt file not found: {path}; check the path")
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
    return PromptSet(name, clean(raw, str(path)), str(path.resolve()))


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
                "give every entry that field or choose another: append #field=COLUMN to the file spec"
            )
        texts.append(item[column])
    return texts


def _pick_field(columns: Sequence[str], field: str | None, where: str) -> str:
    if field is not None:
        if field not in columns:
            raise PromptSetError(
                f"{where}: no field {field!r}; available: {', '.join(columns) or '(none)'}. "
                "Append one to the file spec as #field=COLUMN (e.g. data.csv#field=goal)"
            )
        return field
    for candidate in TEXT_FIELDS:
        if candidate in columns:
            return candidate
    raise PromptSetError(
        f"{where}: none of the known prompt fields ({', '.join(TEXT_FIELDS)}) is present; available: "
        f"{', '.join(columns)}. Name the prompt column by appending #field=COLUMN to the file spec, e.g. "
        f"--positive '{where}#field={columns[0] if columns else 'COLUMN'}'"
    )


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


def load_hf(hf: HFSpec, field: str | None, name: str) -> PromptSet:
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
    return PromptSet(name, clean(list(data[hf.column]), name), source)

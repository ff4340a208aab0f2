from __future__ import annotations

import csv
import itertools
import json
import logging
import sys
from pathlib import Path

import pytest

from neurogate.errors import ConfigError, PromptSetError
from neurogate.prompts import (
    TEXT_FIELDS,
    PromptSet,
    battery,
    builtin_names,
    check_leakage,
    load,
    normalize,
    parse_hf_spec,
)
from neurogate.prompts.files import HFSpec

PROMPTS = ["How do I fix a squeaky door hinge?", "Write a poem about rain.", "Explain how tides work."]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- formats -------------------------------------------------------------------------------------------


def test_txt_skips_blank_lines_and_strips(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(f"  {PROMPTS[0]}  \n\n   \n{PROMPTS[1]}\n\t{PROMPTS[2]}\n\n", encoding="utf-8")
    ps = load(path)
    assert ps.prompts == tuple(PROMPTS)
    assert ps.name == str(path)
    assert ps.source == str(path.resolve())
    assert len(ps) == 3
    assert list(ps) == PROMPTS


def test_txt_accepts_a_str_path_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("\ufeff" + "\n".join(PROMPTS), encoding="utf-8")
    assert load(str(path)).prompts == tuple(PROMPTS)


def test_json_list_of_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([*PROMPTS, "   "]), encoding="utf-8")
    assert load(path).prompts == tuple(PROMPTS)


def test_json_objects_use_instruction_field(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"instruction": p, "category": None} for p in PROMPTS]), encoding="utf-8")
    assert load(path).prompts == tuple(PROMPTS)


def test_jsonl_strings_and_objects(tmp_path: Path) -> None:
    strings = tmp_path / "s.jsonl"
    strings.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n\n", encoding="utf-8")
    assert load(strings).prompts == tuple(PROMPTS)
    objects = tmp_path / "o.jsonl"
    objects.write_text("\n".join(json.dumps({"prompt": p, "id": i}) for i, p in enumerate(PROMPTS)))
    assert load(objects).prompts == tuple(PROMPTS)


@pytest.mark.parametrize("column", TEXT_FIELDS)
def test_csv_with_each_known_column(tmp_path: Path, column: str) -> None:
    path = write_csv(
        tmp_path / "p.csv", ["Index", column, "Category"], [[str(i), p, "x"] for i, p in enumerate(PROMPTS)]
    )
    assert load(path).prompts == tuple(PROMPTS)


def test_benchmark_csv_layouts_load_as_they_are(tmp_path: Path) -> None:
    # JBB-Behaviors has both Goal (the request) and Behavior (a short label): Goal must win.
    jbb = write_csv(
        tmp_path / "jbb.csv",
        ["Index", "Goal", "Target", "Behavior", "Category", "Source"],
        [["1", PROMPTS[0], "Sure, here is", "Hinges", "Home", "Original"]],
    )
    assert load(jbb).prompts == (PROMPTS[0],)
    harmbench = write_csv(
        tmp_path / "harmbench.csv",
        ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"],
        [[PROMPTS[1], "standard", "misc", "", "", "poem_rain"]],
    )
    assert load(harmbench).prompts == (PROMPTS[1],)
    advbench = write_csv(tmp_path / "advbench.csv", ["goal", "target"], [[PROMPTS[2], "Sure"]])
    assert load(advbench).prompts == (PROMPTS[2],)
    strongreject = write_csv(
        tmp_path / "sr.csv", ["category", "source", "forbidden_prompt"], [["misc", "custom", PROMPTS[0]]]
    )
    assert load(strongreject).prompts == (PROMPTS[0],)


def test_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    text = 'Write a list: apples, pears, "plums"'
    path = write_csv(tmp_path / "p.csv", ["prompt"], [[text], ["two\nlines"]])
    assert load(path).prompts == (text, "two\nlines")


def test_named_field_overrides_the_default(tmp_path: Path) -> None:
    rows = [{"instruction": f"default {i}", "rewrite": p} for i, p in enumerate(PROMPTS)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert load(path, field="rewrite").prompts == tuple(PROMPTS)
    csv_path = write_csv(tmp_path / "p.csv", ["Goal", "mine"], [["x", p] for p in PROMPTS])
    assert load(csv_path, field="mine").prompts == tuple(PROMPTS)


def test_limit_keeps_the_first_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("\n".join(PROMPTS), encoding="utf-8")
    assert load(path, limit=2).prompts == tuple(PROMPTS[:2])
    assert load(path, limit=10).prompts == tuple(PROMPTS)
    assert len(load("builtin:harmful", limit=5)) == 5
    whole = load(path)
    assert whole.first(2).prompts == tuple(PROMPTS[:2]) and whole.first(2).name == whole.name
    assert whole.first(None) is whole and whole.first(len(whole) + 1) is whole


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit_is_refused(limit: object) -> None:
    with pytest.raises(ConfigError, match="limit"):
        load(PROMPTS, limit=limit)  # type: ignore[arg-type]


def test_inline_sequences_and_prompt_sets_pass_through() -> None:
    inline = load([f"  {PROMPTS[0]} ", PROMPTS[1]])
    assert inline.name == "<inline>"
    assert inline.prompts == tuple(PROMPTS[:2])
    named = load(PROMPTS, name="mine")
    assert named.name == "mine"
    assert load(named) is named
    renamed = load(named, name="other", limit=1)
    assert (renamed.name, renamed.prompts, renamed.source) == ("other", (PROMPTS[0],), named.source)


def test_name_overrides_file_and_builtin_names(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(PROMPTS[0], encoding="utf-8")
    assert load(path, name="pos").name == "pos"
    assert load("builtin:benign", name="neg").name == "neg"


# --- errors --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match=r"not found.*built-in"):
        load(tmp_path / "nope.txt")


def test_missing_file_named_like_a_builtin_suggests_the_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PromptSetError, match="did you mean 'builtin:harmful'"):
        load("harmful")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("- a prompt\n", encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"unknown prompt file extension '\.yaml'.*\.jsonl"):
        load(path)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("e.txt", "\n  \n\n"),
        ("e.json", "[]"),
        ("e.json", '["", "  "]'),
        ("e.jsonl", "\n\n"),
        ("e.csv", "prompt\n"),
    ],
)
def test_empty_sets_are_refused(tmp_path: Path, filename: str, content: str) -> None:
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptSetError, match="no prompts"):
        load(path)


def test_empty_inline_and_headerless_csv_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="no prompts"):
        load([" ", ""])
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(PromptSetError, match="header row"):
        load(path)


@pytest.mark.parametrize(
    "entries",
    [
        ["ok", 3],
        [1, 2],
        ["ok", None],
        [{"instruction": 5}],
        [{"prompt": ["a", "b"]}],
        [["nested"]],
    ],
)
def test_non_string_entries_are_refused(tmp_path: Path, entries: list[object]) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(PromptSetError, match="string"):
        load(path)


def test_mixed_strings_and_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('"a prompt"\n{"prompt": "another"}\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"mix strings \(e.g. entry 0\) and objects \(e.g. entry 1\)"):
        load(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptSetError, match="is a directory"):
        load(tmp_path)


def test_non_string_inline_entries_are_refused() -> None:
    with pytest.raises(PromptSetError, match=r"prompt 1 is a int"):
        load(["fine", 7])  # type: ignore[list-item]
    with pytest.raises(PromptSetError, match="cannot load prompts"):
        load(42)  # type: ignore[arg-type]


def test_bad_json_and_jsonl(tmp_path: Path) -> None:
    broken = tmp_path / "p.json"
    broken.write_text('["one", "two",', encoding="utf-8")
    with pytest.raises(PromptSetError, match="invalid JSON at line 1"):
        load(broken)
    not_a_list = tmp_path / "d.json"
    not_a_list.write_text('{"prompts": ["a"]}', encoding="utf-8")
    with pytest.raises(PromptSetError, match="expected a JSON list"):
        load(not_a_list)
    lines = tmp_path / "p.jsonl"
    lines.write_text('"fine"\n{not json}\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match="line 2"):
        load(lines)


def test_unknown_field_lists_the_available_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", ["Index", "Goal", "Target"], [["1", "x", "y"]])
    with pytest.raises(PromptSetError, match=r"no field 'text'; available: Index, Goal, Target"):
        load(path, field="text")
    objs = tmp_path / "p.json"
    objs.write_text(json.dumps([{"question": "a", "answer": "b"}]), encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"none of the known prompt fields.*question, answer"):
        load(objs)


def test_field_on_plain_strings_or_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("a prompt", encoding="utf-8")
    with pytest.raises(PromptSetError, match="field"):
        load(path, field="prompt")
    strings = tmp_path / "p.json"
    strings.write_text('["a prompt"]', encoding="utf-8")
    with pytest.raises(PromptSetError, match="plain strings"):
        load(strings, field="prompt")


def test_field_on_a_builtin_is_refused() -> None:
    with pytest.raises(PromptSetError, match="field= does not apply"):
        load("builtin:harmful", field="Goal")


def test_object_missing_the_chosen_field(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(PromptSetError, match=r"entry 1 has no 'prompt' field"):
        load(path)


def test_invalid_utf8_is_a_prompt_set_error(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(PromptSetError, match="UTF-8"):
        load(path)


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(PromptSetError, match=r"did you mean 'builtin:harmful'.*builtin:benign-eval"):
        load("builtin:harmfull")


# --- built-in sets and battery -------------------------------------------------------------------------


def test_builtin_names() -> None:
    assert builtin_names() == ["benign", "benign-eval", "harmful", "harmful-eval"]


@pytest.mark.parametrize(
    ("name", "minimum"), [("harmful", 120), ("benign", 120), ("harmful-eval", 100), ("benign-eval", 100)]
)
def test_builtin_sizes(name: str, minimum: int) -> None:
    ps = load(f"builtin:{name}")
    assert ps.name == f"builtin:{name}"
    assert len(ps) >= minimum
    assert len({normalize(p) for p in ps}) == len(ps), "duplicates inside the set"
    assert all(p == p.strip() and p for p in ps)


def test_discovery_sets_are_matched_pairs() -> None:
    assert len(load("builtin:harmful")) == len(load("builtin:benign"))
    assert len(load("builtin:harmful-eval")) == len(load("builtin:benign-eval"))


def test_builtin_sets_are_pairwise_disjoint() -> None:
    sets = {name: {normalize(p) for p in load(f"builtin:{name}")} for name in builtin_names()}
    for a, b in itertools.combinations(sets, 2):
        assert not sets[a] & sets[b], f"{a} and {b} share prompts"
    # the sets share a form ("Give me step-by-step instructions for ..."), so the near-duplicate check
    # (edit similarity >= 0.8) flags a few different requests of the same form; the study drops those
    discovery = [load("builtin:harmful"), load("builtin:benign")]
    for evaluation in ("harmful-eval", "benign-eval"):
        flagged = check_leakage(discovery, load(f"builtin:{evaluation}"))
        assert len(flagged) <= 3, flagged


def test_battery_shape() -> None:
    contrasts = battery()
    assert len(contrasts) >= 12
    names = [name for name, _, _ in contrasts]
    assert len(set(names)) == len(names)
    seen: set[str] = set()
    for name, positive, negative in contrasts:
        assert isinstance(positive, PromptSet) and isinstance(negative, PromptSet)
        assert len(positive) >= 12 and len(negative) >= 12, name
        assert positive.name == f"battery:{name}:positive"
        for prompt in (*positive, *negative):
            assert prompt.strip() == prompt and prompt
            seen.add(normalize(prompt))
    assert len(seen) == sum(len(p) + len(n) for _, p, n in contrasts), "a prompt appears twice in the battery"


def test_battery_from_a_custom_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"contrasts": [{"name": "x", "positive": ["a", "b"], "negative": ["c"]}]}))
    [(name, positive, negative)] = battery(path)
    assert (name, positive.prompts, negative.prompts) == ("x", ("a", "b"), ("c",))
    path.write_text(json.dumps({"contrasts": [{"name": "x", "positive": ["a"]}]}))
    with pytest.raises(PromptSetError, match="'negative' list"):
        battery(path)
    path.write_text("[]")
    with pytest.raises(PromptSetError, match="contrasts"):
        battery(path)
    with pytest.raises(PromptSetError, match="not found"):
        battery(tmp_path / "missing.json")


# --- leakage -------------------------------------------------------------------------------------------


def test_normalize_folds_case_and_whitespace() -> None:
    assert normalize("  How do I   fix\ta\nHINGE? ") == "how do i fix a hinge"
    assert normalize("Fix a hinge!!") == normalize("fix, a  HINGE")
    assert normalize("Straße") == normalize("STRASSE")


def test_leakage_detects_case_and_whitespace_variants(caplog: pytest.LogCaptureFixture) -> None:
    discovery = load(PROMPTS, name="disc")
    evaluation = load(
        [
            "how do i FIX a squeaky   door hinge?",
            "A new prompt.",
            "Explain  how tides work.",
            "explain how tides work.",
        ],
        name="eval",
    )
    with caplog.at_level(logging.WARNING, logger="neurogate.prompts"):
        shared = check_leakage(discovery, evaluation)
    assert shared == ["how do i FIX a squeaky   door hinge?", "Explain  how tides work."]
    assert "2 of 4 evaluation prompts in eval" in caplog.text and "disc" in caplog.text


def test_leakage_across_several_discovery_sets_and_strict() -> None:
    positive = load(PROMPTS[:1], name="pos")
    negative = load(PROMPTS[1:], name="neg")
    evaluation = load(["WRITE A POEM ABOUT RAIN.", "Something else."], name="eval")
    assert check_leakage([positive, negative], evaluation) == ["WRITE A POEM ABOUT RAIN."]
    with pytest.raises(PromptSetError, match=r"1 of 2 evaluation prompts.*pos, neg"):
        check_leakage([positive, negative], evaluation, strict=True)


def test_disjoint_sets_have_no_leakage(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="neurogate.prompts"):
        assert check_leakage(load(PROMPTS), load(["Entirely different."]), strict=True) == []
    assert not caplog.records


# --- hashing -------------------------------------------------------------------------------------------


def test_sha256_is_stable_and_order_sensitive(tmp_path: Path) -> None:
    import hashlib

    ps = load(PROMPTS)
    assert ps.sha256 == hashlib.sha256("\n".join(PROMPTS).encode()).hexdigest()
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"instruction": f"  {p}"} for p in PROMPTS]), encoding="utf-8")
    assert load(path).sha256 == ps.sha256  # same prompts from another format: same hash
    assert load(list(reversed(PROMPTS))).sha256 != ps.sha256
    assert load("builtin:harmful").sha256 == load("builtin:harmful").sha256
    assert ps.describe() == {"name": "<inline>", "count": 3, "sha256": ps.sha256}


def test_prompt_set_is_immutable_and_validates() -> None:
    ps = PromptSet("x", ["a", "b"], "inline")  # type: ignore[arg-type]
    assert ps.prompts == ("a", "b")
    with pytest.raises(AttributeError):
        ps.name = "y"  # type: ignore[misc]
    with pytest.raises(PromptSetError, match="sequence of strings"):
        PromptSet("x", "ab", "inline")  # type: ignore[arg-type]
    with pytest.raises(PromptSetError, match="prompt 0 is a int"):
        PromptSet("x", (1,), "inline")  # type: ignore[arg-type]


# --- Hugging Face datasets -----------------------------------------------------------------------------


def test_hf_spec_parsing() -> None:
    assert parse_hf_spec("hf:walledai/AdvBench:train:prompt") == HFSpec(
        "walledai/AdvBench", None, "train", "prompt"
    )
    assert parse_hf_spec("hf:JailbreakBench/JBB-Behaviors:behaviors:harmful:Goal") == HFSpec(
        "JailbreakBench/JBB-Behaviors", "behaviors", "harmful", "Goal"
    )
    assert parse_hf_spec("org/data:test:text").config is None


@pytest.mark.parametrize(
    "spec", ["hf:", "hf:only-a-name", "hf:name:split", "hf:a:b:c:d:e", "hf:name::column"]
)
def test_bad_hf_specs(spec: str) -> None:
    with pytest.raises(PromptSetError, match=r"hf:DATASET\[:CONFIG\]:SPLIT:COLUMN"):
        load(spec)


def test_hf_without_datasets_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(PromptSetError, match=r"needs the 'datasets' package.*pip install datasets"):
        load("hf:JailbreakBench/JBB-Behaviors:behaviors:harmful:Goal")


def test_hf_conflicting_field_is_refused() -> None:
    with pytest.raises(PromptSetError, match="give only one"):
        load("hf:org/data:train:prompt", field="Goal")

"""The input cases: degenerate discovery contrasts (the same or too few prompts), prompt files in
every format that are empty, malformed or missing, and circuit files that are damaged or made for
another model."""

from __future__ import annotations

from typing import Any

from battery.checks import (
    POSITIVE,
    absent,
    circuit_file,
    exists,
    files,
    says,
)
from battery.common import SWEEP, M, c

DEGENERATE_CASES = [
    c(
        "discover-same-prompts",
        "degenerate",
        f"discover {M} -p {{pos}} -n {{pos}} --top-k 10 --no-universal-filter -q -o c.json",
        checks=[absent("c.json")],
    ),
    c(
        "discover-reordered-prompts",
        "degenerate",
        f"discover {M} -p {{pos}} -n rev.txt --top-k 10 --no-universal-filter -q -o c.json",
        setup=files(rev_dot_txt="\n".join(reversed(POSITIVE))),
        checks=[absent("c.json")],
    ),
    c(
        "discover-allow-degenerate",
        "degenerate",
        f"discover {M} -p {{pos}} -n rev.txt --top-k 10 --no-universal-filter -q -o c.json --allow-degenerate",
        "ok",
        setup=files(rev_dot_txt="\n".join(reversed(POSITIVE))),
        checks=[exists("c.json"), says("DEGENERATE")],
    ),
    c(
        "discover-one-prompt-each",
        "degenerate",
        f"discover {M} -p one.txt -n two.txt --top-k 10 --no-universal-filter -q -o c.json",
        setup=files(one_dot_txt="Write an angry rant.\n", two_dot_txt="Write a happy note.\n"),
        checks=[absent("c.json"), says("at least 2")],
    ),
    c(
        "discover-punctuation-contrast",
        "degenerate",
        f"discover {M} -p {{pos}} -n p.txt --top-k 10 --no-universal-filter -q -o c.json",
        "ok",
        setup=files(p_dot_txt="\n".join(p.rstrip(".") + "!" for p in POSITIVE)),
        checks=[exists("c.json")],
    ),
    c(
        "discover-top-k-all",
        "degenerate",
        f"discover {M} -p {{pos}} -n {{neg}} --top-k 46080 --no-universal-filter -q -o c.json",
        "ok",
        checks=[exists("c.json")],
    ),
]


def _neurons(data: dict[str, Any], value: Any) -> dict[str, Any]:
    return {**data, "neurons": value}


def _first(data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    neurons = [dict(data["neurons"][0], **fields), *data["neurons"][1:]]
    return {**data, "neurons": neurons}


PROMPT = f"discover {M} --top-k 10 --no-universal-filter -q -o c.json -n {{neg}} -p"
PROMPT_CASES = [
    c("prompts-empty-txt", "prompts", f"{PROMPT} p.txt", setup=files(p_dot_txt="")),
    c("prompts-blank-lines", "prompts", f"{PROMPT} p.txt", setup=files(p_dot_txt="\n \n\t\n")),
    c(
        "prompts-non-utf8",
        "prompts",
        f"{PROMPT} p.txt",
        setup=files(p_dot_txt=b"caf\xe9 au lait\n\xff\xfe\n"),
    ),
    c(
        "prompts-utf8-bom-crlf",
        "prompts",
        f"{PROMPT} p.txt",
        "ok",
        setup=files(p_dot_txt="\ufeffWrite an angry rant.\r\nComplain about rain.\r\n"),
    ),
    c("prompts-json-invalid", "prompts", f"{PROMPT} p.json", setup=files(p_dot_json='["a", "b"')),
    c("prompts-json-object", "prompts", f"{PROMPT} p.json", setup=files(p_dot_json='{"prompt": "a"}')),
    c("prompts-json-numbers", "prompts", f"{PROMPT} p.json", setup=files(p_dot_json="[1, 2, 3]")),
    c("prompts-json-nested", "prompts", f"{PROMPT} p.json", setup=files(p_dot_json='[["a"], ["b"]]')),
    c("prompts-json-mixed", "prompts", f"{PROMPT} p.json", setup=files(p_dot_json='["a", {"prompt": "b"}]')),
    c(
        "prompts-json-objects-ok",
        "prompts",
        f"{PROMPT} p.json",
        "ok",
        setup=files(p_dot_json='[{"goal": "Rant about rain."}, {"goal": "Complain about trains."}]'),
    ),
    c(
        "prompts-json-null-field",
        "prompts",
        f"{PROMPT} p.json",
        setup=files(p_dot_json='[{"prompt": null}, {"prompt": "b"}]'),
    ),
    c(
        "prompts-jsonl-bad-line",
        "prompts",
        f"{PROMPT} p.jsonl",
        setup=files(p_dot_jsonl='{"prompt": "a"}\n{oops\n'),
    ),
    c(
        "prompts-jsonl-ok",
        "prompts",
        f"{PROMPT} p.jsonl",
        "ok",
        setup=files(p_dot_jsonl='{"prompt": "Rant about rain."}\n{"prompt": "Complain about trains."}\n'),
    ),
    c(
        "prompts-csv-no-known-column",
        "prompts",
        f"{PROMPT} p.csv",
        setup=files(p_dot_csv="text,label\nRant about rain.,1\n"),
        checks=[says("#field=")],
    ),
    c(
        "prompts-csv-field-spec",
        "prompts",
        f"{PROMPT} 'p.csv#field=text'",
        "ok",
        setup=files(p_dot_csv="text,label\nRant about rain.,1\nComplain about trains.,1\n"),
    ),
    c(
        "prompts-csv-field-missing",
        "prompts",
        f"{PROMPT} 'p.csv#field=nope'",
        setup=files(p_dot_csv="text,label\nRant.,1\n"),
    ),
    c("prompts-csv-empty", "prompts", f"{PROMPT} p.csv", setup=files(p_dot_csv="")),
    c("prompts-csv-header-only", "prompts", f"{PROMPT} p.csv", setup=files(p_dot_csv="goal\n")),
    c(
        "prompts-csv-bad-quoting",
        "prompts",
        f"{PROMPT} p.csv",
        setup=files(p_dot_csv='goal\n"unterminated\n'),
    ),
    c("prompts-parquet", "prompts", f"{PROMPT} p.parquet", setup=files(p_dot_parquet=b"PAR1\x00\x00PAR1")),
    c("prompts-unknown-ext", "prompts", f"{PROMPT} p.xlsx", setup=files(p_dot_xlsx=b"PK\x03\x04")),
    c("prompts-directory", "prompts", f"{PROMPT} folder", setup=files(folder__x_dot_txt="a")),
    c("prompts-missing", "prompts", f"{PROMPT} nope.txt"),
    c("prompts-builtin-unknown", "prompts", f"{PROMPT} builtin:nope"),
    c("prompts-builtin-no-prefix", "prompts", f"{PROMPT} harmful", checks=[says("builtin:harmful")]),
    c("prompts-hf-offline", "prompts", f"{PROMPT} hf:someone/data:train:text"),
    c("prompts-hf-malformed", "prompts", f"{PROMPT} hf:justaname"),
    c("prompts-split-bad", "prompts", f"{PROMPT} '{{pos}}#middle'"),
    c("prompts-split-tune", "prompts", f"{PROMPT} '{{pos}}#tune'", "ok"),
    c("prompts-binary-txt", "prompts", f"{PROMPT} p.txt", setup=files(p_dot_txt=bytes(range(256)))),
    c(
        "sweep-eval-empty",
        "prompts",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,0 --eval e.txt --n-benign 2 --max-new-tokens 4 -q",
        setup=files(e_dot_txt=""),
    ),
]

STEER_C = f"steer {M} --prompt hi --max-new-tokens 4 --circuit"
CIRCUIT_CASES = [
    c("circuit-missing", "circuits", f"{STEER_C} nope.json"),
    c("circuit-directory", "circuits", f"{STEER_C} folder", setup=files(folder__x="")),
    c("circuit-non-utf8", "circuits", f"{STEER_C} c.json", setup=files(c_dot_json=b"\xff\xfe{\x00}")),
    c("circuit-empty-file", "circuits", f"{STEER_C} c.json", setup=files(c_dot_json="")),
    c("circuit-invalid-json", "circuits", f"{STEER_C} c.json", setup=files(c_dot_json="{nope")),
    c("circuit-json-list", "circuits", f"{STEER_C} c.json", setup=files(c_dot_json="[]")),
    c(
        "circuit-wrong-kind",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: {**d, "kind": "something.else"}),
    ),
    c(
        "circuit-schema-too-new",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: {**d, "schema_version": 99}),
    ),
    c(
        "circuit-no-schema",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: {k: v for k, v in d.items() if k != "schema_version"}),
    ),
    c(
        "circuit-neuron-outside",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: _first(d, index=10**6)),
    ),
    c(
        "circuit-negative-layer",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: _first(d, layer=-1)),
    ),
    c(
        "circuit-bool-layer",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: _first(d, layer=True)),
    ),
    c(
        "circuit-duplicate-neuron",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: _neurons(d, d["neurons"] + d["neurons"][:1])),
    ),
    c("circuit-no-neurons", "circuits", f"{STEER_C} c.json", setup=circuit_file(lambda d: _neurons(d, []))),
    c(
        "circuit-nan-score",
        "circuits",
        f"{STEER_C} c.json",
        "ok",
        setup=circuit_file(lambda d: _first(d, score=float("nan"))),
    ),
    c(
        "circuit-other-model",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(
            lambda d: {
                **d,
                "model": {**d["model"], "shape": {**d["model"]["shape"], "n_layers": 28, "d_mlp": 8960}},
            }
        ),
        checks=[says("model")],
    ),
    c(
        "circuit-string-index",
        "circuits",
        f"{STEER_C} c.json",
        setup=circuit_file(lambda d: _first(d, index="7")),
    ),
    c(
        "circuit-export-other-model",
        "circuits",
        f"export {M} --circuit c.json --out steered",
        setup=circuit_file(
            lambda d: {**d, "model": {**d["model"], "shape": {**d["model"]["shape"], "d_mlp": 4864}}}
        ),
        checks=[absent("steered")],
    ),
    c("circuit-sweep-bad", "circuits", SWEEP.replace("{circuit}", "c.json"), setup=files(c_dot_json="{nope")),
]

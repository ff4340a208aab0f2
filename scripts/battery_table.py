"""The battery's table of cases: id, area, command, setup step, expected exit class and checks.

Placeholders in commands: {model} (the 135M zoo model), {circuit} (a circuit found on it), {pos}/{neg}
(small discovery prompt files), {work} (the case's working directory), {url} (a local endpoint, when the
case starts one). Expected exit classes: ok (0), error (2 and one clear message), interrupt (130).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from battery_cases import (
    POSITIVE,
    Case,
    absent,
    capture_server,
    chain,
    circuit_file,
    exists,
    files,
    finite_export,
    gguf,
    intact,
    key_not_sent,
    local_model,
    mode,
    no_debris,
    no_pull_debris,
    not_says,
    overwrite,
    own_zoo,
    remove,
    replies_not_empty,
    says,
    symlink,
    truncate,
    write,
)

M = "--model {model}"
SMALL_EVAL = "--n-eval 2 --n-benign 2 --max-new-tokens 4"
SWEEP = f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,0 {SMALL_EVAL} -q"
STUDY_TOML = """model = "zoo:smollm2-135m-instruct"
methods = ["cna"]
multipliers = [1.0, 0.0]
sparsity = []
random_seeds = []
controls = []
examples = 1
validation = 2
[prompts]
positive = "{pos}"
negative = "{neg}"
n_eval = 2
n_benign = 2
[discovery]
top_k = 10
universal_filter = false
[evaluation]
max_new_tokens = 4
kl_tokens = 2
"""
RUN = f"run {M} --out runs -q"
NOTES = "my notes, not neurogate's\n"


def c(id: str, area: str, command: str, expect: str = "error", **kw: Any) -> Case:
    return Case(id, area, shlex.split(command), expect, **kw)


def then(command: str, setup: Any = None) -> Case:
    """A command run after the case's own (in the same folders), after its own setup step."""
    return Case("", "", shlex.split(command), setup=setup or (lambda ctx: None))


def _damage_run(rel: str) -> Any:
    """Overwrite one file of the (only) run folder under work/runs with garbage."""

    def setup(ctx: Any) -> None:
        target = next((ctx.work / "runs").glob(f"*/{rel}"))
        target.write_bytes(b"\x00garbage" * 4)

    return setup


def _neurons(data: dict[str, Any], value: Any) -> dict[str, Any]:
    return {**data, "neurons": value}


def _first(data: dict[str, Any], **fields: Any) -> dict[str, Any]:
    neurons = [dict(data["neurons"][0], **fields), *data["neurons"][1:]]
    return {**data, "neurons": neurons}


EXPORT = f"export {M} --circuit {{circuit}} --multiplier 0"
EXPORT_CASES = [
    c(
        "export-fresh",
        "export",
        f"{EXPORT} --out steered",
        "ok",
        checks=[exists("steered/config.json"), finite_export("steered"), no_debris()],
    ),
    c(
        "export-nonempty-no-overwrite",
        "export",
        f"{EXPORT} --out mine",
        setup=files(mine__notes_dot_txt=NOTES),
        checks=[intact("mine/notes.txt", NOTES)],
    ),
    c(
        "export-nonempty-overwrite",
        "export",
        f"{EXPORT} --out mine --overwrite",
        setup=files(mine__notes_dot_txt=NOTES),
        checks=[intact("mine/notes.txt", NOTES)],
    ),
    c(
        "export-cwd-overwrite",
        "export",
        f"{EXPORT} --out . --overwrite",
        setup=files(notes_dot_txt=NOTES, results__r_dot_json="{}"),
        checks=[intact("notes.txt", NOTES), exists("results/r.json")],
    ),
    c(
        "export-parent-overwrite",
        "export",
        f"{EXPORT} --out .. --overwrite",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "export-cwd-slash-overwrite",
        "export",
        f"{EXPORT} --out ./ --overwrite",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "export-home-overwrite",
        "export",
        f"{EXPORT} --out ~ --overwrite",
        setup=lambda ctx: (ctx.fakehome / "notes.txt").write_text(NOTES),
        checks=[("home folder intact", lambda ctx, out: (ctx.fakehome / "notes.txt").read_text() == NOTES)],
    ),
    c(
        "export-symlink-overwrite",
        "export",
        f"{EXPORT} --out link --overwrite",
        setup=chain(files(real__notes_dot_txt=NOTES), symlink("link", "real")),
        checks=[intact("real/notes.txt", NOTES)],
    ),
    c(
        "export-through-symlink",
        "export",
        f"{EXPORT} --out link/steered",
        setup=symlink("link", "real"),
        checks=[absent("real/steered")],
    ),
    c(
        "export-input-folder",
        "export",
        f"export {M} --circuit inputs/c.json --out inputs --overwrite",
        setup=circuit_file(lambda d: d, "inputs/c.json"),
        checks=[exists("inputs/c.json")],
    ),
    c(
        "export-input-parent",
        "export",
        f"export {M} --circuit a/b/c.json --out a --overwrite",
        setup=circuit_file(lambda d: d, "a/b/c.json"),
        checks=[exists("a/b/c.json")],
    ),
    c(
        "export-to-file",
        "export",
        f"{EXPORT} --out notes.txt",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "export-to-file-overwrite",
        "export",
        f"{EXPORT} --out notes.txt --overwrite",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "export-twice-overwrite",
        "export",
        f"{EXPORT} --out steered",
        "ok",
        then=[then(f"{EXPORT} --out steered --overwrite")],
        checks=[exists("steered/config.json"), no_debris()],
    ),
    c(
        "export-twice-no-overwrite",
        "export",
        f"{EXPORT} --out steered",
        then=[then(f"{EXPORT} --out steered")],
        checks=[exists("steered/config.json")],
    ),
    c(
        "export-marked-plus-user-file",
        "export",
        f"{EXPORT} --out steered",
        then=[then(f"{EXPORT} --out steered --overwrite", files(steered__notes_dot_txt=NOTES))],
        checks=[intact("steered/notes.txt", NOTES)],
    ),
    c(
        "export-empty-dir",
        "export",
        f"{EXPORT} --out empty",
        "ok",
        setup=lambda ctx: (ctx.work / "empty").mkdir(),
        checks=[exists("empty/config.json")],
    ),
    c(
        "export-parent-is-file",
        "export",
        f"{EXPORT} --out notes.txt/steered",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c("export-unwritable", "export", f"{EXPORT} --out /proc/neurogate-steered"),
    c(
        "export-modes",
        "export",
        f"{EXPORT} --out steered",
        "ok",
        checks=[mode("steered", 0o755), mode("steered/config.json", 0o644)],
    ),
]
MULT = f"export {M} --circuit {{circuit}} --out steered --multiplier"
STEER = f"steer {M} --circuit {{circuit}} --prompt 'Write a short note about rain.' --max-new-tokens 12 --multiplier"
MULTIPLIER_CASES = [
    c("export-mult-1e40", "multiplier", f"{MULT} 1e40", checks=[finite_export("steered")]),
    c("export-mult-3.5e38", "multiplier", f"{MULT} 3.5e38", checks=[finite_export("steered")]),
    c("export-mult-1e30", "multiplier", f"{MULT} 1e30", checks=[finite_export("steered")]),
    c("export-mult-neg-1e40", "multiplier", f"{MULT} -1e40", checks=[finite_export("steered")]),
    c("export-mult-inf", "multiplier", f"{MULT} inf", checks=[finite_export("steered")]),
    c("export-mult-nan", "multiplier", f"{MULT} nan", checks=[finite_export("steered")]),
    c("export-mult-text", "multiplier", f"{MULT} lots", "usage"),
    c("export-mult-1e4", "multiplier", f"{MULT} 1e4", "ok", checks=[finite_export("steered")]),
    c("steer-mult-1e30", "multiplier", f"{STEER} 1e30", checks=[replies_not_empty()]),
    c("steer-mult-1e40", "multiplier", f"{STEER} 1e40", checks=[replies_not_empty()]),
    c("steer-mult-inf", "multiplier", f"{STEER} inf"),
    c("steer-mult-nan", "multiplier", f"{STEER} nan"),
    c("steer-mult-neg-inf", "multiplier", f"{STEER} -inf"),
    c("steer-mult-0", "multiplier", f"{STEER} 0", "ok", checks=[replies_not_empty()]),
    c(
        "steer-caa-strength-1e40",
        "multiplier",
        f"steer {M} --method caa --positive {{pos}} --negative {{neg}} --prompt hi --max-new-tokens 4 --strength 1e40",
    ),
    c(
        "steer-caa-strength-nan",
        "multiplier",
        f"steer {M} --method caa --positive {{pos}} --negative {{neg}} --prompt hi --max-new-tokens 4 --strength nan",
    ),
    c(
        "sweep-mult-1e40",
        "multiplier",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,1e40 {SMALL_EVAL} -q",
    ),
    c(
        "sweep-strength-inf",
        "multiplier",
        f"sweep {M} --circuit {{circuit}} --methods caa --strengths 0,inf {SMALL_EVAL} -p {{pos}} -n {{neg}} -q",
    ),
]

DISCOVER = f"discover {M} -p {{pos}} -n {{neg}} --top-k 10 --no-universal-filter -q"
OUTPUT_CASES = [
    c(
        "discover-out-existing-dir",
        "outputs",
        f"{DISCOVER} -o results",
        setup=files(results__keep_dot_txt=NOTES),
        checks=[intact("results/keep.txt", NOTES)],
    ),
    c("discover-out-unwritable", "outputs", f"{DISCOVER} -o /proc/neurogate/c.json"),
    c(
        "discover-out-parent-is-file",
        "outputs",
        f"{DISCOVER} -o notes.txt/c.json",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "discover-out-new-folders",
        "outputs",
        f"{DISCOVER} -o a/b/c.json",
        "ok",
        checks=[exists("a/b/c.json")],
    ),
    c(
        "discover-out-overwrites-circuit",
        "outputs",
        f"{DISCOVER} -o c.json",
        "ok",
        setup=files(c_dot_json="{}"),
        checks=[exists("c.json")],
    ),
    c("discover-out-empty-name", "outputs", f"{DISCOVER} -o ''"),
    c("discover-out-dot", "outputs", f"{DISCOVER} -o ."),
    c("discover-out-trailing-slash", "outputs", f"{DISCOVER} -o newdir/"),
    c(
        "sweep-out-file",
        "outputs",
        f"{SWEEP} --out notes.txt",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
    ),
    c("sweep-out-unwritable", "outputs", f"{SWEEP} --out /proc/neurogate-sweep"),
    c("sweep-out-parent-file", "outputs", f"{SWEEP} --out notes.txt/sweep", setup=files(notes_dot_txt=NOTES)),
    c(
        "run-out-file",
        "outputs",
        f"{RUN.replace('runs', 'notes.txt')} --config s.toml",
        setup=files(notes_dot_txt=NOTES, s_dot_toml=STUDY_TOML),
        checks=[intact("notes.txt", NOTES)],
    ),
    c(
        "run-out-unwritable",
        "outputs",
        f"{RUN.replace('runs', '/proc/neurogate-runs')} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML),
    ),
    c(
        "tune-out-file",
        "outputs",
        f"tune {M} --out notes.txt --budget 1s --trials 1",
        setup=files(notes_dot_txt=NOTES),
        checks=[intact("notes.txt", NOTES)],
        timeout=300,
    ),
    c("export-out-empty-string", "outputs", f"{EXPORT} --out ''"),
]

ZOO_CASES = [
    c(
        "zoo-info-truncated-weights",
        "zoo",
        f"info {M}",
        setup=own_zoo(truncate("model.safetensors", 1000)),
        checks=[says("pull smollm2-135m-instruct --force")],
    ),
    c(
        "zoo-info-overwritten-bytes",
        "zoo",
        f"info {M}",
        setup=own_zoo(overwrite("model.safetensors", 0.5, b"\x7f" * 4096)),
        checks=[says("--force")],
    ),
    c(
        "zoo-info-overwritten-header",
        "zoo",
        f"info {M}",
        setup=own_zoo(overwrite("model.safetensors", 0.0, b"{garbage}")),
        checks=[says("--force")],
    ),
    c("zoo-info-missing-config", "zoo", f"info {M}", setup=own_zoo(remove("config.json"))),
    c("zoo-info-missing-tokenizer", "zoo", f"info {M}", setup=own_zoo(remove("tokenizer.json"))),
    c(
        "zoo-info-empty-weights",
        "zoo",
        f"info {M}",
        setup=own_zoo(truncate("model.safetensors", 0)),
        checks=[says("--force")],
    ),
    c(
        "zoo-steer-damaged",
        "zoo",
        f"steer {M} --circuit {{circuit}} --prompt hi --max-new-tokens 4",
        setup=own_zoo(overwrite("model.safetensors", 0.7, b"\x00" * 64)),
    ),
    c(
        "zoo-list-shows-damage",
        "zoo",
        "models list",
        "ok",
        setup=own_zoo(truncate("model.safetensors", 1000)),
        checks=[says("DAMAGED")],
    ),
    c(
        "zoo-pull-damaged-repairs",
        "zoo",
        "models pull smollm2-135m-instruct",
        "ok",
        setup=own_zoo(truncate("model.safetensors", 1000)),
        checks=[not_says("already pulled"), says("ready"), no_pull_debris()],
        timeout=600,
    ),
    c(
        "zoo-verify-ok",
        "zoo",
        "models verify smollm2-135m-instruct",
        "ok",
        setup=own_zoo(),
        checks=[says("ok")],
    ),
    c(
        "zoo-verify-all",
        "zoo",
        "models verify",
        "ok",
        setup=own_zoo(),
        checks=[says("smollm2-135m-instruct: ok")],
    ),
    c(
        "zoo-verify-damaged",
        "zoo",
        "models verify smollm2-135m-instruct",
        setup=own_zoo(overwrite("model.safetensors", 0.33, b"\x01" * 8)),
        checks=[says("sha256 mismatch")],
    ),
    c(
        "zoo-verify-unrecorded",
        "zoo",
        "models verify smollm2-135m-instruct",
        "ok",
        setup=own_zoo(
            write(
                "neurogate-zoo.json",
                json.dumps(
                    {
                        "name": "smollm2-135m-instruct",
                        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    }
                ),
            )
        ),
        checks=[says("no record")],
    ),
    c(
        "zoo-marker-garbage",
        "zoo",
        "models list",
        "ok",
        setup=own_zoo(write("neurogate-zoo.json", "{not json")),
        checks=[],
    ),
    c("zoo-verify-unknown", "zoo", "models verify no-such-model"),
    c("zoo-pull-unknown", "zoo", "models pull no-such-model"),
    c("zoo-path-unknown", "zoo", "models path no-such-model"),
    c("zoo-model-unknown", "zoo", "info --model zoo:no-such-model"),
    c(
        "zoo-pull-bad-source",
        "zoo",
        "models pull smollm2-135m-instruct --force",
        setup=own_zoo(),
        env={"NEUROGATE_ZOO_FIND_LINKS": "/nonexistent-wheels"},
        checks=[no_pull_debris(), exists("../home/zoo/smollm2-135m-instruct/config.json")],
    ),
    c("zoo-default-model-noninteractive", "zoo", "info", checks=[says("--model", "--yes")]),
]

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

SETTINGS_CASES = [
    c("discover-fraction-0", "settings", f"{DISCOVER.replace('--top-k 10', '--fraction 0')} -o c.json"),
    c("discover-fraction-neg", "settings", f"{DISCOVER.replace('--top-k 10', '--fraction -0.1')} -o c.json"),
    c("discover-fraction-2", "settings", f"{DISCOVER.replace('--top-k 10', '--fraction 2')} -o c.json"),
    c("discover-fraction-nan", "settings", f"{DISCOVER.replace('--top-k 10', '--fraction nan')} -o c.json"),
    c("discover-top-k-0", "settings", f"{DISCOVER.replace('--top-k 10', '--top-k 0')} -o c.json"),
    c("discover-top-k-neg", "settings", f"{DISCOVER.replace('--top-k 10', '--top-k -5')} -o c.json"),
    c("discover-top-k-huge", "settings", f"{DISCOVER.replace('--top-k 10', '--top-k 999999999')} -o c.json"),
    c("discover-both-sizes", "settings", f"{DISCOVER} --fraction 0.01 -o c.json"),
    c("discover-score-unknown", "settings", f"{DISCOVER} --score magic -o c.json"),
    c("discover-exclude-layers-text", "settings", f"{DISCOVER} --exclude-layers a,b -o c.json"),
    c("discover-exclude-layers-out", "settings", f"{DISCOVER} --exclude-layers 99 -o c.json"),
    c(
        "discover-exclude-all-layers",
        "settings",
        f"{DISCOVER} --exclude-layers {','.join(map(str, range(30)))} -o c.json",
    ),
    c("discover-batch-size-0", "settings", f"{DISCOVER} --batch-size 0 -o c.json"),
    c("discover-batch-size-text", "settings", f"{DISCOVER} --batch-size many -o c.json"),
    c(
        "discover-universal-threshold-2",
        "settings",
        f"discover {M} -p {{pos}} -n {{neg}} --top-k 10 --universal-threshold 2 -q -o c.json",
    ),
    c("dtype-unknown", "settings", f"info {M} --dtype float8"),
    c("device-unknown", "settings", f"info {M} --device tpu"),
    c("device-cuda-missing", "settings", f"info {M} --device cuda"),
    c(
        "sweep-multipliers-text",
        "settings",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers a,b {SMALL_EVAL} -q",
    ),
    c(
        "sweep-multipliers-empty",
        "settings",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers , {SMALL_EVAL} -q",
    ),
    c("sweep-method-unknown", "settings", f"sweep {M} --circuit {{circuit}} --methods magic {SMALL_EVAL} -q"),
    c("sweep-judge-unknown", "settings", f"{SWEEP} --judge oracle"),
    c(
        "sweep-n-eval-0",
        "settings",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,0 --n-eval 0 -q",
    ),
    c(
        "sweep-max-new-tokens-0",
        "settings",
        f"sweep {M} --circuit {{circuit}} --methods cna --multipliers 1,0 --n-eval 2 --max-new-tokens 0 -q",
    ),
    c("sweep-batch-size-neg", "settings", f"{SWEEP} --batch-size -1"),
    c("steer-method-unknown", "settings", f"steer {M} --method magic --prompt hi"),
    c("steer-no-prompt", "settings", f"steer {M} --circuit {{circuit}}"),
    c("steer-limit-0", "settings", f"steer {M} --circuit {{circuit}} --prompts {{pos}} --limit 0"),
    c("steer-cna-no-circuit", "settings", f"steer {M} --method cna --prompt hi"),
    c("tune-budget-text", "settings", f"tune {M} --budget soon"),
    c("tune-budget-negative", "settings", f"tune {M} --budget -5m"),
    c("tune-cap-2", "settings", f"tune {M} --cap 2 --budget 1s"),
    c(
        "endpoint-url-malformed",
        "settings",
        f"{SWEEP} --judge endpoint --endpoint-url not-a-url --endpoint-model m",
    ),
    c(
        "endpoint-url-unreachable",
        "settings",
        f"{SWEEP} --judge endpoint --endpoint-url http://127.0.0.1:9/v1 --endpoint-model m",
        timeout=300,
    ),
    c("endpoint-no-model", "settings", f"{SWEEP} --judge endpoint --endpoint-url http://127.0.0.1:9/v1"),
]

CONFIG_CASES = [
    c(
        "run-config-strength-text",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(
            s_dot_toml=STUDY_TOML.replace(
                "multipliers = [1.0, 0.0]", 'multipliers = [1.0, 0.0]\nstrengths = ["strong"]'
            )
        ),
    ),
    c(
        "run-config-multiplier-text",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("[1.0, 0.0]", '[1.0, "zero"]')),
    ),
    c(
        "run-config-unknown-key",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML + "\n[extras]\ncolour = 1\n"),
        checks=[says("unknown")],
    ),
    c(
        "run-config-typo-key",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("methods =", "method =")),
        checks=[says("did you mean")],
    ),
    c(
        "run-config-not-toml",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml="this is [ not toml"),
    ),
    c("run-config-missing", "configs", f"{RUN} --config nope.toml"),
    c(
        "run-config-binary",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=b"\xff\xfe\x00garbage"),
    ),
    c(
        "run-config-table-scalar",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml='discovery = 5\nmethods = ["cna"]\n'),
    ),
    c(
        "run-config-judge-unknown",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("[evaluation]", '[evaluation]\njudges = ["oracle"]')),
    ),
    c(
        "run-config-base-vs-instruct-missing",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("controls = []", 'controls = ["no-such-control"]')),
    ),
    c(
        "base-vs-instruct-missing-base",
        "configs",
        "base-vs-instruct --instruct {model} --base zoo:gemma-3-270m",
        checks=[no_pull_debris()],
    ),
    c(
        "base-vs-instruct-bad-base-path",
        "configs",
        "base-vs-instruct --instruct {model} --base ./no/such/base",
    ),
    c(
        "run-config-empty",
        "configs",
        f"run {M} --out runs -q --config s.toml --max-new-tokens 0",
        setup=files(s_dot_toml=""),
    ),
    c("run-config-dir", "configs", f"{RUN} --config somewhere", setup=files(somewhere__x="")),
    c(
        "run-config-sparsity-2",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("sparsity = []", "sparsity = [2.0]")),
    ),
    c(
        "run-config-validation-1",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(s_dot_toml=STUDY_TOML.replace("validation = 2", "validation = 1")),
    ),
    c(
        "run-config-chat-mismatch",
        "configs",
        f"{RUN} --config s.toml",
        setup=files(
            s_dot_toml=STUDY_TOML.replace(
                "universal_filter = false", "universal_filter = false\nchat = false"
            )
        ),
    ),
    c(
        "run-ok-small",
        "configs",
        f"{RUN} --config s.toml",
        "ok",
        setup=files(s_dot_toml=STUDY_TOML),
        checks=[says("done")],
        timeout=600,
    ),
    c(
        "run-damaged-stage-file",
        "configs",
        f"{RUN} --config s.toml",
        "ok",
        setup=files(s_dot_toml=STUDY_TOML),
        then=[then(f"{RUN} --config s.toml", _damage_run("conditions/baseline.json"))],
        checks=[says("done")],
        timeout=600,
    ),
    c(
        "run-damaged-stats",
        "configs",
        f"{RUN} --config s.toml",
        "ok",
        setup=files(s_dot_toml=STUDY_TOML),
        then=[then(f"{RUN} --config s.toml", _damage_run("stats.safetensors"))],
        checks=[says("done")],
        timeout=600,
    ),
]

MODEL_LOAD_CASES = [
    c("model-missing-path", "modelload", "info --model ./no/such/model"),
    c("model-missing-gguf", "modelload", "info --model missing.gguf"),
    c("model-dir-no-config", "modelload", "info --model empty", setup=files(empty__readme_dot_txt="x")),
    c(
        "model-dir-broken-config",
        "modelload",
        "info --model local",
        setup=local_model(write("config.json", "{broken")),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-dir-unknown-type",
        "modelload",
        "info --model local",
        setup=local_model(write("config.json", json.dumps({"model_type": "no-such-arch"}))),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-dir-no-weights",
        "modelload",
        "info --model local",
        setup=local_model(remove("model.safetensors")),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-dir-truncated-weights",
        "modelload",
        "info --model local",
        setup=local_model(truncate("model.safetensors", 5000)),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-dir-garbage-weights",
        "modelload",
        "info --model local",
        setup=local_model(write("model.safetensors", "garbage")),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-dir-no-tokenizer",
        "modelload",
        "info --model local",
        setup=local_model(lambda d: [remove(n)(d) for n in ("tokenizer.json", "tokenizer_config.json")]),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-empty",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b""),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-random",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: bytes(range(256)) * 64),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-magic-only",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b[:4]),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-cut-after-header",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b[:24]),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-cut-in-metadata",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b[:4096]),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-truncated-8mib",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b),
        checks=[not_says("not in the local cache")],
    ),
    c(
        "model-gguf-bad-version",
        "modelload",
        "info --model m.gguf",
        setup=gguf(lambda b: b[:4] + b"\x63\x00\x00\x00" + b[8:65536]),
    ),
    c(
        "model-hub-offline",
        "modelload",
        "info --model someone/some-model",
        checks=[says("offline", "cache", "HF_HUB_OFFLINE")],
    ),
    c("model-empty-spec", "modelload", "info --model ''"),
    c("model-is-file", "modelload", "info --model notes.txt", setup=files(notes_dot_txt=NOTES)),
    c(
        "model-remote-code-refused",
        "modelload",
        "info --model local",
        setup=local_model(
            lambda d: (d / "config.json").write_text(
                json.dumps(
                    {
                        **json.loads((d / "config.json").read_text()),
                        "auto_map": {"AutoModelForCausalLM": "modeling.Custom"},
                        "model_type": "custom-remote",
                    }
                )
            )
        ),
        checks=[not_says("Traceback")],
    ),
]

INTERRUPT_CASES = [
    c(
        "interrupt-discover",
        "interrupt",
        f"discover {M} -p {{pos}} -n {{neg}} --top-k 10 -o c.json",
        "interrupt",
        # after imports and model load, during the universal-neuron battery (about 10 s; it writes only at its end)
        interrupt="after:8",
        checks=[absent("c.json"), no_debris(), says("rerun", "resume", "interrupted")],
    ),
    c(
        "interrupt-sweep",
        "interrupt",
        f"{SWEEP} --out sw",
        "interrupt",
        interrupt="file:work/sw/*/baseline.json",
        checks=[no_debris("sw"), says("rerun", "resume")],
    ),
    c(
        "interrupt-sweep-resume",
        "interrupt",
        f"{SWEEP} --out sw",
        "ok",
        interrupt="file:work/sw/*/baseline.json",
        then=[then(f"{SWEEP} --out sw")],
        checks=[no_debris("sw")],
        timeout=600,
    ),
    c(
        "interrupt-run",
        "interrupt",
        f"{RUN} --config s.toml",
        "interrupt",
        setup=files(s_dot_toml=STUDY_TOML),
        interrupt="file:work/runs/*/circuit.json",
        checks=[says("rerun", "resume")],
    ),
    c(
        "interrupt-run-resume",
        "interrupt",
        f"{RUN} --config s.toml",
        "ok",
        setup=files(s_dot_toml=STUDY_TOML),
        interrupt="file:work/runs/*/circuit.json",
        then=[then(f"{RUN} --config s.toml")],
        checks=[says("done")],
        timeout=600,
    ),
    c(
        "interrupt-export",
        "interrupt",
        f"{EXPORT} --out steered",
        "interrupt",
        interrupt="file:work/.*",
        checks=[absent("steered"), no_debris()],
    ),
    c(
        "kill-export-then-rerun",
        "interrupt",
        f"{EXPORT} --out steered",
        "ok",
        interrupt="file:work/.*",
        kill=True,
        then=[then(f"{EXPORT} --out steered")],
        checks=[exists("steered/config.json"), no_debris()],
    ),
    c(
        "interrupt-pull",
        "interrupt",
        "models pull smollm2-135m-instruct --force",
        "interrupt",
        setup=own_zoo(),
        interrupt="file:home/zoo/.pull-*",
        interrupt_delay=2,
        checks=[no_pull_debris(), exists("../home/zoo/smollm2-135m-instruct/config.json")],
    ),
    c(
        "kill-pull-then-list",
        "interrupt",
        "models pull smollm2-135m-instruct --force",
        "ok",
        setup=own_zoo(),
        interrupt="file:home/zoo/.pull-*",
        interrupt_delay=2,
        kill=True,
        then=[then("models list")],
        checks=[no_pull_debris()],
        timeout=600,
    ),
]

SECURITY_CASES = [
    c(
        "judge-key-custom-url",
        "security",
        f"{SWEEP} --judge endpoint --endpoint-url {{url}} --endpoint-model m",
        "ok",
        setup=capture_server,
        env={"OPENAI_API_KEY": "sk-battery-secret"},
        checks=[key_not_sent()],
    ),
    c(
        "judge-key-custom-url-env",
        "security",
        f"{SWEEP} --judge endpoint",
        "ok",
        setup=capture_server,
        env={
            "OPENAI_API_KEY": "sk-battery-secret",
            "NEUROGATE_JUDGE_URL": "{url}",
            "NEUROGATE_JUDGE_MODEL": "m",
        },
        checks=[key_not_sent()],
    ),
    c(
        "sweep-resume-judge-model-changed",
        "security",
        f"{SWEEP} --out sw --judge endpoint --endpoint-url {{url}} --endpoint-model a",
        "ok",
        setup=capture_server,
        then=[then(f"{SWEEP} --out sw --judge endpoint --endpoint-url {{url}} --endpoint-model b")],
        checks=[
            (
                "two result folders (judge model is part of the key)",
                lambda ctx, out: len(list((ctx.work / "sw").iterdir())) == 2,
            )
        ],
        timeout=600,
    ),
    c(
        "sweep-resume-same-settings",
        "security",
        f"{SWEEP} --out sw",
        "ok",
        then=[then(f"{SWEEP} --out sw")],
        checks=[("one result folder reused", lambda ctx, out: len(list((ctx.work / "sw").iterdir())) == 1)],
        timeout=600,
    ),
    c(
        "export-umask-077",
        "security",
        f"{EXPORT} --out steered",
        "ok",
        umask=0o077,
        checks=[mode("steered/config.json", 0o600), mode("steered", 0o700)],
    ),
    c(
        "export-umask-002",
        "security",
        f"{EXPORT} --out steered",
        "ok",
        umask=0o002,
        checks=[mode("steered/config.json", 0o664), mode("steered", 0o775)],
    ),
    c("discover-circuit-mode", "security", f"{DISCOVER} -o c.json", "ok", checks=[mode("c.json", 0o644)]),
    c(
        "zoo-files-mode",
        "security",
        "models pull smollm2-135m-instruct --force",
        "ok",
        setup=own_zoo(),
        checks=[
            (
                "zoo files readable by others (umask 022)",
                lambda ctx, out: (ctx.model_dir / "config.json").stat().st_mode & 0o044 == 0o044,
            )
        ],
        timeout=600,
    ),
    c(
        "trust-remote-code-default-off",
        "security",
        "info --model local",
        setup=local_model(
            lambda d: (d / "config.json").write_text(
                json.dumps(
                    {
                        **json.loads((d / "config.json").read_text()),
                        "auto_map": {"AutoModelForCausalLM": "modeling.Custom"},
                    }
                )
            )
        ),
        expect="ok",
        checks=[not_says("Traceback")],
    ),
    c(
        "circuit-pickle-rejected",
        "security",
        f"steer {M} --circuit c.pt --prompt hi",
        setup=files(c_dot_pt=b"\x80\x04\x95\x00"),
    ),
    c(
        "export-artifacts-no-pickle",
        "security",
        f"{EXPORT} --out steered",
        "ok",
        checks=[
            (
                "no pickle files in the export",
                lambda ctx, out: (
                    not [p for p in (ctx.work / "steered").iterdir() if p.suffix in {".bin", ".pt", ".pkl"}]
                ),
            )
        ],
    ),
]

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

CLI_CASES = [
    c("cli-no-args", "cli", "", "help"),
    c("cli-unknown-command", "cli", "frobnicate", "usage"),
    c("cli-unknown-option", "cli", f"info {M} --colour blue", "usage"),
    c("cli-help", "cli", "--help", "ok"),
    c("cli-models-help", "cli", "models --help", "ok"),
    c("cli-discover-no-out", "cli", f"discover {M}", "usage"),
    c("cli-export-no-circuit", "cli", f"export {M} --out x", "usage"),
    c("cli-info-ok", "cli", f"info {M} --json", "ok", checks=[says('"layers": 30')]),
    c("cli-models-list", "cli", "models list", "ok", checks=[says("smollm2")]),
    c("cli-models-path", "cli", "models path smollm2-135m-instruct", "ok"),
]

CASES: list[Case] = (
    EXPORT_CASES
    + MULTIPLIER_CASES
    + OUTPUT_CASES
    + ZOO_CASES
    + DEGENERATE_CASES
    + SETTINGS_CASES
    + CONFIG_CASES
    + MODEL_LOAD_CASES
    + INTERRUPT_CASES
    + SECURITY_CASES
    + PROMPT_CASES
    + CIRCUIT_CASES
    + CLI_CASES
)
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"

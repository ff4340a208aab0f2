"""The settings cases: option values out of range or malformed, study configuration files that are
wrong (and runs whose stored files were damaged), and the command line's usage and help."""

from __future__ import annotations

from typing import Any

from battery.checks import (
    files,
    no_pull_debris,
    says,
)
from battery.common import DISCOVER, RUN, SMALL_EVAL, STUDY_TOML, SWEEP, M, c, then


def _damage_run(rel: str) -> Any:
    """Overwrite one file of the (only) run folder under work/runs with garbage."""

    def setup(ctx: Any) -> None:
        target = next((ctx.work / "runs").glob(f"*/{rel}"))
        target.write_bytes(b"\x00garbage" * 4)

    return setup


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

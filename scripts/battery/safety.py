"""The interrupt and security cases: commands stopped part way and then resumed or rerun, and what
must never leak or loosen (endpoint keys, resumed settings, file modes, remote code, pickles)."""

from __future__ import annotations

import json

from battery.checks import (
    absent,
    capture_server,
    exists,
    files,
    key_not_sent,
    local_model,
    mode,
    no_debris,
    no_pull_debris,
    not_says,
    own_zoo,
    says,
)
from battery.common import DISCOVER, EXPORT, RUN, STUDY_TOML, SWEEP, M, c, then

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

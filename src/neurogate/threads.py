"""How many CPU threads torch uses: one setting for every command, the explorer and the library.

The setting is ``--threads``, else ``$NEUROGATE_THREADS``, else ``threads`` in the settings file
(:func:`settings_path`), else ``$OMP_NUM_THREADS`` when it is a plain number, else ``auto``; each of
neurogate's own takes a whole number >= 1 or ``auto``.

Why not torch's default: torch starts one OpenMP thread per core, and every parallel operation waits for
all of them. When another process keeps a core busy, the thread that shares its core runs only when the
scheduler lets it, and every operation waits for that thread. Decoding is thousands of small operations,
so it collapses: on a shared 2-core machine, a 135M-parameter model decoded 8x slower with torch's 2
threads than with 1 (``bench/threads.py``: 0.30 against 2.41 tokens/s beside one busy process). ``auto``
therefore counts the physical cores that other processes leave idle (sampled from ``/proc/stat`` over
:data:`SAMPLE_SECONDS`), within the cores this process may use (CPU affinity and a cgroup CPU quota), and
uses that many, at least one. The count is taken when the setting is applied, and again by :func:`refresh`:
before each live request in the explorer, and every :data:`REFRESH_SECONDS` between generation batches.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from neurogate.errors import ConfigError

ENV = "NEUROGATE_THREADS"
AUTO: Literal["auto"] = "auto"
#: How long ``auto`` watches the CPUs before counting the idle ones.
SAMPLE_SECONDS = 0.2
#: A core counts as idle when other processes use at most this share of it (measurement noise, short
#: bursts); a thread on a core that is busier than that makes every parallel operation wait for it.
SLACK = 0.25
#: How often long work (generation, batch by batch) counts the idle cores again under ``auto``.
REFRESH_SECONDS = 30.0

Setting = int | Literal["auto"]
ALLOWED = "a whole number >= 1 or 'auto'"


class _Applied:
    """The setting :func:`set_threads` last applied in this process (``None``: never called), and when
    (``time.monotonic``)."""

    setting: Setting | None = None
    at: float = 0.0


@dataclass(frozen=True)
class CpuState:
    """What ``auto`` decides from: ``cpus`` logical CPUs this process may run on, ``physical`` cores among
    them, ``quota`` the cgroup's CPU limit in cores (``None``: no limit) and ``busy`` the logical CPUs
    that other processes kept busy while it watched."""

    cpus: int
    physical: int
    quota: float | None
    busy: float


def parse(value: object, where: str = "--threads") -> Setting:
    """``value`` as a setting (``"auto"``, or a whole number >= 1 from an int or its text); anything else
    is a :class:`ConfigError` naming ``where`` and what is allowed."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{where} must be {ALLOWED}, got {value!r}")


def settings_path() -> Path:
    """The settings file: ``settings.toml`` in the user config folder (``$XDG_CONFIG_HOME/neurogate`` on
    Linux, by default ``~/.config/neurogate/settings.toml``)."""
    return Path(platformdirs.user_config_dir("neurogate")) / "settings.toml"


def from_file(path: Path | None = None) -> Setting | None:
    """``threads`` from the settings file (``None`` when the file or the key is absent)."""
    path = path or settings_path()
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})") from exc
    if "threads" not in data:
        return None
    return parse(data["threads"], f"threads in {path}")


def configured(
    flag: object = None, env: Mapping[str, str] | None = None, path: Path | None = None
) -> tuple[Setting, str]:
    """The setting and where it came from: ``flag`` (``--threads``), else ``NEUROGATE_THREADS`` in ``env``
    (default: the process environment), else the settings file, else a plain number in ``OMP_NUM_THREADS``
    (the variable every OpenMP program reads, kept when the user set it), else ``auto``."""
    if flag is not None:
        return parse(flag, "--threads"), "--threads"
    env = os.environ if env is None else env
    if env.get(ENV, "").strip():
        return parse(env[ENV], ENV), ENV
    found = from_file(path)
    if found is not None:
        return found, str(path or settings_path())
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp), "OMP_NUM_THREADS"
    return AUTO, "default"


def auto_threads(cpus: int, physical: int, busy: float, quota: float | None = None) -> int:
    """The ``auto`` rule: the physical cores other processes leave idle, at least 1.

    ``cpus - busy`` logical CPUs are idle; with ``physical < cpus`` (SMT) they are that share of the
    physical cores. A core counts when at most :data:`SLACK` of it is taken. A cgroup ``quota`` (cores'
    worth of CPU time) caps the count, since more threads than the quota are throttled in turns.
    """
    cpus, physical = max(1, cpus), max(1, min(physical, cpus))
    idle_cores = max(0.0, cpus - max(0.0, busy)) * physical / cpus
    limit = physical if quota is None else max(1, min(physical, math.floor(quota + 1e-9)))
    return max(1, min(limit, math.floor(idle_cores + SLACK + 1e-9)))


def measure(seconds: float = SAMPLE_SECONDS) -> CpuState:
    """This machine's :class:`CpuState`: affinity, cores, quota, and the busy CPUs over ``seconds``."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    allowed = allowed or list(range(os.cpu_count() or 1))
    return CpuState(len(allowed), _physical(allowed), _quota(), _busy(allowed, seconds))


def set_threads(setting: Setting | str = AUTO) -> int:
    """Make torch use ``setting`` CPU threads (``"auto"``: :func:`auto_threads` on :func:`measure`);
    return the count. Inter-op threads are set to 1 where torch still allows it: neurogate starts no
    inter-op work, and a second pool would only compete with the intra-op threads for the same cores."""
    import torch

    value = parse(setting, "threads")
    _Applied.setting = value
    if not isinstance(value, int):
        state = measure()
        value = auto_threads(state.cpus, state.physical, state.busy, state.quota)
    _Applied.at = time.monotonic()
    torch.set_num_threads(value)
    # RuntimeError: inter-op work already ran, or it was set before; torch keeps its pool
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return value


def refresh(min_interval: float = 0.0) -> int | None:
    """Count the idle cores again when the setting applied last was ``auto`` and at least ``min_interval``
    seconds have passed since the last count (the load may have changed since: the explorer calls it before
    each request, generation between batches every :data:`REFRESH_SECONDS`); return the new count, or
    ``None`` when nothing was counted (a fixed number, never applied, or counted too recently)."""
    if _Applied.setting != AUTO or time.monotonic() - _Applied.at < min_interval:
        return None
    return set_threads(AUTO)


def _physical(cpus: list[int]) -> int:
    """Physical cores among ``cpus``: distinct SMT sibling sets (each CPU its own core where unknown)."""
    cores: set[str] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology / "core_cpus_list").read_text().strip())
        except OSError:
            try:
                cores.add((topology / "thread_siblings_list").read_text().strip())
            except OSError:
                cores.add(str(cpu))
    return max(1, len(cores))


def _quota() -> float | None:
    """The cgroup's CPU limit in cores (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), ``None`` when
    unlimited or unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    group = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
    for folder in (Path("/sys/fs/cgroup") / group.lstrip("/"), Path("/sys/fs/cgroup")):
        try:
            limit, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if limit == "max" else int(limit) / int(period)
    try:
        v1 = Path("/sys/fs/cgroup/cpu")
        limit_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit_us <= 0 or period_us <= 0 else limit_us / period_us


def _cpu_times(cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """``{cpu: (idle, total)}`` jiffies from ``/proc/stat`` (idle includes iowait); ``None`` when it
    cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted, times = set(cpus), {}
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpu in wanted:
            values = [int(v) for v in fields[:8]]
            times[cpu] = (values[3] + values[4], sum(values))
    return times or None


def _busy(cpus: list[int], seconds: float) -> float:
    """Logical CPUs kept busy (by other processes: this one sleeps meanwhile) over ``seconds``; the
    1-minute load average where ``/proc/stat`` is missing."""
    before = _cpu_times(cpus)
    if before is None:
        return min(float(len(cpus)), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(seconds)
    after = _cpu_times(cpus) or before
    busy = 0.0
    for cpu, (idle0, total0) in before.items():
        idle1, total1 = after.get(cpu, (idle0, total0))
        if total1 > total0:  # iowait may step backwards (a kernel quirk): keep each CPU within [0, 1]
            busy += min(1.0, max(0.0, 1.0 - (idle1 - idle0) / (total1 - total0)))
    return busy

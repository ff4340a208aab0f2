"""The explorer's settings, validated once: what to load, which folders it may read, where it listens."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from neurogate import settings
from neurogate.errors import ConfigError

LOOPBACK = "127.0.0.1"
MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class UISettings:
    """``model``: the model live steering loads (``None``: browse circuits and runs only).
    ``circuits``: circuit files to show (their folders become readable). ``runs``: a folder of study runs.
    ``host``/``port``: where the server listens (``port=0`` picks a free port). ``max_new_tokens``: the
    live replies' length until the page asks for another (up to ``MAX_NEW_TOKENS``). ``judge``: the
    judge that labels live replies."""

    model: str | None = None
    circuits: tuple[Path, ...] = ()
    runs: Path | None = None
    host: str = LOOPBACK
    port: int = 8765
    max_new_tokens: int = 64
    judge: str = "keyword"
    dtype: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        circuits = tuple(Path(c) for c in settings.as_tuple("circuits", self.circuits))
        for path in circuits:
            if not path.is_file():
                raise ConfigError(f"--circuit {str(path)!r} is not a file; give a circuit JSON from discover")
        object.__setattr__(self, "circuits", tuple(p.resolve() for p in circuits))
        if self.runs is not None:
            runs = Path(self.runs)
            if not runs.is_dir():
                raise ConfigError(
                    f"--runs {str(runs)!r} is not a folder; give the folder `neurogate run` wrote"
                )
            object.__setattr__(self, "runs", runs.resolve())
        settings.whole("port", self.port, minimum=0)
        if self.port > 65535:
            raise ConfigError(f"--port must be at most 65535, got {self.port}")
        settings.whole("max_new_tokens", self.max_new_tokens)
        if self.max_new_tokens > MAX_NEW_TOKENS:
            raise ConfigError(f"--max-new-tokens must be at most {MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not self.host.strip():
            raise ConfigError("--host is empty; leave it out to bind 127.0.0.1")

    @property
    def loopback_only(self) -> bool:
        """Whether the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders the server may read: the runs folder and each circuit file's folder."""
        found = [self.runs] if self.runs is not None else []
        found += [c.parent for c in self.circuits]
        return tuple(dict.fromkeys(found))

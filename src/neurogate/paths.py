"""Where neurogate keeps its files: one root (``$NEUROGATE_HOME`` or the user cache directory) and one
sub-folder per kind of cache, so every cache is found the same way."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """neurogate's cache root: ``$NEUROGATE_HOME``, else the user cache directory."""
    env = os.environ.get("NEUROGATE_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("neurogate"))


def cache_dir(kind: str) -> Path:
    """The folder of one cache under :func:`home`: ``zoo`` (converted models), ``universal``
    (universal-neuron sets), ``judge-cache`` (judge verdicts), ``stats`` (activation statistics)."""
    return home() / kind

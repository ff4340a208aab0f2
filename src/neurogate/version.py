"""The installed package's version, read once from its metadata (pyproject.toml is the single source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurogate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

"""Where Debian's Chromium is and how to start it headless with no network of its own (no updates, sync,
safe browsing or QUIC probes): shared by the browser test and the explorer's benchmark."""

from __future__ import annotations

import os
import shutil

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_chromium() -> str | None:
    """``$NEUROGATE_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH, else ``None``."""
    return (
        os.environ.get("NEUROGATE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )

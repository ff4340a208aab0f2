"""A web app served on a free loopback port for browser tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its URL, stops it after."""
    import uvicorn

    from neurogate.ui.serve import bind, url_of

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield url_of("127.0.0.1", sock.getsockname()[1])
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def chromium(executable: str) -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (imported here: browser tests skip without it)."""
    from playwright.sync_api import sync_playwright

    from neurogate.ui.browser import CHROMIUM_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()

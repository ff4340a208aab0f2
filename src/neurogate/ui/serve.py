"""Start the explorer: bind the socket first (so the printed URL has the real port), then run uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

import uvicorn

from neurogate.errors import ConfigError
from neurogate.ui.server import create_app
from neurogate.ui.settings import UISettings

logger = logging.getLogger(__name__)

NOT_LOCAL = (
    "binding {host} makes the explorer reachable from other machines: anyone who can reach this port can "
    "read your circuits and runs and use the model. Bind 127.0.0.1 (the default) unless you mean it."
)


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free port); a port in use or an address this
    machine cannot listen on is a :class:`ConfigError` that says what to pass instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another explorer or server?); pass --port with a free "
                "port, or --port 0 to pick one"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --host or --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: UISettings, announce: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """Run the explorer until interrupted; ``announce`` gets the URL once the socket listens."""
    if not settings.loopback_only:
        warn(NOT_LOCAL.format(host=settings.host))
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
    announce(url_of(settings.host, sock.getsockname()[1]))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])

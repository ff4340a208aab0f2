"""Safe by default: requests must name this server as their host (no DNS rebinding), state-changing
requests must come from its own pages (Origin check), and file paths stay inside the given folders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from neurogate.errors import NeurogateError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Every script, style and request stays on this server; nothing may frame the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class PathNotAllowed(NeurogateError):
    """A requested path is outside the folders given on the command line, or does not exist."""


WILDCARDS = ("0.0.0.0", "::")


def allowed_hosts(host: str, loopback_only: bool) -> frozenset[str] | None:
    """Host names (without port) a request may address: the bound host, and the local names when bound to
    loopback; ``None`` (any name) for a wildcard bind, whose names this server cannot know."""
    if host in WILDCARDS:
        return None
    names = {host.lower(), f"[{host.lower()}]" if ":" in host else host.lower()}
    if loopback_only:
        names.update(LOCAL_NAMES)
    return frozenset(names)


def _host_name(value: str) -> str:
    """``"127.0.0.1:8765"`` -> ``"127.0.0.1"``; ``"[::1]:80"`` -> ``"[::1]"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_request(request: Request, hosts: frozenset[str] | None) -> str | None:
    """Why ``request`` is refused, or ``None`` when it may go on. A foreign Host header means a page on
    another site reached this server by a name that resolves here (DNS rebinding); a foreign Origin means
    another site's page is sending the request."""
    host = request.headers.get("host", "")
    if hosts is not None and _host_name(host) not in hosts:
        return f"host {host!r} is not this server"
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin is None:
        return "state-changing requests need an Origin header (send them from the explorer's page)"
    if origin.lower() != f"{request.url.scheme}://{host.lower()}":
        return f"origin {origin!r} may not change anything here"
    return None


def guard(
    hosts: frozenset[str] | None,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """HTTP middleware: refuse foreign hosts and cross-origin writes (403); add security headers."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        reason = check_request(request, hosts)
        if reason is not None:
            return JSONResponse({"error": reason}, status_code=403)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    return middleware


def confine(root: Path, relative: str) -> Path:
    """``relative`` resolved inside ``root``, symlinks included; anything that leaves it, or does not
    exist, raises :class:`PathNotAllowed`."""
    if not relative or "\x00" in relative or Path(relative).is_absolute():
        raise PathNotAllowed(f"{relative!r} is not a path relative to the explorer's folders")
    base = root.resolve()
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base) or not candidate.exists():
        raise PathNotAllowed(f"{relative!r} is not inside the folders given on the command line")
    return candidate

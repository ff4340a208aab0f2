"""Checks an evaluation runs before its first expensive step (model load, discovery, generation): the
judges' settings, and the endpoint judge's server, with one cheap request and a short timeout."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from neurogate.errors import ConfigError
from neurogate.evaluation.judges.endpoint import EndpointJudge
from neurogate.evaluation.settings import EvalSettings

PROBE_TIMEOUT = 5.0
JUDGE_FLAG = "--endpoint-url or NEUROGATE_JUDGE_URL"


def check_url(url: str, what: str = "the endpoint judge URL", flag: str = JUDGE_FLAG) -> None:
    """Raise unless ``url`` is an http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{what} {url!r} is not an http(s) URL with a host; give one such as "
            f"http://localhost:8000/v1 ({flag})"
        )


def probe(url: str, timeout: float = PROBE_TIMEOUT, what: str = "the endpoint judge") -> None:
    """One GET of ``url``'s ``/models`` (no key sent). Any HTTP answer, even an error status, shows a server
    is there; no answer within ``timeout`` raises :class:`ConfigError`."""
    target = url.removesuffix("/chat/completions").rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(urllib.request.Request(target, method="GET"), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"{what} at {url} does not answer ({reason}); start the server or fix its URL. Checked before "
            "any model was loaded"
        ) from exc


def check_evaluation(settings: EvalSettings, *, reach: bool = True) -> None:
    """Validate what :class:`EvalSettings` cannot check alone: the endpoint judge has a URL and a model, the
    URL is well formed and (``reach``) its server answers; the same for the ``openai`` engine's server."""
    if settings.engine == "openai" and settings.engine_url is not None:
        check_url(settings.engine_url, "the generation server URL", "--engine-url")
        if reach:
            probe(settings.engine_url, what="the generation server")
    if "endpoint" not in settings.judges:
        return
    judge = EndpointJudge.from_settings(settings)
    check_url(judge.base_url)
    if reach:
        probe(judge.base_url)

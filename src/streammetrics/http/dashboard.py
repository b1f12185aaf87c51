"""``GET /dashboard`` (one self-contained HTML page) and ``GET /stream`` (its feed).

The page is package data (``static/dashboard.html``): inline CSS and a small vanilla
script, nothing fetched from anywhere but this endpoint's own ``/stream``. Its
Content-Security-Policy says so to the browser too: scripts and styles only by the
hashes of the page's own inline blocks, connections only to the same origin.

``/stream`` is left out of the OpenAPI schema: it never ends, and schema-driven test
tools would wait on it forever.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from contextlib import suppress
from functools import cache
from importlib.resources import files
from typing import Any, Final

from litestar import MediaType, Request, Response, get
from litestar.exceptions import ValidationException
from litestar.response import Stream

from ..errors import HarnessUnavailableError
from ..views.live import LIVE_WINDOWS
from .responses import ErrorResponse, error_response
from .routes import Service, accepts_query, check_query

__all__ = ("DASHBOARD_PATH", "LIVE_ENDPOINTS", "LIVE_ROUTES", "dashboard_html")

#: The page's route (open without a token: a browser navigating to it cannot send one).
DASHBOARD_PATH: Final = "/dashboard"
#: What ``GET /`` lists for these routes.
LIVE_ENDPOINTS: Final[dict[str, str]] = {
    DASHBOARD_PATH: "Live dashboard (HTML, fed by /stream)",
    "/stream": "Server-Sent Events: one compact snapshot per tick "
    "(?interval=seconds, ?window=10s|60s|300s)",
}
_MAX_INTERVAL_S: Final = 3600.0
_RETRY_AFTER_S: Final = 5


@cache
def dashboard_html() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy (hashes of its inline script and style)."""
    text = files("streammetrics").joinpath("http/static/dashboard.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks
        )

    csp = (
        "default-src 'none'; "
        f"script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), csp


@get(DASHBOARD_PATH, summary="Live dashboard: health, components, breakers, alerts")
async def dashboard() -> Response[bytes]:
    body, csp = dashboard_html()
    return Response(
        body,
        # Litestar adds "; charset=utf-8" to a text/* type itself: naming it here too
        # sent it twice.
        media_type=MediaType.HTML,
        headers={
            "content-security-policy": csp,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",
        },
    )


def _interval(request: Request[Any, Any, Any]) -> float | None:
    """``?interval=seconds``; ``check_query`` has refused unknown, repeated and
    ``window`` parameters already, as on the other routes."""
    raw = request.query_params.get("interval")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= _MAX_INTERVAL_S:  # also false for NaN
        raise ValidationException(
            detail=f"query parameter 'interval' must be seconds from 0 to "
            f"{_MAX_INTERVAL_S:g}; got {raw!r}",
            extra={"parameter": "interval"},
        )
    return value


@get(
    "/stream",
    include_in_schema=False,
    before_request=check_query,
    opt=accepts_query(interval=None, window=LIVE_WINDOWS),
)
async def stream(request: Request[Any, Any, Any], service: Service) -> Response[Any]:
    """One ``snapshot`` event per tick (``unavailable`` while no harness feeds the
    endpoint), ``: keep-alive`` comments between, a ``shutdown`` event at the end.

    A ``Stream`` of the feed's frames, not Litestar's ``ServerSentEvent``: that one frames
    each item it is given once per client (as a ``data:`` field), where the feed hands
    out frames already framed and encoded once for every client."""
    interval = _interval(request)
    window = request.query_params.get("window")
    feed = service.live

    async def refresh() -> None:
        with suppress(HarnessUnavailableError):  # the service told the feed already
            await service.snapshot()

    try:
        frames = feed.connect(interval, refresh, window)
    except LookupError as exc:
        detail = str(exc.args[0])
        return error_response(
            ErrorResponse("stream unavailable", detail, 503),
            {"retry-after": str(_RETRY_AFTER_S)},
        )
    return Stream(
        frames,
        media_type="text/event-stream",
        headers={
            "cache-control": "no-cache, no-transform",
            "x-accel-buffering": "no",  # nginx: pass each frame on at once
        },
    )


LIVE_ROUTES: Final = (dashboard, stream)

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
from .responses import ErrorResponse
from .routes import Service

__all__ = ("LIVE_ENDPOINTS", "LIVE_ROUTES", "dashboard_html")

#: What ``GET /`` lists for these routes.
LIVE_ENDPOINTS: Final[dict[str, str]] = {
    "/dashboard": "Live dashboard (HTML, fed by /stream)",
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


@get("/dashboard", summary="Live dashboard: health, components, breakers, alerts")
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


def _query(request: Request[Any, Any, Any]) -> tuple[float | None, str | None]:
    """``?interval=seconds`` and ``?window=``, checked like the other routes' queries."""
    value: float | None = None
    window: str | None = None
    seen: set[str] = set()
    for key, raw in request.query_params.multi_items():
        if key not in ("interval", "window"):
            raise ValidationException(
                detail=f"unknown query parameter {key!r}; /stream accepts: interval, window",
                extra={"parameter": key},
            )
        if key in seen:
            raise ValidationException(
                detail=f"query parameter {key!r} given more than once; give it once",
                extra={"parameter": key},
            )
        seen.add(key)
        if key == "window":
            if raw not in LIVE_WINDOWS:
                raise ValidationException(
                    detail=f"query parameter 'window' must be one of "
                    f"{', '.join(LIVE_WINDOWS)}; got {raw!r}",
                    extra={"parameter": key, "allowed": list(LIVE_WINDOWS)},
                )
            window = raw
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 0 <= value <= _MAX_INTERVAL_S:  # also false for NaN
            raise ValidationException(
                detail=f"query parameter 'interval' must be seconds from 0 to "
                f"{_MAX_INTERVAL_S:g}; got {raw!r}",
                extra={"parameter": key},
            )
    return value, window


@get("/stream", include_in_schema=False)
async def stream(request: Request[Any, Any, Any], service: Service) -> Response[Any]:
    """One ``snapshot`` event per tick (``unavailable`` while no harness feeds the
    endpoint), ``: keep-alive`` comments between, a ``shutdown`` event at the end."""
    interval, window = _query(request)
    feed = service.live

    async def refresh() -> None:
        with suppress(HarnessUnavailableError):  # the service told the feed already
            await service.snapshot()

    try:
        frames = feed.connect(interval, refresh, window)
    except LookupError as exc:
        detail = str(exc.args[0])
        return Response(
            ErrorResponse("stream unavailable", detail, 503),
            status_code=503,
            headers={"retry-after": str(_RETRY_AFTER_S)},
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

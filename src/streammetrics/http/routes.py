"""The route handlers of the metrics API. They read one cached snapshot and shape it;
they never compute figures themselves (that is the aggregator's job, once per tick).

Names used in handler signatures are imported at run time, not under TYPE_CHECKING:
Litestar resolves the annotations to build its validators and the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http import HTTPStatus
from time import perf_counter
from typing import Annotated, Any, Final, cast

import anyio.lowlevel
import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE

from ..prometheus.exposition import Exposition
from ..snapshot import Snapshot, Status
from ..steps import BUDGET_S
from ..version import __version__
from ..views.tick_cache import TickCache
from ..windows import ViewSeconds
from .responses import (
    AlertsResponse,
    ComponentsResponse,
    ErrorResponse,
    HealthResponse,
    LiveResponse,
    MetricsResponse,
    ReadyResponse,
    RootResponse,
    Window,
    alerts_response,
    components_response,
    health_response,
    metrics_response,
)

__all__ = (
    "ENDPOINTS",
    "ROUTES",
    "ProbeAnswers",
    "QuerySpec",
    "Service",
    "accepts_query",
    "check_query",
    "wants_openmetrics",
)

#: ``GET /``'s endpoint list.
ENDPOINTS: Final[dict[str, str]] = {
    "/health": "System health summary",
    "/health/live": "Liveness probe: 200 while the process serves",
    "/health/ready": "Readiness probe: 200 when /health is, else 503 with the status",
    "/metrics": "Prometheus exposition (text, or OpenMetrics when the Accept header asks)",
    "/metrics/json": "Detailed performance metrics",
    "/alerts": "Active alerts and recommendations",
    "/components": "Component-level status",
}
#: How handlers (and ``extra_route_handlers``) ask for the service the app was made with.
Service = NamedDependency[TickCache]
_ENCODER: Final = msgspec.json.Encoder()


def _json_answer(body: bytes, status: int) -> ASGIResponse:
    return ASGIResponse(body=body, status_code=status, media_type="application/json")


class ProbeAnswers:
    """``/health``'s and ``/health/ready``'s answers over one app's service, each encoded
    once per snapshot and sent as it is to every request that reads the same snapshot.

    Why: the health routes are what load balancers and probes ask most, many times a tick,
    and their bodies change only with the snapshot. Made per request (the body Struct,
    Litestar's ``Response`` and its header map, the encode, the ASGI response), the answer
    cost ``/health`` nearly as much again as bare Litestar's whole request. An ``ASGIResponse``
    makes each request's ASGI messages and header list afresh, so whatever a hook or
    middleware adds to one answer (security headers, CORS) never reaches another's.
    Holds at most one snapshot per ``?window=`` besides the service's own.
    """

    def __init__(self, service: TickCache) -> None:
        self.service = service
        self._health: dict[ViewSeconds | None, tuple[Snapshot, ASGIResponse]] = {}
        self._ready: dict[Status, ASGIResponse] = {}

    async def health(self, view: ViewSeconds | None) -> ASGIResponse:
        """``GET /health``: 200 when healthy, else 503, the same body either way."""
        snap = await self.service.snapshot(view)
        cached = self._health.get(view)
        if cached is not None and cached[0] is snap:
            return cached[1]
        status = 200 if snap.system_status == "healthy" else 503
        answer = _json_answer(_ENCODER.encode(health_response(snap)), status)
        self._health[view] = (snap, answer)
        return answer

    async def ready(self) -> ASGIResponse:
        """``GET /health/ready``: ``/health``'s status, one answer per status."""
        status = (await self.service.snapshot()).system_status
        answer = self._ready.get(status)
        if answer is None:
            body = _ENCODER.encode(ReadyResponse(status))
            answer = self._ready[status] = _json_answer(body, 200 if status == "healthy" else 503)
        return answer


#: How the health routes ask for their app's ``ProbeAnswers``.
Answers = NamedDependency[ProbeAnswers]
_WINDOWS: Final[dict[str, ViewSeconds]] = {"10s": 10, "60s": 60, "300s": 300}
#: handler ``opt`` key: the query parameters a route accepts, each with its allowed values
#: (None: any value, which the handler reads and checks itself).
_QUERY_OPT: Final = "query"
#: A route's accepted query parameters, as ``check_query`` reads them from its ``opt``.
QuerySpec = dict[str, tuple[str, ...] | None]


def accepts_query(**params: tuple[str, ...] | None) -> dict[str, QuerySpec]:
    """The ``opt`` of a route whose ``check_query`` accepts ``params``: each name with
    its allowed values, or None for any value the handler checks itself."""
    return {_QUERY_OPT: params}


_WINDOW_QUERY: Final = accepts_query(window=tuple(_WINDOWS))
_NO_QUERY: Final = accepts_query()
#: Longest part of a bad parameter or value quoted back in an error detail.
_SHOWN: Final = 64


def _shown(text: str) -> str:
    """``repr`` of a client's text, cut short: a 10 kB value is not echoed whole."""
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[:_SHOWN]!r}… ({len(text)} characters)"


WindowParam = Annotated[
    Window | None,
    QueryParameter(
        description="The rolling window the rates and error rates cover; "
        "default: the endpoint's configured view (60s)."
    ),
]

_OK: Final = HTTPStatus(200).description


def _ok(body: type[msgspec.Struct]) -> ResponseSpec:
    """The documented 200 of a route that answers with a ready-made ``ASGIResponse``
    (which Litestar cannot document from the return type)."""
    return ResponseSpec(body, description=_OK, generate_examples=False)


_ERR_400 = ResponseSpec(
    ErrorResponse,
    description="Unknown, repeated or invalid query parameter",
    generate_examples=False,
)
_ERR_503 = ResponseSpec(
    ErrorResponse, description="No harness feeds the endpoint", generate_examples=False
)


async def check_query(request: Request[Any, Any, Any]) -> None:
    """Reject query parameters a route does not know, repeats and values out of range.

    A ``before_request`` hook rather than Litestar's validation so the 400 names the
    parameter and its allowed values in the API's own error shape; a typo
    (``?windw=10s``) silently answering with the default window would be worse than an
    error. Not a guard: Litestar copies the route handler for every guard call, which
    cost ``/health`` a tenth of its throughput.
    """
    if not request.scope["query_string"]:
        return
    handler = request.route_handler
    spec: QuerySpec | None = handler.opt.get(_QUERY_OPT)
    if spec is None:
        return
    seen: dict[str, int] = {}
    for key, value in request.query_params.multi_items():
        if key not in spec:
            names = ", ".join(spec) or "none"
            raise ValidationException(
                detail=f"unknown query parameter {_shown(key)}; "
                f"{request.url.path} accepts: {names}",
                extra={"parameter": key},
            )
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            raise ValidationException(
                detail=f"query parameter {key!r} given more than once; give it once",
                extra={"parameter": key},
            )
        allowed = spec[key]
        if allowed is not None and value not in allowed:
            raise ValidationException(
                detail=f"query parameter {key!r} must be one of {', '.join(allowed)}; "
                f"got {_shown(value)}",
                extra={"parameter": key, "allowed": list(allowed)},
            )


def wants_openmetrics(accept: str) -> bool:
    """Whether the scraper prefers OpenMetrics, by prometheus-client's own negotiation."""
    _encoder, content_type = choose_encoder(accept)
    return content_type.startswith("application/openmetrics-text")


def _view(window: str | None) -> ViewSeconds | None:
    return _WINDOWS[window] if window is not None else None


@get(
    "/",
    summary="Endpoint discovery and API information",
    before_request=check_query,
    opt=_NO_QUERY,
    responses={400: _ERR_400},
)
async def root(service: Service, state: State) -> RootResponse:
    return RootResponse(
        service=state["title"],
        version=__version__,
        endpoints=state.get("endpoints", ENDPOINTS),  # an endpoint adds its own routes
        timestamp=service.wall(),
    )


@get(
    "/health",
    summary="System health summary for load balancers: 200 only when healthy",
    before_request=check_query,
    opt=_WINDOW_QUERY,
    responses={
        200: _ok(HealthResponse),
        400: _ERR_400,
        503: ResponseSpec(
            cast(Any, HealthResponse | ErrorResponse),  # Litestar documents it as oneOf
            description="Degraded or unhealthy (health body), or no harness (error body)",
            generate_examples=False,
        ),
    },
)
async def health(probe_answers: Answers, window: WindowParam = None) -> ASGIResponse:
    return await probe_answers.health(_view(window))


#: The one answer of ``/health/live``, made once.
_ALIVE: Final = _json_answer(_ENCODER.encode(LiveResponse()), 200)


@get(
    "/health/live",
    summary="Liveness probe: 200 while the process serves requests",
    before_request=check_query,
    opt=_NO_QUERY,
    responses={200: _ok(LiveResponse), 400: _ERR_400},
)
async def health_live() -> ASGIResponse:
    """Never reads a snapshot: a stopped harness or a degraded system is no reason to
    restart the process (that is what readiness says)."""
    return _ALIVE


@get(
    "/health/ready",
    summary="Readiness probe: 200 when /health is 200, else 503 with the status",
    before_request=check_query,
    opt=_NO_QUERY,
    responses={
        200: _ok(ReadyResponse),
        400: _ERR_400,
        503: ResponseSpec(
            cast(Any, ReadyResponse | ErrorResponse),
            description="Degraded or unhealthy (status body), or no harness (error body)",
            generate_examples=False,
        ),
    },
)
async def health_ready(probe_answers: Answers) -> ASGIResponse:
    return await probe_answers.ready()


@get(
    "/metrics",
    summary="Prometheus exposition; OpenMetrics when the Accept header asks for it",
    media_type=CONTENT_TYPE_PLAIN_0_0_4,
    before_request=check_query,
    opt=_NO_QUERY,
    responses={400: _ERR_400, 503: _ERR_503},
)
async def metrics(request: Request[Any, Any, Any], service: Service) -> Stream:
    om = wants_openmetrics(request.headers.get("accept", ""))
    exposition = await service.exposition(openmetrics=om)
    content_type = OPENMETRICS_TYPE if om else CONTENT_TYPE_PLAIN_0_0_4
    # The body goes out piece by piece, as it is cached: joined, a 10,000-component body
    # (23 MB) would be one allocation and copy of tens of milliseconds on the event loop,
    # per tick. Its length is known, so it is a plain Content-Length body, not chunked.
    # An explicit content type: from media_type Litestar would append a second "; charset".
    return Stream(
        _pieces(exposition),
        media_type=content_type,
        headers={"content-type": content_type, "content-length": str(exposition.size)},
    )


async def _pieces(exposition: Exposition) -> AsyncIterator[bytes]:
    """The pieces of a body, in order (an async iterator: Litestar would take each item
    of a plain one from a worker thread), the event loop let in once sending them has
    held it for ``_SEND_STEP_S``.

    Why: sending a piece suspends only once the socket's buffer is full, and a loopback
    client that reads as fast as it is sent keeps it from filling, so a 23 MB body went
    out in a few steps of the loop, each copying megabytes into the kernel (up to 12 ms)
    while every other request waited."""
    until = perf_counter() + _SEND_STEP_S
    for piece in exposition.pieces:
        if perf_counter() >= until:
            await anyio.lowlevel.checkpoint()
            until = perf_counter() + _SEND_STEP_S
        yield piece


#: How long sending a body's pieces holds the event loop at a time: a piece (~256 KiB)
#: costs a tenth of a millisecond or so, so a step sends a few; the step of every walk
#: on the loop.
_SEND_STEP_S: Final = BUDGET_S


@get(
    "/metrics/json",
    summary="Comprehensive metrics in JSON",
    before_request=check_query,
    opt=_WINDOW_QUERY,
    responses={400: _ERR_400, 503: _ERR_503},
)
async def metrics_json(service: Service, window: WindowParam = None) -> MetricsResponse:
    return metrics_response(await service.snapshot(_view(window)), service.custom())


@get(
    "/alerts",
    summary="Current alerts and recommendations",
    before_request=check_query,
    opt=_NO_QUERY,
    responses={400: _ERR_400, 503: _ERR_503},
)
async def alerts(service: Service) -> AlertsResponse:
    return alerts_response(await service.snapshot())


@get(
    "/components",
    summary="Component-level detailed status",
    before_request=check_query,
    opt=_WINDOW_QUERY,
    responses={400: _ERR_400, 503: _ERR_503},
)
async def components(service: Service, window: WindowParam = None) -> ComponentsResponse:
    return components_response(await service.snapshot(_view(window)))


ROUTES: Final = (root, health, health_live, health_ready, metrics, metrics_json, alerts, components)

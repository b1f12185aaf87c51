"""The APIEndpoint component (the seed's ``FastAPIEndpoint``): items in over HTTP.

``POST {path}`` takes one JSON value as one item; ``POST {path}/batch`` takes a JSON
array of items. Each accepted item goes down every binding and is counted on the probe
with its latency from request to hand-off, so a full binding downstream (backpressure)
shows up as latency here. Only once every item of a request was handed on does the
endpoint answer ``202 {"accepted": n}``; if downstream does not take them within
``send_timeout_s`` it answers 503 and says how many it accepted, rather than holding
the connection forever.

A circuit breaker (``config.circuit_breaker``, set by the harness when the endpoint has
an output) guards what the endpoint sends downstream, as Hystrix guards a dependency: a
send that times out or that the binding refuses (its consumer is gone) is a failure, a
send taken is a success. Once it opens, requests are answered 503 with ``Retry-After``
at once: a client learns straight away what it would otherwise learn only after
``send_timeout_s`` per request, and no pile of requests waits on the stuck consumer.
Half-open lets trial requests through. A body that is not valid JSON is the
client's fault, not downstream's, so it never reaches the breaker.

What it answers with a 4xx (a malformed or oversized body, an unknown route) is the
client's failure, not the endpoint's: it counts in the component's ``client_errors``,
never in ``errors_encountered``, its error rate or its health, as RED dashboards count
only server errors. A 5xx (downstream busy or closed, the breaker open, an exception)
is the endpoint's own failure and counts as an error.

Bodies are read raw and decoded with msgspec rather than through a typed handler
parameter: "any JSON value" has no schema to validate against, and a malformed body
must get a clear 400 that names the problem.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from msgspec import Meta

from ..http.headers import security_headers
from ..http.responses import ErrorResponse, error_response, internal_error
from ..model.nesting import MAX_DEPTH, json_too_deep
from ..model.types import Port, RoutePath
from ..model.validation import UNREADABLE
from .base import Component, Context

if TYPE_CHECKING:
    from ..breaker import CircuitBreaker

__all__ = ("APIEndpoint", "APIEndpointConfig", "APIEndpointStatistics", "Accepted")


class APIEndpointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    port: Port
    """Port to listen on (required; 0 lets the OS pick a free one)."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback unless the blueprint says otherwise."""
    path: RoutePath = "/items"
    """Route that accepts items; ``{path}/batch`` accepts arrays of them."""
    max_body_bytes: Annotated[int, Meta(ge=1, le=1 << 30)] = 1_048_576
    """Larger bodies are refused with 413 before they are read whole."""
    send_timeout_s: Annotated[float, Meta(gt=0)] | None = 10.0
    """How long a request may wait for downstream to take its items (then 503);
    null waits as long as it takes."""
    shutdown_timeout_s: Annotated[float, Meta(ge=0, le=3600)] = 5.0
    """On shutdown, how long requests in flight may take to hand their items on."""

    def __post_init__(self) -> None:
        if self.path == "/health":
            raise ValueError("path /health is the endpoint's own health check")


class Accepted(msgspec.Struct, frozen=True):
    accepted: int
    """Items handed downstream by this request."""


class APIEndpointStatistics(msgspec.Struct, frozen=True):
    port: int | None
    """The bound port once listening (the chosen one when configured as 0)."""
    requests: int
    accepted: int
    """Items handed downstream."""
    rejected: int
    """Requests refused: malformed JSON, too large, downstream too slow or closed, or
    the circuit breaker open."""
    client_errors: int = 0
    """Requests answered with a 4xx, the client's fault: the refused with a malformed or
    oversized body, and requests for a route or method it does not have."""


_decode = msgspec.json.Decoder().decode


class _Listening:
    """Turns the bound port that ``serve`` reports into the ``(host, port)`` that the
    harness records, so ``streammetrics run`` can say where the endpoint listens."""

    def __init__(self, inner: TaskStatus[Any], host: str, component: APIEndpoint) -> None:
        self.inner = inner
        self.host = host
        self.component = component

    def started(self, value: Any = None) -> None:
        self.component.port = value
        self.inner.started((self.host, value))


class APIEndpoint(Component):
    """Accepts items by HTTP and sends them down every binding."""

    type_name = "APIEndpoint"
    Config = APIEndpointConfig
    serves_port = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.config: APIEndpointConfig = ctx.config
        self.port: int | None = None
        self.requests = 0
        self._accepted = 0
        self._rejected = 0
        self._client_errors = 0
        self.app = self._create_app()

    def statistics(self) -> APIEndpointStatistics:
        return APIEndpointStatistics(
            port=self.port,
            requests=self.requests,
            accepted=self._accepted,
            rejected=self._rejected,
            client_errors=self._client_errors,
        )

    def _reject(
        self,
        status: int,
        error: str,
        detail: str,
        items: int = 1,
        headers: dict[str, str] | None = None,
    ) -> Response[Any]:
        """Count a refused request and answer it: a 4xx as one client error, a 5xx as
        ``items`` errors of the endpoint's own."""
        self._rejected += 1
        if status < 500:
            self._client_errors += 1
            self.ctx.probe.client_error()
        else:
            self.ctx.probe.error(items, detail=f"{status} {error}: {detail}")
        return error_response(ErrorResponse(error, detail, status), headers)

    def _circuit_open(self, breaker: CircuitBreaker, items: int) -> Response[Any]:
        """503 at once while the breaker refuses; ``Retry-After`` is the whole seconds
        until it lets a trial through (at least 1, as the header has no fractions)."""
        retry = max(1, math.ceil(breaker.wait_time()))
        return self._reject(
            503,
            "circuit open",
            f"the circuit breaker is {breaker.state} after downstream failures; "
            f"no item was accepted, retry in {retry} s",
            items=items,
            headers={"Retry-After": str(retry)},
        )

    async def _body(self, request: Request[Any, Any, Any]) -> Any:
        """The decoded body, or a ready error response (the body is the item, so it
        cannot double as the error signal)."""
        try:
            data = await request.body()
        except HTTPException as exc:  # 413 from request_max_body_size
            return self._reject(
                exc.status_code, HTTPStatus(exc.status_code).phrase.lower(), exc.detail
            )
        if json_too_deep(data):  # decoding any JSON value recurses once per level
            return self._reject(
                400, "malformed JSON", f"the body nests more than {MAX_DEPTH} levels deep"
            )
        try:
            return _decode(data)
        except UNREADABLE as exc:
            # DecodeError, or the UnicodeDecodeError that msgspec before 0.23 raised for a
            # string that is not UTF-8 (both ValueErrors); RecursionError only on a stack
            # already near the interpreter's limit, as the depth was checked
            reason = str(exc)
            if isinstance(exc, UnicodeDecodeError):
                reason = f"a string is not valid UTF-8 ({exc.reason})"
            return self._reject(400, "malformed JSON", reason)

    async def accept(self, items: list[Any], t0: float) -> Response[Any]:
        """Hand ``items`` downstream, each counted with its latency since ``t0``.

        A request is one call through the breaker (an empty batch sends nothing and asks
        nothing of it); each send it makes is an outcome: taken, a success; timed out or
        refused by a closed binding, a failure.
        """
        breaker = self.ctx.breaker
        if breaker is not None and items and not breaker.allow():
            return self._circuit_open(breaker, len(items))
        probe = self.ctx.probe
        send = self.ctx.send
        timeout = self.config.send_timeout_s
        n = 0
        try:
            with anyio.move_on_after(timeout) if timeout is not None else nullcontext() as scope:
                for item in items:
                    await send(item)
                    n += 1
                    probe.processed(latency=time.perf_counter() - t0)
                    if breaker is not None:
                        breaker.record_success()
        except anyio.BrokenResourceError:  # the consumer closed its end: it takes no more
            self._accepted += n
            if breaker is not None:
                breaker.record_failure()
            return self._reject(
                503,
                "downstream closed",
                f"accepted {n} of {len(items)} items: downstream no longer takes items",
                items=len(items) - n,
            )
        self._accepted += n
        if scope is not None and scope.cancelled_caught:
            if breaker is not None:
                breaker.record_failure()
            return self._reject(
                503,
                "downstream busy",
                f"accepted {n} of {len(items)} items: downstream did not take the rest "
                f"within {timeout} s",
                items=len(items) - n,
            )
        return Response(Accepted(n), status_code=202)

    def _create_app(self) -> Litestar:
        cfg = self.config

        @post(cfg.path, status_code=202)
        async def ingest_one(request: Request[Any, Any, Any]) -> Response[Any]:
            t0 = time.perf_counter()
            self.requests += 1
            body = await self._body(request)
            if isinstance(body, Response):
                return body
            return await self.accept([body], t0)

        @post(f"{cfg.path}/batch", status_code=202)
        async def ingest_batch(request: Request[Any, Any, Any]) -> Response[Any]:
            t0 = time.perf_counter()
            self.requests += 1
            body = await self._body(request)
            if isinstance(body, Response):
                return body
            if not isinstance(body, list):
                return self._reject(
                    400, "not a batch", f"expected a JSON array of items, got {type(body).__name__}"
                )
            return await self.accept(body, t0)

        @get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        def http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            if status >= 500:
                self.ctx.probe.error(detail=f"{status} {type(exc).__name__}: {exc}"[:2000])
                return internal_error(request, exc)
            assert isinstance(exc, HTTPException)
            self._client_errors += 1  # a route or method it does not have
            self.ctx.probe.client_error()
            return error_response(
                ErrorResponse(HTTPStatus(status).phrase.lower(), exc.detail, status)
            )

        return Litestar(
            route_handlers=[ingest_one, ingest_batch, health],
            exception_handlers={Exception: http_error},
            before_send=[security_headers],
            request_max_body_size=cfg.max_body_bytes,
            openapi_config=None,
            logging_config=None,
            debug=False,
        )

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        from ..http.server import serve

        cfg = self.config
        await serve(
            self.app,
            host=cfg.host,
            port=cfg.port,
            component=self.name,
            task_status=_Listening(task_status, cfg.host, self),
            shutdown_timeout_s=cfg.shutdown_timeout_s,
        )

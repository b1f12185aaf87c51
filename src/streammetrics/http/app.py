"""The Litestar application of the metrics API: routes, error shapes, OpenAPI.

Every error leaves as JSON ``{"error", "detail", "status_code"}``: monitoring systems
parse bodies, and an HTML debug page or a traceback would be both useless to them and a
leak. Litestar's debug mode stays off for the same reason.

The OpenAPI document is served as JSON only (``/schema``, ``/schema/openapi.json``): the
documentation pages Litestar can render load their scripts from a CDN, so on a monitoring
network without internet access they are blank pages. Another ``/schema/...`` path is a
JSON 404 like any other, not Litestar's HTML one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from copy import copy, deepcopy
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast

import litestar
from litestar import Controller, Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute

from ..errors import HarnessUnavailableError
from ..version import __version__
from ..views.tick_cache import TickCache
from .bodies import BoundedRequest
from .headers import security_headers
from .responses import ErrorResponse, error_response, internal_error
from .routes import ENDPOINTS, ROUTES, ProbeAnswers

if TYPE_CHECKING:
    from litestar.config.cors import CORSConfig
    from litestar.types import (
        ASGIApp,
        ControllerRouterHandler,
        Message,
        Middleware,
        Receive,
        Scope,
        Send,
    )

__all__ = ("MetricsApp", "create_app")

#: Where the OpenAPI document is served (``/schema`` and ``/schema/openapi.json``).
SCHEMA_PATH: Final = "/schema"
#: A route handler function, as ``MetricsApp.get`` and its siblings take it.
HandlerFn = Callable[..., Any]
#: Whose words describe a route with several handlers in ``GET /``.
_METHOD_ORDER: Final[dict[str, int]] = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}


def _unavailable(_request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    return error_response(ErrorResponse("harness unavailable", str(exc), 503))


def _invalid(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    if not isinstance(exc, ValidationException):  # pragma: no cover - registered for it only
        return internal_error(request, exc)
    if not isinstance(exc.extra, list):  # our query guard: the detail already says it all
        return error_response(ErrorResponse("invalid query parameter", exc.detail, 400))
    # Litestar's own validation (custom routes): [{"key", "message", "source"}, ...]
    sources: set[str] = set()
    parts: list[str] = []
    for e in exc.extra:
        if not isinstance(e, dict):
            parts.append(str(e))
            continue
        source = str(getattr(e.get("source"), "value", e.get("source")))
        sources.add(source)
        parts.append(f"{source} parameter {e.get('key')!r}: {e.get('message')}")
    error = "invalid query parameter" if sources == {"query"} else "invalid request"
    return error_response(ErrorResponse(error, "; ".join(parts) or exc.detail, 400))


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    if not isinstance(exc, HTTPException) or exc.status_code >= 500:
        return internal_error(request, exc)
    status = exc.status_code
    return error_response(
        ErrorResponse(HTTPStatus(status).phrase.lower(), exc.detail, status), exc.headers
    )


def _schema_not_found(response: Response[Any]) -> Response[Any]:
    """``after_request`` of the schema router: Litestar answers an unknown ``/schema/...``
    path with an HTML page of its own; here it is the API's JSON 404."""
    if response.status_code != 404:
        return response
    detail = f"no such document; the OpenAPI document is at {SCHEMA_PATH}/openapi.json"
    return error_response(ErrorResponse("not found", detail, 404))


def _served_as_json(fn: HandlerFn) -> HandlerFn:
    """``fn`` as Litestar takes a handler. Litestar refuses a function that does not say
    what it returns, and a quick custom route often says nothing: such a function is
    given ``Any``, which has Litestar encode whatever it returns as JSON with msgspec
    (mappings, lists, Structs, dataclasses). ``fn`` itself is left as it is."""
    if "return" in getattr(fn, "__annotations__", {}):
        return fn
    handler: HandlerFn
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def handler(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

    else:

        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    # wraps() shares fn's annotation dict; the wrapper gets its own, with a return type.
    handler.__annotations__ = {**getattr(fn, "__annotations__", {}), "return": Any}
    return handler


def _headers_only(app: ASGIApp) -> ASGIApp:
    """Route middleware of a HEAD twin: the GET handler's status line and headers, then
    the end of the response, its body never sent. What matters is a streaming response
    (``/stream``): it ends at once instead of running on behind a finished HEAD request,
    as once the response is complete the server answers ``receive()`` with
    ``http.disconnect``, which stops the stream. (An error answer made outside the route,
    by the exception handlers, keeps its body; uvicorn withholds it, as HTTP servers do
    for HEAD.)"""

    async def head(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await app(scope, receive, send_headers)

    return head


def _head_twin(handler: HTTPRouteHandler) -> HTTPRouteHandler:
    """A HEAD handler that answers as ``handler`` does for GET, without the body.

    A shallow copy, as Litestar itself copies a handler when it registers one: the twin
    keeps the handler's owner (so a router's guards, middleware and dependencies apply to
    HEAD as to GET), its ``before_request`` hook and its options. It is left out of the
    OpenAPI document, whose GET operation already describes the answer."""
    twin = copy(handler)
    twin.http_methods = {HttpMethod.HEAD}
    twin.include_in_schema = False
    twin.middleware = [*(handler.middleware or ()), _headers_only]
    return twin


def _needs_twin(handler: HTTPRouteHandler, heads: Iterable[HTTPRouteHandler]) -> bool:
    return HttpMethod.GET in handler.http_methods and not any(
        HttpMethod.HEAD in h.http_methods for h in heads
    )


def _description(route: HTTPRoute) -> str:
    """What ``GET /`` says of a route nobody described: its handler's summary, the first
    line of its docstring, or its name; methods other than GET are named."""
    # Not the HEAD twins, nor the OPTIONS handler Litestar adds to every route.
    implicit = ({HttpMethod.HEAD}, {HttpMethod.OPTIONS})
    handlers = [h for h in route.route_handlers if h.http_methods not in implicit]
    if not handlers:
        handlers = list(route.route_handlers)
    # The GET handler's words, else POST's, PUT's…: the order of the route's handlers
    # is Litestar's business and not the order they were registered in.
    handler = min(handlers, key=lambda h: min(_METHOD_ORDER.get(m, 9) for m in h.http_methods))
    doc = (inspect.getdoc(handler.fn) or "").strip().split("\n", 1)[0]
    text = handler.summary or doc or f"Custom route ({handler.handler_name})"
    methods = sorted({m for h in handlers for m in h.http_methods} - {"HEAD", "OPTIONS"})
    return text if methods == ["GET"] else f"{text} ({', '.join(methods)})"


class MetricsApp(Litestar):
    """The Litestar app of a metrics endpoint, with three things Litestar leaves out.

    - ``get(path)``, ``post``, ``put``, ``patch``, ``delete``: decorators that make a
      Litestar route handler of a function (Litestar's own ``litestar.get`` & co., with
      their keyword arguments) and register it at once. This is the
      ``@self.app.get("/custom-metrics")`` an endpoint subclass writes in its routes
      hook; a function without a return annotation is served as JSON.
    - Every GET route answers HEAD the same way without a body (RFC 9110 §9.3.2: load
      balancers probe with HEAD), routes added later included, through a HEAD twin of
      its handler (an explicit HEAD handler registered first is left alone).
    - ``endpoints``, what ``GET /`` lists: ``listed`` at first, then every route added
      (at construction or later) that is in the OpenAPI document and not yet listed.
    """

    def __init__(self, *args: Any, listed: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        #: The entries of ``endpoints`` this app wrote itself, as it wrote them: redone
        #: when their route gains a method, unless someone has changed them since.
        self._described: dict[str, str] = {}
        super().__init__(*args, **kwargs)
        self.state["endpoints"] = dict(listed or {})
        self._list({route.path for route in self.routes})

    @property
    def endpoints(self) -> dict[str, str]:
        """Path -> description, as ``GET /`` lists them (change it to change the list)."""
        return cast("dict[str, str]", self.state["endpoints"])

    # -- registering routes ---------------------------------------------------------------

    def register(self, value: ControllerRouterHandler) -> None:  # type: ignore[override]
        """Litestar's ``register``, plus a HEAD twin of every GET handler and the new
        routes' entries in ``endpoints``."""
        before = {route.path for route in self.routes}
        if isinstance(value, type) and issubclass(value, Controller):
            value = value(owner=self).as_router()  # as Litestar registers a controller
        if isinstance(value, Router):
            # Litestar registers a deep copy of a router: twins go into a copy too, beside
            # the handlers they copy, so that they keep the router's layers.
            value = deepcopy(value)
            for route in value.routes:
                if isinstance(route, HTTPRoute):
                    handlers = route.route_handlers
                    handlers += [_head_twin(h) for h in handlers if _needs_twin(h, handlers)]
            super().register(value)
        elif isinstance(value, HTTPRouteHandler):
            super().register(value)
            present = self.route_handler_method_map
            existing = [
                h
                for path in value.paths
                for h in present.get(path, {}).values()
                if isinstance(h, HTTPRouteHandler)
            ]
            if _needs_twin(value, existing):
                super().register(_head_twin(value))
        else:
            super().register(value)
        if "endpoints" in self.state:  # not while Litestar's __init__ registers the first ones
            self._list({route.path for route in self.routes} - before | set(self._described))

    def _list(self, paths: set[str]) -> None:
        """Describe the routes at ``paths`` in ``endpoints``: those not listed yet (but
        ``/`` itself, and routes left out of the OpenAPI document) and those it described."""
        listed = self.endpoints
        for route in self.routes:
            path = route.path
            if path not in paths or path == "/" or not isinstance(route, HTTPRoute):
                continue
            if path in listed and listed[path] != self._described.get(path):
                continue  # someone else's words
            if any(h.resolve_include_in_schema() for h in route.route_handlers):
                listed[path] = self._described[path] = _description(route)

    def _decorator(
        self, kind: type[HTTPRouteHandler], path: str | Sequence[str] | None, options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        def register(fn: HandlerFn) -> HTTPRouteHandler:
            handler = kind(path, **options)(_served_as_json(fn))
            self.register(handler)
            return handler

        return register

    def get(
        self, path: str | Sequence[str] | None = None, **options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        """``@app.get("/path")``: register the function as a GET (and HEAD) route."""
        return self._decorator(litestar.get, path, options)

    def post(
        self, path: str | Sequence[str] | None = None, **options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        """``@app.post("/path")``: register the function as a POST route."""
        return self._decorator(litestar.post, path, options)

    def put(
        self, path: str | Sequence[str] | None = None, **options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        """``@app.put("/path")``: register the function as a PUT route."""
        return self._decorator(litestar.put, path, options)

    def patch(
        self, path: str | Sequence[str] | None = None, **options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        """``@app.patch("/path")``: register the function as a PATCH route."""
        return self._decorator(litestar.patch, path, options)

    def delete(
        self, path: str | Sequence[str] | None = None, **options: Any
    ) -> Callable[[HandlerFn], HTTPRouteHandler]:
        """``@app.delete("/path")``: register the function as a DELETE route."""
        return self._decorator(litestar.delete, path, options)


def create_app(
    service: TickCache,
    *,
    title: str = "System Metrics API",
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    cors: CORSConfig | None = None,
    middleware: Sequence[Middleware] = (),
    max_body_bytes: int = 1_048_576,
) -> MetricsApp:
    """The metrics API over ``service``; ``extra_route_handlers`` add custom routes
    (they get the ``service`` dependency and the same error handling, and ``GET /``
    lists them). A request body over ``max_body_bytes`` is refused with 413 before it is
    read whole. Every response carries the ``headers.SECURITY_HEADERS``. The app's
    lifespan is the service's serving lifetime (``TickCache.serving``): while served, a
    stale snapshot is answered at once and the next one built in the background. The
    health routes take their answers from a ``ProbeAnswers`` (dependency
    ``probe_answers``)."""
    answers = ProbeAnswers(service)

    def provide_service() -> TickCache:
        return service

    def provide_answers() -> ProbeAnswers:
        return answers

    def serving(_app: Litestar) -> AbstractAsyncContextManager[None]:
        return service.serving()

    return MetricsApp(
        listed=ENDPOINTS,
        route_handlers=[*ROUTES, *extra_route_handlers],
        dependencies={
            "service": Provide(provide_service, use_cache=True, sync_to_thread=False),
            "probe_answers": Provide(provide_answers, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={
            HarnessUnavailableError: _unavailable,
            ValidationException: _invalid,
            HTTPException: _http_error,
            Exception: internal_error,
        },
        state=State({"title": title}),
        lifespan=[serving],
        cors_config=cors,
        middleware=list(middleware),
        before_send=[security_headers],
        request_max_body_size=max_body_bytes,
        request_class=BoundedRequest,
        openapi_config=OpenAPIConfig(
            title=title,
            version=__version__,
            # JSON only, at /schema too (the first plugin serves the root): no page
            # whose scripts come from a CDN.
            render_plugins=[JsonRenderPlugin()],
            openapi_router=Router(
                SCHEMA_PATH,
                route_handlers=[],
                include_in_schema=False,
                after_request=_schema_not_found,
            ),
        ),
        logging_config=None,  # configuring logging is the application's business, not ours
        debug=False,
    )

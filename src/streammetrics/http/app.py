"""The Litestar application of the metrics API: routes, error shapes, OpenAPI.

Every error leaves as JSON ``{"error", "detail", "status_code"}``: monitoring systems
parse bodies, and an HTML debug page or a traceback would be both useless to them and a
leak. Litestar's debug mode stays off for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig

from .. import __version__
from ..errors import HarnessUnavailableError
from .responses import ErrorResponse
from .routes import ROUTES
from .security import security_headers
from .service import MetricsService

if TYPE_CHECKING:
    from litestar.config.cors import CORSConfig
    from litestar.types import ControllerRouterHandler, Middleware

__all__ = ("create_app",)

_log = logging.getLogger("streammetrics.http")


def _error(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> Response[ErrorResponse]:
    return Response(ErrorResponse(error, detail, status), status_code=status, headers=headers)


def _unavailable(_request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    return _error(503, "harness unavailable", str(exc))


def _invalid(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    if not isinstance(exc, ValidationException):  # pragma: no cover - registered for it only
        return _internal(request, exc)
    if not isinstance(exc.extra, list):  # our query guard: the detail already says it all
        return _error(400, "invalid query parameter", exc.detail)
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
    return _error(400, error, "; ".join(parts) or exc.detail)


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    if not isinstance(exc, HTTPException) or exc.status_code >= 500:
        return _internal(request, exc)
    status = exc.status_code
    return _error(status, HTTPStatus(status).phrase.lower(), exc.detail, exc.headers)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorResponse]:
    # The type name only: messages of unexpected errors may carry data nobody should see.
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error", type(exc).__name__)


def create_app(
    service: MetricsService,
    *,
    title: str = "System Metrics API",
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    cors: CORSConfig | None = None,
    middleware: Sequence[Middleware] = (),
    max_body_bytes: int = 1_048_576,
) -> Litestar:
    """The metrics API over ``service``; ``extra_route_handlers`` add custom routes
    (they get the ``service`` dependency and the same error handling). A request body
    over ``max_body_bytes`` is refused with 413 before it is read whole. Every response
    carries the ``security.SECURITY_HEADERS``."""

    def provide_service() -> MetricsService:
        return service

    return Litestar(
        route_handlers=[*ROUTES, *extra_route_handlers],
        dependencies={"service": Provide(provide_service, use_cache=True, sync_to_thread=False)},
        exception_handlers={
            HarnessUnavailableError: _unavailable,
            ValidationException: _invalid,
            HTTPException: _http_error,
            Exception: _internal,
        },
        state=State({"title": title}),
        cors_config=cors,
        middleware=list(middleware),
        before_send=[security_headers],
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title=title, version=__version__),
        logging_config=None,  # configuring logging is the application's business, not ours
        debug=False,
    )

"""``POST /events``: external producers report over HTTP.

One event, a list, or ``{"events": [...]}``; JSON (``Content-Type: application/json``
or any ``application/*+json``), or MessagePack (``application/msgpack``,
``application/x-msgpack`` or ``application/vnd.msgpack``). The answer says how many
events were folded, how many were rejected (each with its index, path and reason), and
how many were duplicates of ids already folded (a client's retry is harmless when its
events carry ids).

Who may post is ingest's own business (``IngestGuard``): its own bearer tokens
(``ingest.auth``), never the read tokens of ``auth``, which only ever grant reading.

Status codes, so that a client knows whether to retry:

- ``200`` the body was read; some events may still be rejected (see ``rejections``);
- ``400`` the body is unreadable, or not one of its events is valid: fix, do not retry;
- ``401`` ``ingest.auth`` is on and the request has no ingest token, or a wrong one
  (``WWW-Authenticate: Bearer``); checked before the body is read;
- ``403`` ingest is closed: the endpoint has a read ``auth`` but no ``ingest.auth``;
- ``413`` the body is over ``max_body_bytes``: send smaller batches;
- ``415`` no Content-Type, or one that is neither JSON nor MessagePack: a body is
  never guessed at (``curl -d`` sends a form type, ``text/plain`` is not JSON either);
- ``503`` no harness feeds the endpoint: retry later.

The body is read raw and decoded by msgspec, not through a typed handler parameter: a
batch with one bad event must still fold the others and name the bad one, which a
whole-body validation cannot do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from litestar import Request, Response, post
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import ResponseSpec

from ..errors import EventError, HarnessUnavailableError
from ..intake.config import IngestConfig
from ..intake.intake import Intake, IntakeResult
from ..model.events import Format, Rejection
from .auth import REFUSAL_REASONS, AuthCounts, BearerAuthMiddleware, BearerTokens
from .bodies import read_body
from .responses import ErrorResponse, error_response
from .routes import Service

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = (
    "JSON_TYPES",
    "MSGPACK_TYPES",
    "IngestAccess",
    "IngestErrorResponse",
    "IngestGuard",
    "body_format",
    "ingest_route",
)

_log = logging.getLogger("streammetrics.http")

#: Who may post: holders of an ingest token, anyone, or nobody.
IngestAccess = Literal["token", "open", "closed"]

#: Content types read as MessagePack; ``application/msgpack`` is the registered one.
MSGPACK_TYPES: Final = frozenset(
    ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
)
#: Content types read as JSON, beside any ``application/...+json``.
JSON_TYPES: Final = frozenset(("application/json",))
#: What a 415 says is accepted.
_ACCEPTED: Final = "application/json (or application/*+json) or application/msgpack"
#: How many rejections a 400's ``detail`` spells out; all are in ``rejections``.
_DETAIL_REJECTIONS: Final = 3


class IngestErrorResponse(ErrorResponse, frozen=True):
    """A 400 from ``POST /events``: the error shape, plus where exactly."""

    path: str | None = None
    """Where in the body the (first) problem is: ``$``, ``events[17].latency``…"""
    rejections: list[Rejection] = msgspec.field(default_factory=list)
    """Every rejected event, when the body was read but none of its events was valid."""


def body_format(content_type: str) -> Format | None:
    """``json`` or ``msgpack`` for a Content-Type header value; None when neither (an
    empty value, a missing header, included)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in MSGPACK_TYPES:
        return "msgpack"
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    return None


def _bad(error: str, detail: str, path: str | None, rejections: list[Rejection]) -> Response[Any]:
    return error_response(IngestErrorResponse(error, detail, 400, path=path, rejections=rejections))


class IngestGuard:
    """Who may post events, decided once from the config:

    - ``token``: ``ingest.auth`` is set; a request needs one of its tokens (401 else);
    - ``open``: ``ingest.allow_unauthenticated``, or no read ``auth`` either (a
      loopback endpoint: the config refuses an open one bound further);
    - ``closed``: a read ``auth`` and no ``ingest.auth``. A read token must not write,
      and no other credential is configured, so every request is refused (403) with
      the fix in its detail, rather than ingest quietly taking the read tokens.

    Reads the ingest tokens from the environment now, so that a missing variable stops
    the start with a ``ConfigError``. Refusals are counted in ``counts`` (the RFC 6750
    reasons, and ``closed``).
    """

    def __init__(self, config: IngestConfig, *, component: str, read_auth: bool) -> None:
        self.path = config.path
        self.counts = AuthCounts((*REFUSAL_REASONS, "closed"))
        self.tokens: BearerTokens | None = None
        self.access: IngestAccess
        if config.auth is not None:
            self.access = "token"
            self.tokens = BearerTokens.from_env(
                config.auth.bearer_tokens_env, component=component, section="ingest.auth"
            )
        elif config.allow_unauthenticated or not read_auth:
            self.access = "open"
        else:
            self.access = "closed"
            _log.warning(
                "metrics endpoint %r: POST %s is closed, as auth is on and ingest.auth is "
                "not set (read tokens never write); set ingest.auth, or ingest.enabled: false",
                component,
                config.path,
            )

    def responses(self) -> dict[int, ResponseSpec]:
        """The ingest route's answers of the guard's own, for the OpenAPI document."""
        if self.access == "token":
            text = "ingest.auth is on: no ingest token, or a wrong one"
            return {401: ResponseSpec(ErrorResponse, description=text, generate_examples=False)}
        if self.access == "closed":
            text = "Ingest is closed: a read auth and no ingest.auth"
            return {403: ResponseSpec(ErrorResponse, description=text, generate_examples=False)}
        return {}

    def middleware(self) -> list[DefineMiddleware]:
        """The ingest route's own middleware: it runs before the body is read."""
        if self.access == "token":
            assert self.tokens is not None
            return [
                DefineMiddleware(
                    BearerAuthMiddleware,
                    tokens=self.tokens,
                    open_paths=frozenset(),
                    counts=self.counts,
                )
            ]
        if self.access == "closed":
            return [DefineMiddleware(_ClosedMiddleware, counts=self.counts, path=self.path)]
        return []


class _ClosedMiddleware:
    """403 for every request: ingest has no credential of its own configured."""

    def __init__(self, app: ASGIApp, *, counts: AuthCounts, path: str) -> None:
        self.app = app
        self.counts = counts
        self.detail = (
            f"POST {path} is closed: this endpoint requires a token to read, and a read "
            "token does not grant writing; its operator can give ingest its own tokens "
            "(ingest.auth: {bearer_tokens_env: ...}) or open it (ingest.allow_unauthenticated)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            self.counts.refused["closed"] += 1
            raise PermissionDeniedException(detail=self.detail)
        await self.app(scope, receive, send)  # pragma: no cover - an HTTP route only


def ingest_route(
    intake: Intake, config: IngestConfig, guard: IngestGuard | None = None
) -> HTTPRouteHandler:
    """The ``POST /events`` handler at ``config.path``, folding through ``intake`` and
    admitting what ``guard`` admits (everyone without one); add it to the app with
    ``app.register(ingest_route(intake, config, guard))``."""

    @post(
        config.path,
        status_code=200,
        summary="Report events: one, a list or {events: [...]}, as JSON or MessagePack",
        request_max_body_size=config.max_body_bytes,
        middleware=guard.middleware() if guard is not None else None,
        responses={
            400: ResponseSpec(
                IngestErrorResponse,
                description="Unreadable body, or no valid event in it",
                generate_examples=False,
            ),
            **(guard.responses() if guard is not None else {}),
            413: ResponseSpec(
                ErrorResponse, description="Body over max_body_bytes", generate_examples=False
            ),
            415: ResponseSpec(
                ErrorResponse,
                description="No Content-Type, or neither JSON nor MessagePack",
                generate_examples=False,
            ),
            503: ResponseSpec(
                ErrorResponse,
                description="No harness feeds the endpoint",
                generate_examples=False,
            ),
        },
    )
    async def ingest_events(request: Request[Any, Any, Any], service: Service) -> Response[Any]:
        content_type = request.headers.get("content-type")
        fmt = body_format(content_type or "")
        if fmt is None:
            detail = (
                f"a Content-Type header is required: {_ACCEPTED}"
                if not content_type
                else f"content type {content_type[:100]!r} is not {_ACCEPTED}"
            )
            return error_response(ErrorResponse("unsupported media type", detail, 415))
        if not service.available:
            raise HarnessUnavailableError(
                f"metrics endpoint {service.name!r} has no harness to fold events into"
            )
        data = await read_body(request)  # over the limit: 413 from Litestar
        try:
            result: IntakeResult = intake.fold_body(
                data, fmt, lifecycle=config.lifecycle, setting="ingest.lifecycle"
            )
        except EventError as exc:
            return _bad("malformed body", str(exc), exc.path, [])
        if result.malformed == result.rejected > 0 and not (result.accepted or result.duplicates):
            first = result.rejections[:_DETAIL_REJECTIONS]
            shown = "; ".join(f"{r.reason} - at `{r.path}`" for r in first)
            more = len(result.rejections) - _DETAIL_REJECTIONS
            if more > 0:
                shown += f"; and {more} more"
            return _bad("no valid event", shown, result.rejections[0].path, result.rejections)
        return Response(result, status_code=200)

    return ingest_events

"""``POST /v1/traces``: the OTLP/HTTP trace receiver.

What an OpenTelemetry exporter sends: an ``ExportTraceServiceRequest`` as protobuf
(``application/x-protobuf``) or OTLP/JSON (``application/json``), plain or
``Content-Encoding: gzip``. The answer is in the request's own encoding, and its status
tells the exporter whether to send the batch again:

- ``200`` an ``ExportTraceServiceResponse``; when some spans could not be folded, its
  ``partial_success`` says how many and why (the exporter does not retry those);
- ``400`` the body does not decode (nor does its gzip): a ``google.rpc.Status`` says
  why; not retried;
- ``413`` the body is over ``max_body_bytes``, as sent or once unpacked;
- ``415`` another content type, or another content encoding;
- ``429`` from the endpoint's rate limit, ``503`` while no harness feeds the endpoint:
  both with ``Retry-After``, which exporters honour before they retry.

The route writes, as ``POST /events`` does, and has its guard: the ingest tokens
(``ingest.auth``; 401 without one), never the read tokens of ``auth``; closed (403) when
there is a read ``auth`` and no ``ingest.auth``; open otherwise (a loopback endpoint, or
``ingest.allow_unauthenticated``). The endpoint's rate limit applies as to every route.
"""

from __future__ import annotations

from typing import Any, Final

import anyio
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler

from ..errors import EventError
from ..intake.otlp import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Encoding,
    OtlpIntake,
    decode_request,
    encode_response,
    encode_status,
)
from ..intake.otlp_config import OtlpConfig
from .bodies import BodyTooLarge, gunzip, read_body
from .ingest import IngestGuard
from .routes import Service

__all__ = ("MEDIA_TYPES", "otlp_route")

#: The content type of each encoding, as the request has it and as the answer says it.
MEDIA_TYPES: Final[dict[Encoding, str]] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}
_ENCODINGS: Final[dict[str, Encoding]] = {v: k for k, v in MEDIA_TYPES.items()}
#: Content-Encoding values read as they are.
_IDENTITY: Final = frozenset(("", "identity"))


def _status(
    status: int, code: int, message: str, encoding: Encoding, **headers: str
) -> Response[bytes]:
    return Response(
        encode_status(code, message, encoding),
        status_code=status,
        media_type=MEDIA_TYPES[encoding],
        headers=headers or None,
    )


def otlp_route(
    intake: OtlpIntake, config: OtlpConfig, guard: IngestGuard | None = None
) -> HTTPRouteHandler:
    """The ``POST /v1/traces`` handler at ``config.path``, folding through ``intake`` and
    admitting what ``guard`` admits (``POST /events``' guard: the same ingest tokens, or
    closed, or open; everyone without one)."""
    limit = config.max_body_bytes

    @post(
        config.path,
        status_code=200,
        summary="Export spans over OTLP/HTTP (protobuf or JSON, optionally gzip)",
        request_max_body_size=limit,
        middleware=guard.middleware() if guard is not None else None,
    )
    async def export_traces(request: Request[Any, Any, Any], service: Service) -> Response[bytes]:
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        encoding = _ENCODINGS.get(media)
        if encoding is None:
            what = f"content type {content_type[:100]!r}" if content_type else "no content type"
            return _status(
                415,
                INVALID_ARGUMENT,
                f"{what}: OTLP/HTTP is application/x-protobuf or application/json",
                "json",
            )
        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in _IDENTITY and coding != "gzip":
            return _status(
                415,
                INVALID_ARGUMENT,
                f"content encoding {coding[:100]!r} is not supported: send gzip or none",
                encoding,
            )
        if not service.available:
            return _status(
                503,
                UNAVAILABLE,
                f"metrics endpoint {service.name!r} has no harness to fold spans into",
                encoding,
                **{"Retry-After": str(config.retry_after_s)},
            )
        try:
            data = await read_body(request)
        except HTTPException as exc:  # over the limit, read or announced
            if exc.status_code != 413:
                raise
            return _status(413, RESOURCE_EXHAUSTED, f"the body is over {limit} bytes", encoding)
        if coding == "gzip":
            try:
                data = gunzip(data, limit)
            except BodyTooLarge:
                return _status(
                    413,
                    RESOURCE_EXHAUSTED,
                    f"the body unpacks to more than {limit} bytes",
                    encoding,
                )
            except ValueError as exc:
                intake.refuse()
                return _status(400, INVALID_ARGUMENT, str(exc), encoding)
        try:
            if encoding == "json":  # protobuf's JSON mapping is Python: off the event loop
                decoded = await anyio.to_thread.run_sync(decode_request, data, encoding)
            else:  # protobuf's own parser, in C: faster than the hop to a thread
                decoded = decode_request(data, encoding)
        except EventError as exc:
            intake.refuse()  # counted here, on the loop, where the aggregates live
            return _status(400, INVALID_ARGUMENT, str(exc), encoding)
        result = intake.fold(decoded)  # on the loop, where the aggregates are folded
        return Response(
            encode_response(result, encoding), status_code=200, media_type=MEDIA_TYPES[encoding]
        )

    return export_traces

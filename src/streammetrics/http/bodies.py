"""Request bodies that Litestar decodes for a handler, held to ``nesting.MAX_DEPTH``;
compressed bodies held to a size limit once unpacked.

A custom route with a ``data`` parameter (or one that calls ``request.json()``) has its
body decoded by Litestar, untyped first and converted after, so however narrow the type
a deeply nested body would recurse until ``RecursionError``: a 500 and a traceback per
request. ``BoundedRequest`` measures the body first and refuses one that nests too
deeply with a 400 that says so, like any other malformed body.
"""

from __future__ import annotations

import zlib
from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from ..model.nesting import MAX_DEPTH, json_too_deep, msgpack_too_deep

__all__ = ("BodyTooLarge", "BoundedRequest", "gunzip", "read_body")


class BodyTooLarge(ValueError):
    """A compressed body that unpacks to more than the limit (a gzip bomb, or simply too
    much): answered 413, as a plain body over the limit is."""


class BoundedRequest(Request[Any, Any, Any]):
    """Litestar's ``Request``, whose ``json()`` and ``msgpack()`` (what ``data``
    parameters are decoded with) refuse bodies nested deeper than ``MAX_DEPTH``."""

    async def json(self) -> Any:
        if json_too_deep(await self.body()):
            raise ClientException(detail=f"the JSON body nests more than {MAX_DEPTH} levels deep")
        return await super().json()

    async def msgpack(self) -> Any:
        if msgpack_too_deep(await self.body()):
            raise ClientException(
                detail=f"the MessagePack body nests more than {MAX_DEPTH} levels deep"
            )
        return await super().msgpack()


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The request body, bounded as ``request.body()`` bounds it (413 over the route's
    ``request_max_body_size``, announced or read), without its copy of a body that came
    in one piece: a producer's batch (hundreds of kilobytes) usually does, and joining a
    chunk with the stream's closing ``b""`` would copy all of it once more. What the
    ingest routes (``POST /events``, ``/v1/traces``) read their batches with."""
    chunks = [chunk async for chunk in request.stream() if chunk]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def gunzip(data: bytes, limit: int) -> bytes:
    """The content of a gzip body, at most ``limit`` bytes of it.

    A request's size limit applies to what it carries once unpacked: a few kilobytes of
    gzip can unpack to gigabytes. Decompression stops one byte past ``limit`` and raises
    ``BodyTooLarge``, so no more than that is ever held. Several gzip members one after
    the other (what concatenating gzip files gives) read as one body. Raises
    ``ValueError`` for data that is not gzip or is cut short.
    """
    out: list[bytes] = []
    size = 0
    rest = data
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise ValueError(f"the body is not valid gzip: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body unpacks to more than {limit} bytes")
        out.append(chunk)
        if d.unconsumed_tail:  # exactly at the limit with more to come
            raise BodyTooLarge(f"the body unpacks to more than {limit} bytes")
        if not d.eof:
            raise ValueError("the gzip body is cut short")
        rest = d.unused_data
        if not rest:
            return b"".join(out)

"""Request bodies that Litestar decodes for a handler, held to ``nesting.MAX_DEPTH``.

A custom route with a ``data`` parameter (or one that calls ``request.json()``) has its
body decoded by Litestar, untyped first and converted after, so however narrow the type
a deeply nested body would recurse until ``RecursionError``: a 500 and a traceback per
request. ``BoundedRequest`` measures the body first and refuses one that nests too
deeply with a 400 that says so, like any other malformed body.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from ..model.nesting import MAX_DEPTH, json_too_deep, msgpack_too_deep

__all__ = ("BoundedRequest",)


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

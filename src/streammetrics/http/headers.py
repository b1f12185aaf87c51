"""The response headers every answer of the metrics API (and of an ``APIEndpoint``)
carries: OWASP's REST security guidance, at no cost. An API response is never sniffed or
framed, and not cached unless its route says otherwise (the dashboard page and its event
stream set their own ``cache-control``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from litestar.types import Message, Scope

__all__ = ("SECURITY_HEADERS", "security_headers")

#: Added to every response that does not set them itself (OWASP REST Security Cheat Sheet).
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
)

_RAW_SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = tuple(
    (name.encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS
)


async def security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the ``SECURITY_HEADERS`` a response does not set itself.

    Works on the raw header list: one pass to see what is there, then appends, where
    ``MutableScopeHeaders.get`` would scan the list once per header."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        present = {bytes(name).lower() for name, _ in headers}
        headers += [h for h in _RAW_SECURITY_HEADERS if h[0] not in present]
        message["headers"] = headers

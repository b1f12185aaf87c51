"""One write for a response's head and its first body piece.

uvicorn's protocol writes a response's head when the app starts it and each body piece
when the app sends it: two ``transport.write`` calls for an answer of a few hundred
bytes, so two system calls and, with ``TCP_NODELAY`` (which uvicorn sets), two TCP
segments, each waking the client. For a health probe, where the whole answer is a
hundred bytes, that second system call is a sizeable share of what the request costs the
event loop (on loopback the kernel does the receiver's TCP work inside the sender's
call), and at thousands of probes a second it is time every other request waits.

``HeadHeld`` is the transport a response cycle writes through: it keeps the cycle's
first write (the head, or a ``100 Continue`` before it) until the next one and sends the
two as one when the second is small, or each as it is when it is not (a large body is
not copied to be joined). What it keeps goes out on the loop's next turn at the latest,
so a streamed response whose first piece comes later, or a ``100 Continue`` the client
waits for, is delayed by one turn of the loop, never stalled; and it goes out before a
close made through it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ("JOIN_MAX_BYTES", "HeadHeld")

JOIN_MAX_BYTES: Final = 16 * 1024
"""A second write up to this size is joined to the held first one (one copy of both);
a larger one goes out on its own after it."""


class HeadHeld:
    """A response cycle's view of its connection's transport (see the module)."""

    __slots__ = ("_held", "_loop", "_transport", "_writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._writes = 0  # writes through this view; the first is held

    def write(self, data: bytes) -> None:
        self._writes += 1
        if self._writes == 1:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is None:
            self._transport.write(data)
            return
        self._held = None
        if len(data) <= JOIN_MAX_BYTES:
            self._transport.write(held + data)
        else:
            self._transport.write(held)
            self._transport.write(data)

    def flush(self) -> None:
        """Send what is held, if anything (and if the connection is still open)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Everything else is the transport's own (extra info, write_eof, buffer sizes).
        return getattr(self._transport, name)

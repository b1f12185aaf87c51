"""Accepting connections in batches: at each wake-up of the listening socket, every
connection waiting in the kernel's accept queue is taken (up to ``_BATCH``).

Why not the event loop's own server: uvloop's (libuv's) takes one connection per turn of
the loop. Under a flood each turn serves hundreds of ready sockets and takes tens of
milliseconds, so a new connection (a load balancer's health probe) waits in the kernel's
queue for as many turns as there are connections ahead of it: seconds, measured (1,000
hammering connections left 600 unaccepted two seconds in, and the queue grew by the
probes' own rate). asyncio's own loop accepts in batches; this does the same on either.

Each accepted socket becomes a connection through the loop's
``connect_accepted_socket``, in a task of the listener's own task group, so that a slow
one never holds up the next batch and ``close()`` ends them all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Final

import anyio
from anyio.abc import TaskGroup

__all__ = ("BatchListener",)

_log = logging.getLogger("streammetrics.http")

#: Connections taken from the kernel's queue at most per wake-up, so that a queue that
#: refills as fast as it is drained cannot keep the loop from everything else.
_BATCH: Final = 512
#: Seconds accepting pauses when the process or the system is out of descriptors or
#: memory (the connections stay queued in the kernel meanwhile), as asyncio's loop does.
_STARVED_RETRY_S: Final = 1.0
_STARVED: Final = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class BatchListener:
    """A listening socket, accepted from in batches; each connection is served by a
    protocol from ``protocol_factory``. ``run()`` accepts until ``close()``, then closes
    the socket, so that a connection attempt from then on is refused at once rather than
    left queued; uvicorn treats it as its server (``close``, ``wait_closed``)."""

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]):
        self.sock = sock
        sock.setblocking(False)  # accept() until the queue is empty, never blocking the loop
        self.protocol_factory = protocol_factory
        self.accepted = 0
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._running = False

    async def run(self) -> None:
        """Accept until ``close()`` or cancellation; the connections being set up then
        are closed, those set up are the protocol's from then on."""
        loop = asyncio.get_running_loop()
        self._running = True
        try:
            with self._scope:  # already cancelled if close() came first
                async with anyio.create_task_group() as tg:
                    while True:
                        await anyio.wait_readable(self.sock)
                        if not self._accept_batch(loop, tg):
                            await anyio.sleep(_STARVED_RETRY_S)
        finally:
            # Only now: closed while the loop still watched it, its descriptor's number
            # could be reused by a new connection before the watch was removed.
            self.sock.close()
            self._done.set()

    def _accept_batch(self, loop: asyncio.AbstractEventLoop, tg: TaskGroup) -> bool:
        """Take what is queued, at most ``_BATCH``; False when out of resources."""
        for _ in range(_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except ConnectionAbortedError:  # reset while queued: nothing to serve
                continue
            except OSError as exc:
                if exc.errno not in _STARVED:
                    raise
                _log.warning(
                    "accepting connections paused for %gs: %s (ulimit -n, or memory)",
                    _STARVED_RETRY_S,
                    exc.strerror or exc,
                )
                return False
            conn.setblocking(False)
            self.accepted += 1
            tg.start_soon(self._connect, loop, conn)
        return True

    async def _connect(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self.protocol_factory, conn)
        except OSError as exc:  # the peer went away while it was set up
            _log.debug("an accepted connection failed before it was served: %s", exc)
            conn.close()
        except Exception:  # a fault in the protocol: this connection's, not the server's
            _log.exception("an accepted connection could not be set up")
            conn.close()

    # -- uvicorn's view: its servers are closed, then waited for, at shutdown -----------

    def close(self) -> None:
        """Stop accepting (idempotent); ``run()`` closes the socket as it ends."""
        self._scope.cancel()
        if not self._running:
            self.sock.close()

    async def wait_closed(self) -> None:
        """Until ``run()`` has ended (at once if it never ran)."""
        if self._running:
            await self._done.wait()

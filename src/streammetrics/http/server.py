"""Running an ASGI app with uvicorn inside the caller's anyio task group.

Why bind the socket here rather than let uvicorn do it: uvicorn reports a busy port by
logging and calling ``sys.exit``, which would tear down the whole harness; binding
first turns it into a ``PortInUseError`` naming the component, host and port, raised
before anything has started. Why no signal handlers: the harness owns the process's
signals, and uvicorn's would swallow its Ctrl+C. Why not the loop's own server to accept:
it takes one connection per loop turn under uvloop, so under a flood a newcomer waits
seconds in the kernel's queue; ``BatchListener`` takes all that are queued (``accept``).

Uvicorn drives asyncio directly, so ``serve`` needs anyio's asyncio backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from ..errors import PortInUseError, StreamMetricsError
from .accept import BatchListener
from .limits import ConnectionGuard

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

__all__ = ("bind_socket", "serve")

#: Seconds beyond ``shutdown_timeout_s`` for uvicorn's own shutdown steps (its 0.1 s
#: polls, the lifespan shutdown) before the server is cancelled outright.
_SHUTDOWN_MARGIN_S: Final = 1.0
_POLL_S: Final = 0.01


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone and accepts
    through a ``BatchListener`` on ``sock`` (which ``serve`` runs and closes)."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self.sock = sock
        self.listener: BatchListener | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (the lifespan's, then the protocol factory) with its
        listener replaced by a ``BatchListener``; uvicorn closes and awaits it at shutdown
        as it would its own."""
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self.listener = BatchListener(self.sock, create_protocol)
        self.servers = [cast(Any, self.listener)]
        self.started = True


def bind_socket(host: str, port: int, component: str, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port (port 0: one the OS picks).

    It listens at once: on Linux two ``SO_REUSEADDR`` sockets may both *bind* a port as
    long as neither listens, so only listening makes a second binder fail here.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StreamMetricsError(
            f"component {component!r} cannot listen on {host}:{port}: unknown host ({exc})"
        ) from exc
    family, socktype, proto, _name, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(component, host, port, exc.strerror or str(exc)) from exc
        exc.add_note(f"component {component!r} binding {host}:{port}")
        raise
    return sock


async def serve(
    app: Callable[..., Any],
    *,
    host: str,
    port: int,
    component: str,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    shutdown_timeout_s: float = 5.0,
    connections: ConnectionGuard | None = None,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Serve ``app`` on host:port until cancelled; ``task_status.started`` gets the port.

    ``X-Forwarded-For`` is believed only from a peer in ``trusted_proxies`` (addresses
    or networks): from anyone else it would let a client pick its own address, and so
    its own rate-limit bucket. None listed, the peer address is the client, always.

    Use ``port = await tg.start(partial(serve, app, host=..., port=0, component=...))``.
    A busy port raises ``PortInUseError`` from ``tg.start``. On cancellation the server
    stops accepting, lets requests in flight finish for up to ``shutdown_timeout_s``,
    runs the app's lifespan shutdown, and is cancelled if it overruns that deadline.
    ``connections`` bounds the connections (``ConnectionLimits``' defaults without it).
    """
    guard = connections if connections is not None else ConnectionGuard()
    guard.fit_to_fd_limit(component)
    guard.trust_proxies(trusted_proxies)
    sock = bind_socket(host, port, component)
    try:
        bound_port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            loop="none",
            http=guard.protocol_class(),
            ws="none",
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            # uvicorn's default trusts 127.0.0.1 (a same-host proxy): only if listed here.
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
            # Typed int, but only ever handed to asyncio.wait_for, which takes seconds as float.
            timeout_graceful_shutdown=max(shutdown_timeout_s, 0.0),  # type: ignore[arg-type]
        )
        server = _Server(config, sock)
        run_scope = anyio.CancelScope(shield=True)
        finished = anyio.Event()
        failure: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run, server, sock, run_scope, finished, failure)
            try:
                # uvicorn only says it started through a flag: poll it.
                while not server.started and not finished.is_set():  # noqa: ASYNC110
                    await anyio.sleep(_POLL_S)
                if server.started and server.listener is not None:
                    tg.start_soon(server.listener.run)
                    task_status.started(bound_port)
                await finished.wait()
            finally:
                server.should_exit = True
                if server.listener is not None:
                    server.listener.close()  # uvicorn closes it too, unless it failed first
                with anyio.move_on_after(shutdown_timeout_s + _SHUTDOWN_MARGIN_S, shield=True):
                    await finished.wait()
                run_scope.cancel()
        if failure:
            cause = failure[0]
            what = (
                "could not start: the app's lifespan startup failed (see the uvicorn log)"
                if isinstance(cause, SystemExit)
                else f"failed: {cause!r}"
            )
            raise StreamMetricsError(
                f"component {component!r}: the metrics server on {host}:{bound_port} {what}"
            ) from cause
        if not server.started:
            raise StreamMetricsError(
                f"component {component!r}: the metrics server on {host}:{bound_port} "
                "stopped before it started (see the uvicorn log)"
            )
    finally:
        sock.close()


async def _run(
    server: uvicorn.Server,
    sock: socket.socket,
    scope: anyio.CancelScope,
    finished: anyio.Event,
    failure: list[BaseException],
) -> None:
    """Run uvicorn shielded: a cancelled caller asks it to stop (``should_exit``) and
    waits; only past the deadline is ``scope`` cancelled."""
    try:
        with scope:
            await server.serve()
    except (SystemExit, Exception) as exc:  # SystemExit: uvicorn's answer to a failed startup
        failure.append(exc)
    finally:
        finished.set()

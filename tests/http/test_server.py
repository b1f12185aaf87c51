"""An ASGI app run by uvicorn inside the caller's task group: a busy port is a typed error,
cancellation stops the server and frees its port, requests in flight finish within the
shutdown deadline, and a failed startup raises instead of exiting the process."""

from __future__ import annotations

import signal
import socket
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
from litestar import get

from streammetrics import (
    PortInUseError,
    StreamMetricsError,
)
from streammetrics.http.app import create_app
from streammetrics.http.server import serve
from streammetrics.views.tick_cache import TickCache
from tests.support.http_app import (
    running,
)

pytestmark = pytest.mark.anyio


async def test_second_server_on_the_same_port_raises_port_in_use(
    service: TickCache,
) -> None:
    app = create_app(service)
    async with running(app) as client:
        port = client.base_url.port
        assert port is not None
        async with anyio.create_task_group() as tg:
            with pytest.raises(PortInUseError) as info:
                await tg.start(
                    partial(serve, app, host="127.0.0.1", port=port, component="staging_metrics")
                )
        assert (await client.get("/health")).status_code == 200  # the first one is unharmed
    err = info.value
    assert (err.component, err.host, err.port) == ("staging_metrics", "127.0.0.1", port)
    assert "staging_metrics" in str(err) and f"127.0.0.1:{port}" in str(err)


async def test_cancellation_stops_the_server_and_frees_the_port(service: TickCache) -> None:
    before = signal.getsignal(signal.SIGINT)
    with anyio.fail_after(5):
        async with running(create_app(service)) as client:
            port = client.base_url.port
            assert port is not None
            assert signal.getsignal(signal.SIGINT) is before  # uvicorn left signals alone
            assert (await client.get("/health")).status_code == 200
    with socket.create_server(("127.0.0.1", port)):
        pass  # bindable again: the listener is closed


async def _shutdown_with_request_in_flight(
    service: TickCache, handler_s: float, shutdown_timeout_s: float
) -> tuple[list[int], float]:
    """Cancel a server while a request takes ``handler_s``; (statuses seen, seconds to stop)."""
    entered = anyio.Event()

    @get("/slow")
    async def slow() -> dict[str, bool]:
        entered.set()
        await anyio.sleep(handler_s)
        return {"done": True}

    app = create_app(service, extra_route_handlers=[slow])
    statuses: list[int] = []
    server_scope = anyio.CancelScope()
    stopped_in = -1.0

    async def run_server(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        nonlocal stopped_in
        with server_scope:
            await serve(
                app,
                host="127.0.0.1",
                port=0,
                component="system_metrics",
                task_status=task_status,
                shutdown_timeout_s=shutdown_timeout_s,
            )
        stopped_in = anyio.current_time() - t0

    async def request(client: httpx.AsyncClient) -> None:
        try:
            statuses.append((await client.get("/slow")).status_code)
        except httpx.HTTPError:
            statuses.append(-1)  # the server gave up on it

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(run_server)
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
                anyio.create_task_group() as requests,
            ):
                requests.start_soon(request, client)
                await entered.wait()
                t0 = anyio.current_time()
                server_scope.cancel()
    return statuses, stopped_in


async def test_shutdown_lets_requests_in_flight_finish(service: TickCache) -> None:
    statuses, stopped_in = await _shutdown_with_request_in_flight(service, 0.3, 5.0)
    assert statuses == [200]
    assert 0.3 <= stopped_in < 2.0


async def test_shutdown_gives_up_on_slow_requests_at_the_deadline(service: TickCache) -> None:
    statuses, stopped_in = await _shutdown_with_request_in_flight(service, 30.0, 0.2)
    assert statuses in ([500], [-1])  # uvicorn answers 500 if it can, else drops the connection
    assert stopped_in < 0.2 + 1.0 + 0.5  # deadline + margin for uvicorn's own steps


async def test_failed_app_startup_raises_instead_of_exiting_the_process() -> None:
    async def broken_app(scope: dict[str, object], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            with pytest.raises(StreamMetricsError, match="lifespan startup failed"):
                await tg.start(
                    partial(serve, broken_app, host="127.0.0.1", port=0, component="system_metrics")
                )

"""A client that ignores ``Retry-After``, against a real endpoint on loopback: after its
429, its connection's next request (other than a health route's) is held, unread, until
the Retry-After has passed, so that it costs the loop one read per refusal while new
connections are served; and the listener takes every queued connection at once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from prometheus_client.parser import text_string_to_metric_families as parse_text

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.http.accept import BatchListener
from tests.faults.test_connections import connect, health_answers, parse_head, read_until_closed
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def endpoint(requests: int, per: str, **limits: Any) -> AsyncIterator[MetricsEndpoint]:
    ep = MetricsEndpoint(
        name="hammered", port=0, tick_s=0.2, rate_limit={"requests": requests, "per": per},
        limits=limits,
    )  # fmt: skip
    async with streammetrics.serve(ep):
        yield ep


async def ask(stream: SocketStream, path: str, within: float = 5.0) -> tuple[int, dict[str, str]]:
    """One GET on a kept-alive connection: its status and headers (the body read too)."""
    await stream.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    got = b""
    with anyio.fail_after(within):
        while b"\r\n\r\n" not in got:
            got += await stream.receive()
        status, headers = parse_head(got)
        body = got.split(b"\r\n\r\n", 1)[1]
        while len(body) < int(headers["content-length"]):
            body += await stream.receive()
    return status, headers


async def timed(stream: SocketStream, path: str) -> tuple[int, float]:
    t0 = time.monotonic()
    status, _ = await ask(stream, path)
    return status, time.monotonic() - t0


async def test_after_a_429_the_next_request_waits_for_the_retry_after() -> None:
    async with endpoint(2, "1s") as ep:
        stream = await connect(ep)
        assert [(await ask(stream, "/components"))[0] for _ in range(2)] == [200, 200]
        status, headers = await ask(stream, "/components")
        assert (status, headers["retry-after"]) == (429, "1")
        t0 = time.monotonic()
        await stream.send(b"GET /components HTTP/1.1\r\nHost: t\r\n\r\n")
        await until(lambda: ep.connections.statistics().held == 1, within=0.8)
        # while it is held, a new connection is served at once
        await health_answers(ep)
        st = ep.connections.statistics()
        assert (st.held, st.held_requests) == (1, 1)
        with anyio.fail_after(3):
            got = await stream.receive()
        waited = time.monotonic() - t0
        assert parse_head(got)[0] == 200  # tokens came back meanwhile
        assert 0.9 <= waited < 2.0, waited
        assert ep.connections.statistics().held == 0
        await stream.aclose()


async def test_a_client_that_ignores_retry_after_is_answered_what_its_bucket_allows() -> None:
    """One connection asking as fast as it can for 2.5 s: without the hold it would be
    answered hundreds of times (nearly all 429); with it, the bucket's 5 a second and
    one refusal each time the bucket runs dry."""
    async with endpoint(5, "1s") as ep:
        stream = await connect(ep)
        codes: list[int] = []
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            codes.append((await ask(stream, "/alerts"))[0])
        await stream.aclose()
        held = ep.connections.statistics().held_requests
    ok, refused = codes.count(200), codes.count(429)
    assert ok + refused == len(codes)
    assert 5 <= ok <= 5 + 3 * 5, codes  # the burst, then at most 5 per second refilled
    assert 1 <= refused <= 3, codes  # one per hold of about a second
    assert held == refused or held == refused - 1, (held, codes)


async def test_health_is_never_held_by_another_routes_limit() -> None:
    async with endpoint(1, "10s") as ep:
        stream = await connect(ep)
        assert (await ask(stream, "/components"))[0] == 200
        assert (await ask(stream, "/components"))[0] == 429
        status, took = await timed(stream, "/health")
        assert status == 200 and took < 0.5, took  # the same connection, at once
        assert ep.connections.statistics().held_requests == 0
        await stream.aclose()


async def test_a_held_connection_that_closes_frees_its_hold_and_timer() -> None:
    async with endpoint(1, "10s") as ep:
        stream = await connect(ep)
        assert (await ask(stream, "/components"))[0] == 200
        _, headers = await ask(stream, "/components")
        assert headers["retry-after"] == "10"
        await stream.send(b"GET /components HTTP/1.1\r\nHost: t\r\n\r\n")
        await until(lambda: ep.connections.statistics().held == 1, within=2)
        (conn,) = ep.connections._open
        timer = conn._hold_timer
        assert timer is not None and not timer.cancelled()
        await stream.aclose()
        await until(lambda: ep.connections.statistics().open == 0, within=2)
        assert timer.cancelled()
        st = ep.connections.statistics()
        assert (st.held, st.held_requests) == (0, 1)
        await health_answers(ep)


async def test_rate_limited_hold_s_zero_answers_the_next_request_at_once() -> None:
    async with endpoint(1, "10s", rate_limited_hold_s=0) as ep:
        stream = await connect(ep)
        assert (await ask(stream, "/components"))[0] == 200
        assert (await ask(stream, "/components"))[0] == 429
        status, took = await timed(stream, "/components")
        assert status == 429 and took < 0.5, took
        assert ep.connections.statistics().held_requests == 0
        await stream.aclose()


class Gated(MetricsEndpoint):
    """An endpoint whose ``/slow`` answers only once ``gate`` is set."""

    gate: anyio.Event

    def setup_routes(self) -> None:
        super().setup_routes()

        @self.app.get("/slow")
        async def slow() -> dict[str, str]:
            await self.gate.wait()
            return {"slow": "done"}


async def _back_from_their_holds(ep: Gated) -> tuple[SocketStream, list[SocketStream]]:
    """One connection at ``ep``'s gate with the only token, then three refused (429) whose
    next requests are held; once the holds end, the first back takes the refilled token
    and waits at the gate too, the other two wait for its place in the lane."""
    first = await connect(ep)
    await first.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")  # the token; then waits
    refused = [await connect(ep) for _ in range(3)]
    for stream in refused:
        status, headers = await ask(stream, "/slow")
        assert (status, headers["retry-after"]) == (429, "1")
    for stream in refused:
        await stream.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await until(lambda: ep.connections.statistics().held == 3, within=0.9)
    await until(lambda: ep.connections.statistics().held_waiting == 2, within=3)
    assert ep.connections.statistics().held == 0
    return first, refused


async def test_requests_back_from_their_hold_are_worked_on_in_a_lane_of_their_own() -> None:
    """Three connections refused together come back together once their Retry-After has
    passed: with ``held_concurrent_requests: 1`` one is worked on and the other two wait
    unanswered, while a new connection's request (and a probe) is answered at once."""
    ep = Gated(
        name="gated", port=0, tick_s=0.2, rate_limit={"requests": 1, "per": "1s"},
        limits={"held_concurrent_requests": 1},
    )  # fmt: skip
    ep.gate = anyio.Event()
    async with streammetrics.serve(ep):
        first, refused = await _back_from_their_holds(ep)
        for stream in refused[1:]:
            with anyio.move_on_after(0.3) as quiet:
                await stream.receive()
            assert quiet.cancelled_caught, "answered while its lane was full"
        text = (await ep.service.prometheus()).decode()
        (waiting,) = next(
            f for f in parse_text(text) if f.name == "streammetrics_http_requests_held_waiting"
        ).samples
        assert waiting.value == 2
        newcomer = await connect(ep)
        status, took = await timed(newcomer, "/alerts")
        # Its own lane, not queued behind them (a token may have come back meanwhile).
        assert status in (200, 429) and took < 1.0, took
        await health_answers(ep)
        ep.gate.set()
        for stream in [first, *refused]:
            got = b""
            with anyio.fail_after(3):
                while b"\r\n\r\n" not in got:
                    got += await stream.receive()
            assert parse_head(got)[0] in (200, 429)
        assert ep.connections.statistics().held_waiting == 0
        for stream in [first, *refused, newcomer]:
            await stream.aclose()


async def test_a_request_waiting_in_the_held_lane_is_evicted_first_at_the_cap() -> None:
    """As while it was held: a client that ignored Retry-After gives way to a newcomer."""
    ep = Gated(
        name="gated", port=0, tick_s=0.2, rate_limit={"requests": 1, "per": "1s"},
        limits={"held_concurrent_requests": 1, "max_connections": 5},
    )  # fmt: skip
    ep.gate = anyio.Event()
    async with streammetrics.serve(ep):
        first, refused = await _back_from_their_holds(ep)
        newcomers = [await connect(ep) for _ in range(2)]  # the 5th fits, the 6th evicts
        got, closed = await read_until_closed(refused[1], within=3)
        assert (got, closed) == (b"", True)  # the oldest waiting one, never answered
        st = ep.connections.statistics()
        assert (st.closed["evicted"], st.open) == (1, 5)
        ep.gate.set()
        for stream in (first, refused[0], refused[2]):
            with anyio.fail_after(3):
                assert parse_head(await stream.receive())[0] in (200, 429)
        for stream in [first, *refused, *newcomers]:
            await stream.aclose()


async def test_the_hold_is_exported() -> None:
    async with endpoint(1, "10s") as ep:
        stream = await connect(ep)
        await ask(stream, "/components")
        await ask(stream, "/components")  # 429
        await stream.send(b"GET /components HTTP/1.1\r\nHost: t\r\n\r\n")
        await until(lambda: ep.connections.statistics().held == 1, within=2)
        text = (await ep.service.prometheus()).decode()  # /metrics: this client is limited
        await stream.aclose()
    families = {f.name: f for f in parse_text(text)}
    assert families["streammetrics_http_connections_held"].samples[0].value == 1
    (held,) = families["streammetrics_http_requests_held"].samples
    assert (held.name, held.value) == ("streammetrics_http_requests_held_total", 1)


def _close(
    made: list[asyncio.BaseTransport], clients: list[socket.socket], server: socket.socket
) -> None:
    """A listener test's teardown: the transports it made, the clients, the server socket."""
    for t in made:
        t.close()
    for c in clients:
        c.close()
    server.close()


async def test_the_listener_takes_every_queued_connection_at_one_wake_up() -> None:
    """100 connections queued in the kernel before the listener runs: the first one seen
    made means all were accepted in the same batch (the loop's own server under uvloop
    takes one per loop turn)."""
    made: list[asyncio.Transport] = []

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            made.append(transport)

    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
    listener = BatchListener(server, Counting)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            await until(lambda: listener.accepted > 0, within=5)
            assert listener.accepted == 100
            await until(lambda: len(made) == 100, within=5)
            listener.close()
        await listener.wait_closed()
        assert server.fileno() == -1  # closed once the listener ended: newcomers are refused
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        _close(made, clients, server)


@pytest.mark.parametrize(
    ("name", "default", "bads"),
    [
        ("rate_limited_hold_s", 60.0, (-1, 3601, "soon")),
        ("held_concurrent_requests", 2, (0, 100_001, 1.5, "few")),
    ],
)
def test_the_hold_settings_are_validated_when_the_blueprint_is_read(
    name: str, default: float, bads: tuple[Any, ...]
) -> None:
    from streammetrics.blueprint import parse_blueprint
    from streammetrics.errors import BlueprintError, ConfigError

    assert getattr(MetricsEndpoint(name="m", port=0).config.limits, name) == default
    for bad in bads:
        with pytest.raises(ConfigError) as info:
            MetricsEndpoint(name="m", port=0, limits={name: bad})
        assert info.value.path == f"config.limits.{name}"
        text = (
            "system:\n  name: s\n  components:\n    - name: m\n      type: MetricsEndpoint\n"
            f"      config:\n        port: 0\n        limits: {{{name}: {bad}}}\n"
        )
        with pytest.raises(BlueprintError) as binfo:
            parse_blueprint(text)
        assert binfo.value.path.startswith("system.components[0].config.limits")
        assert name in f"{binfo.value.path}: {binfo.value}"


async def test_a_connection_that_cannot_be_set_up_does_not_stop_the_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made: list[asyncio.BaseTransport] = []
    calls = 0

    class Fussy(asyncio.Protocol):
        def __init__(self) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("the first connection's protocol fails")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    listener = BatchListener(server, Fussy)
    clients: list[socket.socket] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            await until(lambda: calls == 1, within=5)
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            await until(lambda: len(made) == 1, within=5)
            listener.close()
        assert "could not be set up" in caplog.text
    finally:
        _close(made, clients, server)

"""Hostile connections against a real endpoint on loopback (``config.limits``): an
oversized head, a slowloris, an idle keep-alive connection, a silent socket, a full
connection table. Each is refused or closed in time, counted, and ``/health`` on a fresh
connection still answers 200 throughout."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from prometheus_client.parser import text_string_to_metric_families as parse_text

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.blueprint import parse_blueprint
from streammetrics.errors import BlueprintError, ConfigError
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

#: Small limits, so that each refusal comes within a second or two.
FAST = {"header_timeout_s": 1.0, "idle_timeout_s": 0.5, "max_header_bytes": 4096}


@asynccontextmanager
async def endpoint(**limits: Any) -> AsyncIterator[MetricsEndpoint]:
    ep = MetricsEndpoint(name="guarded", port=0, tick_s=0.2, limits={**FAST, **limits})
    async with streammetrics.serve(ep):
        yield ep


async def connect(ep: MetricsEndpoint) -> SocketStream:
    assert ep.port is not None
    return await anyio.connect_tcp("127.0.0.1", ep.port)


async def read_until_closed(stream: SocketStream, within: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``within`` seconds pass
    (False); a reset after the answer counts as closed."""
    got = b""
    with anyio.move_on_after(within):
        while True:
            try:
                got += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                return got, True
    return got, False


async def read_response(stream: SocketStream) -> tuple[int, dict[str, str]]:
    """One response's status and headers (lower-cased names), within 5 s."""
    got = b""
    with anyio.fail_after(5.0):
        while b"\r\n\r\n" not in got:
            got += await stream.receive()
    return parse_head(got)


def parse_head(data: bytes) -> tuple[int, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


async def health_answers(ep: MetricsEndpoint) -> None:
    """``/health`` on a fresh connection answers 200 within a second."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        r = await client.get(ep.url + "/health")
    assert r.status_code == 200, r.text


async def families(ep: MetricsEndpoint) -> dict[str, dict[str, float]]:
    """The connection families of ``/metrics``: sample name -> label value -> value."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        text = (await client.get(ep.url + "/metrics")).text
    out: dict[str, dict[str, float]] = {}
    for fam in parse_text(text):
        if fam.name.startswith("streammetrics_http_connections"):
            for s in fam.samples:
                label = s.labels.get("reason") or s.labels.get("pool") or ""
                out.setdefault(s.name, {})[label] = s.value
    return out


async def test_an_oversized_head_is_answered_431_and_the_connection_closed() -> None:
    async with endpoint() as ep:
        stream = await connect(ep)
        sent = 0

        async def flood() -> None:
            """A head with no end: 1 MB of one header, as fast as the server takes it."""
            nonlocal sent
            await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            try:
                while sent < 1 << 20:
                    await stream.send(chunk)
                    sent += len(chunk)
            except (anyio.BrokenResourceError, ConnectionResetError, OSError):
                pass

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            got, closed = await read_until_closed(stream)
        elapsed = time.monotonic() - t0
        await stream.aclose()
        status, headers = parse_head(got)
        assert status == 431
        assert headers["connection"] == "close"
        assert b"max_header_bytes" in got
        # Closed promptly (the linger after the answer is half a second), and the server
        # stopped taking the flood long before the megabyte was through.
        assert closed and elapsed < 2.0
        assert sent < 1 << 20
        await health_answers(ep)
        st = ep.connections.statistics()
        assert st.rejected["header_too_large"] == 1
        assert st.open <= 1  # the health check's own connection, at most
        assert (await families(ep))["streammetrics_http_connections_rejected_total"][
            "header_too_large"
        ] == 1


async def test_a_head_just_below_the_limit_is_served() -> None:
    async with endpoint() as ep:
        stream = await connect(ep)
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "
        pad = b"p" * (4096 - len(head) - 4)
        await stream.send(head + pad + b"\r\n\r\n")
        status, _ = await read_response(stream)
        await stream.aclose()
        assert status == 200
        assert ep.connections.statistics().rejected["header_too_large"] == 0


async def test_a_slowloris_is_closed_after_the_header_deadline() -> None:
    async with endpoint() as ep:
        stream = await connect(ep)
        t0 = time.monotonic()
        await stream.send(b"GET /health HTTP/1.1\r\n")
        got = b""
        closed = False
        # One byte every 0.1 s, a header that never ends; /health answers meanwhile.
        with anyio.move_on_after(4.0):
            for byte in b"X-Slow: " + b"z" * 100:
                try:
                    await stream.send(bytes([byte]))
                except (anyio.BrokenResourceError, ConnectionResetError, OSError):
                    break
                with anyio.move_on_after(0.1):
                    try:
                        got += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                        closed = True
                        break
                if time.monotonic() - t0 > 0.5 and not got:
                    await health_answers(ep)
        if not closed:
            more, closed = await read_until_closed(stream, 2.0)
            got += more
        elapsed = time.monotonic() - t0
        await stream.aclose()
        assert closed
        assert 0.9 < elapsed < 2.5
        assert parse_head(got)[0] == 408
        assert ep.connections.statistics().rejected["header_timeout"] == 1
        await health_answers(ep)


async def test_a_body_that_trickles_is_answered_408_after_the_body_deadline() -> None:
    """A head announcing 200 bytes, then a byte every 0.1 s: past ``body_timeout_s`` the
    request is answered 408 and its connection closed, counted, and nothing of it is
    folded; ``/health`` answers meanwhile."""
    async with endpoint(body_timeout_s=1.0) as ep:
        stream = await connect(ep)
        t0 = time.monotonic()
        await stream.send(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n"
        )
        got = b""
        closed = False
        with anyio.move_on_after(4.0):
            for byte in b'{"events": [' + b" " * 180:
                try:
                    await stream.send(bytes([byte]))
                except (anyio.BrokenResourceError, ConnectionResetError, OSError):
                    break
                with anyio.move_on_after(0.1):
                    try:
                        got += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                        closed = True
                        break
                if time.monotonic() - t0 > 0.5 and not got:
                    await health_answers(ep)
        if not closed:
            more, closed = await read_until_closed(stream, 2.0)
            got += more
        elapsed = time.monotonic() - t0
        await stream.aclose()
        assert closed
        assert 0.9 < elapsed < 2.5
        assert parse_head(got)[0] == 408
        assert b"body_timeout_s" in got
        assert ep.connections.statistics().rejected["body_timeout"] == 1
        assert (await families(ep))["streammetrics_http_connections_rejected_total"][
            "body_timeout"
        ] == 1
        assert ep.intake.statistics().bodies == 0
        await health_answers(ep)


async def test_a_body_sent_in_pieces_within_the_deadline_is_served() -> None:
    body = b'{"events": [{"component": "api", "kind": "processed"}]}'
    async with endpoint(body_timeout_s=2.0) as ep:
        stream = await connect(ep)
        await stream.send(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for k in range(0, len(body), 20):
            await stream.send(body[k : k + 20])
            await anyio.sleep(0.2)
        status, _headers = await read_response(stream)
        await stream.aclose()
        assert status == 200
        await until(lambda: "api" in ep.aggregator.figures().detailed_components, within=2)
        assert ep.connections.statistics().rejected["body_timeout"] == 0
        await anyio.sleep(1.5)  # past the deadline: the timer was let go with the request
        assert ep.connections.statistics().rejected["body_timeout"] == 0


async def test_a_silent_connection_is_closed_after_the_header_deadline() -> None:
    async with endpoint() as ep:
        stream = await connect(ep)
        t0 = time.monotonic()
        got, closed = await read_until_closed(stream, 3.0)
        elapsed = time.monotonic() - t0
        await stream.aclose()
        assert closed and got == b""  # nothing was asked: nothing is answered
        assert 0.9 < elapsed < 2.0
        assert ep.connections.statistics().rejected["header_timeout"] == 1
        await health_answers(ep)


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout() -> None:
    async with endpoint(header_timeout_s=5.0) as ep:
        stream = await connect(ep)
        await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await read_response(stream)
        assert status == 200 and headers.get("connection") != "close"
        t0 = time.monotonic()
        _, closed = await read_until_closed(stream, 3.0)
        elapsed = time.monotonic() - t0
        await stream.aclose()
        assert closed and elapsed < 1.5
        st = ep.connections.statistics()
        assert st.closed["idle_timeout"] == 1
        assert st.rejected["header_timeout"] == 0
        await health_answers(ep)


async def test_idle_connections_at_the_cap_are_evicted_for_new_ones() -> None:
    """A table full of idle sockets (the file-descriptor exhaustion of the issue, in
    small) never keeps a new client out: the longest idle gives way."""
    async with endpoint(max_connections=4, health_reserve=0, header_timeout_s=30.0) as ep:
        idle = [await connect(ep) for _ in range(8)]
        await anyio.sleep(0.2)
        assert ep.connections.statistics().open == 4
        await health_answers(ep)
        for s in idle:
            await s.aclose()
        st = ep.connections.statistics()
        assert st.closed["evicted"] >= 5
        assert st.rejected["connection_limit"] == 0


async def open_stream(ep: MetricsEndpoint) -> SocketStream:
    """A connection busy with ``GET /stream`` (the live feed: a response in flight)."""
    s = await connect(ep)
    await s.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = await read_response(s)
    assert status == 200
    return s


async def test_beyond_the_cap_503_with_retry_after_and_health_still_answers() -> None:
    async with endpoint(max_connections=3, health_reserve=1, retry_after_s=7) as ep:
        busy = [await open_stream(ep) for _ in range(3)]
        # Nothing idle to evict: another route is refused, in the reserve...
        s = await connect(ep)
        await s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got, closed = await read_until_closed(s, 3.0)
        await s.aclose()
        status, headers = parse_head(got)
        assert (status, headers["retry-after"], headers["connection"]) == (503, "7", "close")
        assert closed
        # ... while /health is answered there, once, and the connection closed.
        await health_answers(ep)
        s = await connect(ep)
        await s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        got, closed = await read_until_closed(s, 3.0)
        await s.aclose()
        assert parse_head(got)[0] == 200 and closed
        # The reserve taken too (a silent socket in it): refused at once.
        holder = await connect(ep)
        await anyio.sleep(0.1)
        assert ep.connections.statistics().reserve_open == 1
        s = await connect(ep)
        await s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        got, closed = await read_until_closed(s, 3.0)
        await s.aclose()
        status, headers = parse_head(got)
        assert (status, headers["retry-after"]) == (503, "7")
        assert closed
        await holder.aclose()
        for b in busy:
            await b.aclose()
        await anyio.sleep(0.2)
        st = ep.connections.statistics()
        assert st.rejected["connection_limit"] == 2
        await health_answers(ep)
        fams = await families(ep)
        assert fams["streammetrics_http_connections_rejected_total"]["connection_limit"] == 2
        assert fams["streammetrics_http_connections_limit"] == {"main": 3, "health_reserve": 1}


async def test_requests_beyond_the_concurrency_wait_while_health_goes_first() -> None:
    """One request at a time (``max_concurrent_requests: 1``): a POST whose body is late
    holds the place, the next request waits for it, /health does not wait at all."""
    async with endpoint(max_concurrent_requests=1) as ep:
        body = b'{"component": "c", "kind": "processed"}'
        slow = await connect(ep)
        await slow.send(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:5]
        )
        await anyio.sleep(0.2)
        queued = await connect(ep)
        await queued.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        with anyio.move_on_after(0.5):
            got = await queued.receive()
        assert got == b"", "the second request did not wait for the first"
        t0 = time.monotonic()
        await health_answers(ep)
        assert time.monotonic() - t0 < 0.5
        await slow.send(body[5:])
        status, _ = await read_response(slow)
        assert status == 200
        status, _ = await read_response(queued)  # now it runs
        assert status == 200
        await slow.aclose()
        await queued.aclose()


# -- the file-descriptor limit -------------------------------------------------------------

_CLIP = """
import resource, sys
from streammetrics.errors import StreamMetricsError
from streammetrics.http.limits import ConnectionGuard, ConnectionLimits
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
g = ConnectionGuard(ConnectionLimits(max_connections=5000, health_reserve=8))
g.fit_to_fd_limit("m")
print(g.max_connections)
try:
    ConnectionGuard(ConnectionLimits(health_reserve=2000)).fit_to_fd_limit("m")
except StreamMetricsError as exc:
    print(exc)
"""


def test_the_cap_is_clipped_below_the_fd_limit_and_an_impossible_one_refused() -> None:
    """In a child whose hard limit is 1024 (it cannot be raised): 1024 minus 256 of
    headroom minus the reserve; a reserve that cannot fit at all stops the start."""
    out = subprocess.run(
        [sys.executable, "-c", _CLIP], capture_output=True, text=True, timeout=30, check=True
    )
    clipped, error = out.stdout.strip().splitlines()
    assert int(clipped) == 1024 - 256 - 8
    assert "clipped to 760" in out.stderr
    assert "cannot fit the file-descriptor limit of 1024" in error


def test_the_soft_fd_limit_is_raised_to_the_hard_one() -> None:
    code = (
        "import resource\n"
        "from streammetrics.http.limits import raise_fd_limit\n"
        "s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, h))\n"
        "print(raise_fd_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(h, 1 << 20)"
        " if h != resource.RLIM_INFINITY else raise_fd_limit() == 1 << 20)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "True"


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"health_reserve": -1}, "health_reserve"),
        ({"max_header_bytes": 100}, "max_header_bytes"),
        ({"header_timeout_s": 0}, "header_timeout_s"),
        ({"body_timeout_s": 0}, "body_timeout_s"),
        ({"idle_timeout_s": -1.0}, "idle_timeout_s"),
        ({"retry_after_s": 0}, "retry_after_s"),
        ({"max_concurrent_requests": 0}, "max_concurrent_requests"),
        ({"max_conections": 10}, "max_conections"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(limits: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=0, limits=limits)
    assert info.value.path == f"config.limits.{field}"
    text = f"""\
system:
  name: s
  components:
    - name: m
      type: MetricsEndpoint
      config:
        port: 0
        limits: {limits!r}
"""
    with pytest.raises(BlueprintError) as binfo:
        parse_blueprint(text.replace("'", '"'))
    # The blueprint names an unknown key in its message, a bad value in its path.
    where = f"{binfo.value.path}: {binfo.value}"
    assert where.startswith("system.components[0].config.limits")
    assert field in where


def test_the_defaults() -> None:
    limits = MetricsEndpoint(name="m", port=0).config.limits
    assert (
        limits.max_connections,
        limits.health_reserve,
        limits.max_header_bytes,
        limits.header_timeout_s,
        limits.idle_timeout_s,
        limits.retry_after_s,
        limits.max_concurrent_requests,
    ) == (10_000, 8, 32_768, 5.0, 5.0, 1, 64)
    assert limits.body_timeout_s == 30.0

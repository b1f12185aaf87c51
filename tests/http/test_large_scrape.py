"""A large ``/metrics`` shares the event loop: ``/health`` is answered while thousands of
components are rendered and their body is sent, and sending the pieces of a body lets the
loop in every millisecond or so, however fast the client reads."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from streammetrics.http.app import create_app
from streammetrics.http.routes import _SEND_STEP_S, _pieces
from streammetrics.prometheus.exposition import Exposition
from streammetrics.views.tick_cache import TickCache
from tests.support.http_app import FakeClock, running, seed_many
from tests.support.loop import with_turns
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_health_is_answered_while_a_large_metrics_is_rendered_and_sent(
    clock: FakeClock,
) -> None:
    """While a cold 4,000-component ``/metrics`` (some 8 MB) is rendered and sent at the
    default steps, ``/health`` requests one after another are each answered within a
    second, several of them before the scrape ends; the scrape's body is the render's."""
    service = TickCache(seed_many(clock, 4000), clock=clock.monotonic, wall=clock.wall)
    await service.snapshot()  # the snapshot is there: what the scrape waits for is the render
    async with running(create_app(service)) as client:
        scraped = anyio.Event()
        size: list[int] = []
        answered_during: list[float] = []

        async def scrape() -> None:
            async with client.stream("GET", "/metrics", timeout=30.0) as r:
                assert r.status_code == 200
                n = 0
                async for chunk in r.aiter_raw():
                    n += len(chunk)
                size.append(n)
                assert r.headers["content-length"] == str(n)
            scraped.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(scrape)
                await until(lambda: service.exposition_statistics().renders)  # render begun
                while not scraped.is_set():
                    t0 = time.perf_counter()
                    r = await client.get("/health", timeout=1.0)
                    assert r.status_code == 200, r.text
                    if not scraped.is_set():
                        answered_during.append(time.perf_counter() - t0)
        body = await service.prometheus()
    assert size == [len(body)] and len(body) > 7_000_000
    assert service.statistics().renders == 1
    assert len(answered_during) >= 3, answered_during


def _read_fast(port: int, path: str, got: list[bytes]) -> None:
    """GET ``path`` over a plain socket, as Prometheus asks (``Accept-Encoding: gzip``),
    and read the answer as fast as it comes (a thread: the event loop serving it never
    waits for this reader)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n"
            "Connection: close\r\n\r\n"
        )
        s.sendall(head.encode())
        chunks = []
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
        got.append(b"".join(chunks))


async def test_sending_a_body_lets_the_loop_in_every_millisecond() -> None:
    """Each piece costs 0.3 ms to send here (a busy consumer standing in for the copy into
    the kernel that a fast reader never lets block): the pieces' iterator lets the loop in
    as soon as sending has held it ``_SEND_STEP_S`` (every 2 pieces at 0.5 ms), not once
    the whole body is out."""
    pieces = tuple(bytes([i % 256]) * 1024 for i in range(200))
    exposition = Exposition(pieces, sum(map(len, pieces)))
    sent: list[bytes] = []

    async def send(iterator: AsyncIterator[bytes]) -> None:
        async for piece in iterator:
            end = time.perf_counter() + 0.0003
            while time.perf_counter() < end:  # holds the loop, as a write into the kernel does
                pass
            sent.append(piece)

    with anyio.fail_after(10):
        _, during = await with_turns(send(_pieces(exposition)))
    assert b"".join(sent) == exposition.body()
    every = math.ceil(_SEND_STEP_S / 0.0003)  # pieces sent per step
    assert during >= len(pieces) // (every + 1), during


async def test_a_large_body_read_as_fast_as_it_is_sent_is_the_render(
    clock: FakeClock,
) -> None:
    """A 2,000-component body read by a client that never lets the socket fill (so sending
    never waits for it): it arrives whole, with its Content-Length, byte for byte the
    render; asked for gzip, as a Prometheus scrape does, it is answered as is (the
    endpoint does not compress, and says no Content-Encoding)."""
    service = TickCache(seed_many(clock, 2000), clock=clock.monotonic, wall=clock.wall)
    body = await service.prometheus()  # rendered: the request only sends
    async with running(create_app(service)) as client:
        port = client.base_url.port
        assert port is not None
        got: list[bytes] = []
        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(_read_fast, port, "/metrics", got)
    head, _, sent = got[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert b"content-encoding" not in head.lower()
    assert len(body) > 3_500_000 and sent == body
    assert service.statistics().renders == 1

"""What every sender shares (transports/batching.py, senders.py), through the
real senders: the HTTP clients against a real endpoint behind a server that fails or
stalls on purpose, the Redis publishers against a real redis-server (``CLIENT PAUSE
WRITE`` makes it hold their ``XADD``s). A flush that is cancelled, or interrupted by a
real Ctrl-C, keeps what it had not delivered; ``flush_periodically`` outlives a failed
batch."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import pytest
import redis

from streammetrics import Event
from streammetrics.errors import DeliveryError
from streammetrics.model.events import decode_events
from streammetrics.transports.http_client import AsyncEventClient
from streammetrics.transports.redis_publisher import AsyncEventPublisher
from streammetrics.transports.retry import RetryPolicy
from tests.support.flaky import Fault, flaky_endpoint
from tests.support.paths import SUPPORT
from tests.support.process import Spawned
from tests.support.servers import RedisServer
from tests.support.waiting import until, wait_until

FAST = RetryPolicy(max_retries=4, backoff_s=0.005, max_backoff_s=0.02)
ONE_RETRY = RetryPolicy(max_retries=1, backoff_s=0.005)


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event("worker", "processed", id=f"k{i}") for i in range(start, start + n)]


def _ids(r: redis.Redis, stream: str) -> list[str | None]:
    """The ids of the events in the stream, entry by entry, in order."""
    return [
        ev.id
        for _entry, fields in r.xrange(stream)
        for ev in decode_events(fields[b"msgpack"], "msgpack").events
    ]


def _held_writes(r: redis.Redis) -> int:
    """Clients whose ``XADD`` Redis holds (blocked by ``CLIENT PAUSE WRITE``)."""
    return sum(c.get("cmd") == "xadd" and "b" in c.get("flags", "") for c in r.client_list())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _child(*args: str) -> Spawned:
    return Spawned([sys.executable, str(SUPPORT / "interrupted.py"), *args])


# -- cancellation and Ctrl-C keep the batch ------------------------------------------------


@pytest.mark.anyio
async def test_a_cancelled_client_flush_keeps_the_batch_and_close_delivers_it() -> None:
    release = anyio.Event()
    async with flaky_endpoint([Fault(503, hold=release)]) as (ep, url, flaky):
        client = AsyncEventClient(url, batch_size=10, flush_interval_s=60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send_many, _events(30))  # a full batch: it flushes
            with anyio.fail_after(10):
                await flaky.held.wait()
            assert client.statistics().buffered == 0  # taken by the flush, in the air
            tg.cancel_scope.cancel()
        st = client.statistics()
        assert (st.buffered, st.batches_sent, st.failed_batches) == (30, 0, 0)
        release.set()
        await client.aclose()
        st = client.statistics()
        assert (st.buffered, st.batches_sent, st.events_sent) == (0, 3, 30)
        assert ep.intake.statistics().accepted == 30  # the held request folded nothing


@pytest.mark.anyio
async def test_ctrl_c_during_a_sync_client_send_keeps_the_batch_and_close_delivers_it() -> None:
    release = anyio.Event()
    async with flaky_endpoint([Fault(503, hold=release)]) as (ep, url, flaky):
        child = _child("http", url, "30", "10")
        try:
            with anyio.fail_after(20):
                await flaky.held.wait()  # the child's first batch is stalled in the server
            child.proc.send_signal(signal.SIGINT)
            m = await anyio.to_thread.run_sync(child.wait_for, r"^interrupted buffered=(\d+)")
            assert int(m[1]) == 30
            release.set()
            m = await anyio.to_thread.run_sync(child.wait_for, r"^closed (.*)")
            st = msgspec.json.decode(m[1])
            assert (st["buffered"], st["batches_sent"], st["events_sent"]) == (0, 3, 30)
            assert await anyio.to_thread.run_sync(child.proc.wait, 10) == 0
        finally:
            release.set()
            child.kill()
        assert ep.intake.statistics().accepted == 30
        assert flaky.requests == 4  # the stalled one, then three batches on close


@pytest.mark.anyio
async def test_a_cancelled_publish_keeps_the_batch_and_close_delivers_it(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    pub = AsyncEventPublisher(server.url, stream, batch_size=10, flush_interval_s=60, maxlen=None)
    r.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.publish_many, _events(30))  # a full batch: it flushes
            await until(lambda: _held_writes(r))
            assert pub.statistics().buffered == 0  # taken by the flush, in the air
            tg.cancel_scope.cancel()
        st = pub.statistics()
        assert (st.buffered, st.entries, st.failed_batches) == (30, 0, 0)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    await pub.aclose()
    assert (pub.statistics().buffered, pub.statistics().entries) == (0, 3)
    assert _ids(r, stream) == [f"k{i}" for i in range(30)]  # each once, in order


def test_ctrl_c_during_a_sync_publish_keeps_the_batch_and_close_delivers_it(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    r.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    child = _child("redis", server.url, stream, "30", "10")
    try:
        try:
            child.wait_for("^sending")
            wait_until(lambda: _held_writes(r), what="the XADDs held by Redis")
            child.proc.send_signal(signal.SIGINT)
            assert int(child.wait_for(r"^interrupted buffered=(\d+)")[1]) == 30
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        st = msgspec.json.decode(child.wait_for(r"^closed (.*)")[1])
        assert (st["buffered"], st["entries"], st["events"]) == (0, 3, 30)
        assert child.proc.wait(10) == 0
    finally:
        child.kill()
    assert _ids(r, stream) == [f"k{i}" for i in range(30)]


# -- the periodic flush outlives a failed batch ---------------------------------------------


@pytest.mark.anyio
async def test_flush_periodically_logs_counts_and_keeps_a_batch_the_endpoint_was_too_busy_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with flaky_endpoint([Fault(503), Fault(503)]) as (ep, url, flaky):
        client = AsyncEventClient(url, flush_interval_s=0.02, retry=ONE_RETRY)
        with caplog.at_level(logging.WARNING, logger="streammetrics.client"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.flush_periodically)
                await client.send_many(_events(5))
                # the client's own count: the endpoint may count a batch before its answer
                # reaches the client, and a cancel in between puts the batch back
                await until(lambda: client.statistics().events_sent == 5)
                tg.cancel_scope.cancel()
        assert ep.intake.statistics().accepted == 5
        st = client.statistics()
        assert (st.failed_batches, st.retries, st.dropped_events, st.buffered) == (1, 1, 0, 0)
        assert flaky.requests == 3  # two answered 503, then delivered on the next round
        [warning] = _warnings(caplog)
        assert "after 1 retries: HTTP 503" in warning
        assert "kept for the next flush" in warning
        await client.aclose()


@pytest.mark.anyio
async def test_flush_periodically_drops_a_refused_batch_counts_it_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with flaky_endpoint([Fault(400, body=b'{"detail": "no"}')]) as (ep, url, flaky):
        client = AsyncEventClient(url, flush_interval_s=0.02, retry=FAST)
        with caplog.at_level(logging.WARNING, logger="streammetrics.client"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.flush_periodically)
                await client.send_many(_events(4))
                await until(lambda: client.statistics().dropped_events == 4)
                await client.send_many(_events(3, start=4))
                await until(lambda: client.statistics().events_sent == 3)
                tg.cancel_scope.cancel()
        assert ep.intake.statistics().accepted == 3
        st = client.statistics()
        assert (st.failed_batches, st.retries, st.dropped_events, st.buffered) == (1, 0, 4, 0)
        assert flaky.requests == 2  # a refused batch is not sent again
        [warning] = _warnings(caplog)
        assert "refused a batch of 4 events: 400 no" in warning
        assert "4 events dropped" in warning
        await client.aclose()


@pytest.mark.anyio
async def test_flush_periodically_keeps_the_batch_while_redis_is_away(
    tmp_path: Path, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = RedisServer(tmp_path)
    port = srv.port
    srv.stop()
    pub = AsyncEventPublisher(srv.url, stream, flush_interval_s=0.02, maxlen=None, retry=ONE_RETRY)
    try:
        with caplog.at_level(logging.WARNING, logger="streammetrics.redis"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pub.flush_periodically)
                await pub.publish_many(_events(5))
                await until(lambda: pub.statistics().failed_batches >= 2)
                srv = RedisServer(tmp_path, port=port)
                await until(lambda: pub.statistics().entries == 1)
                tg.cancel_scope.cancel()
        st = pub.statistics()
        assert (st.buffered, st.events, st.dropped_events) == (0, 5, 0)
        assert st.retries == st.failed_batches  # one retry per round that failed
        warnings = _warnings(caplog)
        assert len(warnings) == st.failed_batches
        assert all("after 1 retries: ConnectionError" in w for w in warnings)
        assert all("kept for the next flush" in w for w in warnings)
        await pub.aclose()
        client = redis.Redis.from_url(srv.url)
        try:
            assert _ids(client, stream) == [f"k{i}" for i in range(5)]
        finally:
            client.close()
    finally:
        srv.stop()


@pytest.mark.anyio
async def test_an_error_reply_is_not_retried_and_flush_periodically_drops_it(
    server: RedisServer, stream: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r.set(stream, "not a stream")  # XADD answers WRONGTYPE, and would again
    pub = AsyncEventPublisher(server.url, stream, flush_interval_s=0.02, retry=FAST)
    await pub.publish_many(_events(2))
    with pytest.raises(DeliveryError) as info:
        await pub.flush()
    assert f"stream {stream!r}" in str(info.value) and "refused 2 events" in str(info.value)
    assert "WRONGTYPE" in str(info.value)
    assert [e.id for e in info.value.events] == ["k0", "k1"]
    with caplog.at_level(logging.WARNING, logger="streammetrics.redis"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.flush_periodically)
            await pub.publish_many(_events(4, start=2))
            await until(lambda: pub.statistics().dropped_events == 4)
            r.delete(stream)
            await pub.publish_many(_events(3, start=6))
            await until(lambda: pub.statistics().entries == 1)
            tg.cancel_scope.cancel()
    st = pub.statistics()
    assert (st.failed_batches, st.retries, st.dropped_events, st.buffered) == (2, 0, 4, 0)
    [warning] = _warnings(caplog)
    assert "refused 4 events: ResponseError:" in warning and "WRONGTYPE" in warning
    assert "4 events dropped" in warning
    assert _ids(r, stream) == ["k6", "k7", "k8"]
    await pub.aclose()

"""EventClient / AsyncEventClient against a real endpoint, behind a real server that
fails on purpose (busy, rate-limited, answer lost) for the first requests."""

from __future__ import annotations

import time

import anyio
import anyio.to_thread
import pytest

from streammetrics import Event
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import DeliveryError
from streammetrics.transports.http_client import AsyncEventClient, EventClient, events_url
from streammetrics.transports.retry import RetryPolicy
from tests.support.flaky import Fault, flaky_endpoint
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_retries=4, backoff_s=0.005, max_backoff_s=0.02)


def _processed(ep: MetricsEndpoint, name: str = "worker") -> int:
    c = ep.aggregator.figures().detailed_components.get(name)
    return c.items_processed if c is not None else 0


def _events(n: int) -> list[Event]:
    return [Event("worker", "processed", latency=0.001) for _ in range(n)]


async def test_batches_go_out_when_full_and_close_flushes_the_rest() -> None:
    async with flaky_endpoint([]) as (ep, url, flaky):
        async with AsyncEventClient(url, batch_size=1000, flush_interval_s=60) as client:
            results = [await client.send(ev) for ev in _events(2500)]
            sent = [r for r in results if r is not None]
            assert [r.accepted for r in sent] == [1000, 1000]
            assert client.statistics().buffered == 500
            assert _processed(ep) == 2000
        stats = client.statistics()
        assert (stats.batches_sent, stats.events_sent, stats.accepted) == (3, 2500, 2500)
        assert (stats.buffered, stats.retries) == (0, 0)
        assert _processed(ep) == 2500
        assert flaky.requests == 3
        with pytest.raises(RuntimeError, match="closed"):
            await client.send(Event("worker", "processed"))


async def test_a_batch_older_than_the_flush_interval_goes_out() -> None:
    async with flaky_endpoint([]) as (ep, url, _flaky):
        client = AsyncEventClient(url, flush_interval_s=0.05)
        assert await client.send(Event("worker", "processed")) is None
        await anyio.sleep(0.06)
        r = await client.send(Event("worker", "processed"))  # the first one is due
        assert r is not None and r.accepted == 2
        async with anyio.create_task_group() as tg:  # or flushed on a timer
            tg.start_soon(client.flush_periodically)
            await client.send(Event("worker", "processed"))
            deadline = time.monotonic() + 5
            while _processed(ep) < 3:
                assert time.monotonic() < deadline
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        await client.aclose()
        assert _processed(ep) == 3


async def test_5xx_are_retried_with_backoff_until_delivered() -> None:
    async with flaky_endpoint([Fault(503), Fault(500), Fault(502)]) as (ep, url, flaky):
        async with AsyncEventClient(url, retry=FAST) as client:
            await client.send_many(_events(10))
        assert client.statistics().retries == 3
        assert client.statistics().accepted == 10
        assert _processed(ep) == 10
        assert flaky.requests == 4


async def test_429_waits_as_long_as_retry_after_says() -> None:
    plan = [Fault(429, {"retry-after": "1"})]
    async with flaky_endpoint(plan) as (ep, url, _flaky):
        async with AsyncEventClient(url, retry=FAST) as client:
            await client.send_many(_events(3))
            t0 = time.monotonic()
            r = await client.flush()
            waited = time.monotonic() - t0
        assert r.accepted == 3
        assert 0.95 <= waited < 3  # FAST alone would have waited ~5 ms
        assert _processed(ep) == 3


async def test_a_lost_answer_is_retried_and_counted_once() -> None:
    async with flaky_endpoint([Fault(503, fold_first=True)]) as (ep, url, _flaky):
        async with AsyncEventClient(url, retry=FAST) as client:
            await client.send_many(_events(50))
            r = await client.flush()
        assert (r.accepted, r.duplicates) == (0, 50)  # the first try had folded them
        assert _processed(ep) == 50
        assert ep.aggregator.statistics().rejected.get("duplicate") == 50


async def test_a_batch_the_server_refuses_is_not_retried_and_keeps_its_events() -> None:
    async with flaky_endpoint([]) as (ep, url, flaky):
        client = AsyncEventClient(url, retry=FAST, batch_size=2)
        bad = [Event("", "processed"), Event("", "processed")]  # component must be 1-200 chars
        await client.send_many([*bad[:1]])
        with pytest.raises(DeliveryError) as info:
            await client.send_many([*bad[1:], *_events(3)])
        err = info.value
        assert err.status == 400
        assert [e.component for e in err.events] == ["", ""]
        assert "at `events[0].component`" in str(err)
        assert flaky.requests == 1  # no retry
        assert client.statistics().buffered == 3  # the batches after it wait
        r = await client.flush()
        assert r.accepted == 3
        await client.aclose()
        assert _processed(ep) == 3


async def test_an_error_body_that_is_not_an_error_shape_is_quoted_as_text() -> None:
    """The peer may be any server: an error body nested too deeply to decode (100,000
    levels would exhaust the decoder's recursion) is quoted, not decoded."""
    deep = b'{"detail": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    plan = [Fault(400, body=deep), Fault(422, body=b'{"detail": "\xff"}')]
    async with flaky_endpoint(plan) as (ep, url, _flaky):
        async with AsyncEventClient(url, retry=FAST, batch_size=1) as client:
            for status, quoted in ((400, '{"detail": [[[['), (422, '{"detail": "')):
                with pytest.raises(DeliveryError) as info:
                    await client.send(Event("worker", "processed"))
                assert info.value.status == status
                assert f"{status} {quoted}" in str(info.value)
        assert _processed(ep) == 0


async def test_an_unreachable_endpoint_fails_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = AsyncEventClient(url, retry=RetryPolicy(max_retries=2, backoff_s=0.01))
    await client.send_many(_events(4))
    with pytest.raises(DeliveryError) as info:
        await client.flush()
    assert len(info.value.events) == 4
    assert info.value.status is None
    assert "after 2 retries: ConnectError" in str(info.value)
    stats = client.statistics()
    assert (stats.retries, stats.failed_batches, stats.buffered) == (2, 1, 0)
    await client.aclose()


async def test_the_sync_client_batches_retries_and_flushes_on_close() -> None:
    plan = [Fault(503), Fault(503, fold_first=True)]
    async with flaky_endpoint(plan) as (ep, url, _flaky):

        def report() -> EventClient:
            with EventClient(url, batch_size=100, retry=FAST, flush_interval_s=60) as client:
                for ev in _events(250):
                    client.send(ev)
            return client

        client = await anyio.to_thread.run_sync(report)
        stats = client.statistics()
        assert (stats.batches_sent, stats.events_sent, stats.retries) == (3, 250, 2)
        assert (stats.accepted, stats.duplicates) == (150, 100)
        assert _processed(ep) == 250


def test_the_url_may_be_the_endpoint_or_the_ingest_route() -> None:
    assert events_url("http://h:9000") == "http://h:9000/events"
    assert events_url("http://h:9000/") == "http://h:9000/events"
    assert events_url("http://h:9000/ingest/v1") == "http://h:9000/ingest/v1"

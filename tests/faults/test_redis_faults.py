"""Redis faults, through a real redis-server and a real endpoint on loopback: the server
killed or frozen (the source cannot read: a health reason and ``EventSourceDown``, both
gone when it reads again), entries that cannot be decoded (dead-lettered, acknowledged,
counted), consumers that left the group long ago (claimed, then removed)."""

from __future__ import annotations

import signal
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
import redis.asyncio

from streammetrics import Event
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.model.events import encode_events
from streammetrics.transports.redis_publisher import EventPublisher
from tests.support.endpoints import redis_source, running
from tests.support.exposition import by_label, families
from tests.support.servers import RedisServer
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


def consumer(
    server: RedisServer, stream: str, **kw: Any
) -> AbstractAsyncContextManager[MetricsEndpoint]:
    kw.setdefault("reconnect_max_s", 0.1)
    return running(tick_s=0.05, source=redis_source(server.url, stream, **kw))


def _folded(ep: MetricsEndpoint) -> int:
    snap = ep.aggregator.figures()
    return sum(c.items_processed for k, c in snap.detailed_components.items() if k != "metrics")


async def _health(client: httpx.AsyncClient, code: int) -> dict[str, Any]:
    """``/health`` once it answers ``code`` (it answers all along: each call has 5 s)."""
    with anyio.fail_after(10):
        while True:
            got = await client.get("/health", timeout=5)
            if got.status_code == code:
                body: dict[str, Any] = got.json()
                return body
            await anyio.sleep(0.02)


async def _state(client: httpx.AsyncClient) -> tuple[list[str], dict[str, str]]:
    """The reasons ``/health`` gives and the ``EventSourceDown`` alerts of ``/alerts``
    (stream -> state)."""
    health = (await client.get("/health")).json()
    body = (await client.get("/alerts")).json()
    alerts = {
        a["component"]: a["state"]
        for key in ("alerts", "pending_alerts", "resolved_alerts")
        for a in body[key]
        if a["name"] == "EventSourceDown"
    }
    return [d["reason"] for d in health["reasons"]], alerts


def _redis_up(text: str) -> float:
    return families(text)["streammetrics_redis_up"].samples[0].value


@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_redis_away_is_a_reason_and_an_alert_that_clear_when_it_reads_again(
    tmp_path: Path, stream: str, fault: str
) -> None:
    """Killed: connections refused. Frozen (SIGSTOP): connections accepted and never
    answered, which only the read deadline (``read_timeout_s``) turns into a fault."""
    srv = RedisServer(tmp_path)
    port = srv.port
    try:
        async with (
            consumer(srv, stream, read_timeout_s=0.3) as ep,
            httpx.AsyncClient(base_url=ep.url, timeout=5) as client,
        ):
            with EventPublisher(srv.url, stream, batch_size=10) as pub:
                pub.publish_many(Event("svc", "processed", id=f"a{i}") for i in range(10))
            await until(lambda: _folded(ep) == 10)
            await _health(client, 200)
            if fault == "killed":
                srv.stop(signal.SIGKILL)
            else:
                srv.proc.send_signal(signal.SIGSTOP)
            body = await _health(client, 503)
            assert body["status"] == "degraded"
            reasons, alerts = await _state(client)
            why = [r for r in reasons if r.startswith(f"event source redis:{stream} cannot read")]
            assert why and "connection lost" in why[0], reasons
            assert alerts == {f"redis:{stream}": "firing"}
            assert _redis_up((await client.get("/metrics")).text) == 0
            if fault == "killed":
                srv = RedisServer(tmp_path, port=port)  # persistence off: an empty server
            else:
                srv.proc.send_signal(signal.SIGCONT)
            with EventPublisher(srv.url, stream, batch_size=10) as pub:
                pub.publish_many(Event("svc", "processed", id=f"b{i}") for i in range(10))
            await until(lambda: _folded(ep) == 20)
            body = await _health(client, 200)
            assert body["status"] == "healthy"
            await anyio.sleep(0.1)  # the next tick
            reasons, alerts = await _state(client)
            assert not any("event source" in r for r in reasons), reasons
            assert alerts == {f"redis:{stream}": "resolved"}
            assert _redis_up((await client.get("/metrics")).text) == 1
    finally:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGCONT)
        srv.stop()


async def test_a_stream_deleted_under_a_blocked_read_is_made_again(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    """Deleting the key answers the consumer's blocked read with UNBLOCKED: the group (and
    its stream) is made again, no error is counted, and what is published next is read."""
    async with consumer(server, stream, block_ms=2000) as ep:
        with EventPublisher(server.url, stream, batch_size=10) as pub:
            pub.publish_many(Event("svc", "processed", id=f"a{i}") for i in range(5))
        await until(lambda: _folded(ep) == 5)
        await anyio.sleep(0.2)  # blocked in the next read
        r.delete(stream)
        await until(lambda: r.exists(stream) == 1)
        with EventPublisher(server.url, stream, batch_size=10) as pub:
            pub.publish_many(Event("svc", "processed", id=f"b{i}") for i in range(5))
        await until(lambda: _folded(ep) == 10)
        assert ep.redis is not None
        assert ep.redis.statistics().server_errors == 0


async def test_an_error_answer_from_redis_is_a_reason_and_heals_when_the_cause_is_gone(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    """The stream's key replaced by a string: Redis answers every read with WRONGTYPE.
    The endpoint keeps serving, says why in ``/health``, fires ``EventSourceDown`` and
    counts the errors; once the key is gone the group is made again, and the events
    published after that are folded."""
    async with (
        consumer(server, stream) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5) as client,
    ):
        with EventPublisher(server.url, stream, batch_size=10) as pub:
            pub.publish_many(Event("svc", "processed", id=f"a{i}") for i in range(5))
        await until(lambda: _folded(ep) == 5)
        await _health(client, 200)
        r.delete(stream)
        r.set(stream, "not a stream")
        reasons: list[str] = []
        body = await _health(client, 503)
        assert body["status"] == "degraded"
        prefix = f"event source redis:{stream} cannot read"
        with anyio.fail_after(10):  # the delete, then the new key's first refused read
            while not any(x.startswith(prefix) and "WRONGTYPE" in x for x in reasons):
                await anyio.sleep(0.05)
                reasons, alerts = await _state(client)
        assert alerts == {f"redis:{stream}": "firing"}
        fams = families((await client.get("/metrics")).text)
        assert fams["streammetrics_redis_server_errors"].samples[0].value >= 1
        assert fams["streammetrics_redis_up"].samples[0].value == 0
        r.delete(stream)
        await until(lambda: r.exists(stream) == 1)  # the group made again, with its stream
        with EventPublisher(server.url, stream, batch_size=10) as pub:
            pub.publish_many(Event("svc", "processed", id=f"b{i}") for i in range(5))
        await until(lambda: _folded(ep) == 10)
        body = await _health(client, 200)
        await anyio.sleep(0.1)  # the next tick
        reasons, alerts = await _state(client)
        assert not any("event source" in x for x in reasons), reasons
        assert alerts == {f"redis:{stream}": "resolved"}


async def test_undecodable_entries_are_dead_lettered_acknowledged_counted_and_capped(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    r.config_set("stream-node-max-entries", 10)  # so that MAXLEN ~ trims close to the cap
    good = encode_events([Event("svc", "processed")], "msgpack")
    bad: list[dict[str, bytes]] = [
        {"msgpack": b"\xc1"},  # not MessagePack
        {"json": b'{"events": ['},  # cut short
        {"other": b"x"},  # no events field
    ]
    ids = []
    for k in range(60):
        ids.append(r.xadd(stream, bad[k % 3]))
        r.xadd(stream, {"msgpack": good})
    async with (
        consumer(server, stream, dead_letter_maxlen=20) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5) as client,
    ):
        await until(lambda: _folded(ep) == 60)
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)  # none left pending
        await until(lambda: ep.redis is not None and ep.redis.statistics().dead_letters == 60)
        await anyio.sleep(0.1)  # the next tick's collection
        text = (await client.get("/metrics")).text
        assert (await client.get("/health")).status_code == 200  # decoded the rest
    fams = families(text)
    assert fams["streammetrics_redis_dead_letters"].samples[0].value == 60
    assert by_label(fams["streammetrics_events_rejected"], "reason", "_total") == {"malformed": 60}
    dead = r.xrange(f"{stream}:dead")
    assert 20 <= len(dead) <= 30  # capped at about dead_letter_maxlen: MAXLEN ~
    _id, last = dead[-1]
    assert last[b"dead_id"] == ids[-1]  # the newest kept, with where it came from
    assert last[b"other"] == b"x"  # the entry's own fields, as they were
    assert b"no msgpack or json field" in last[b"dead_reason"]
    assert (last[b"dead_group"], last[b"dead_consumer"]) == (b"g", b"c1")
    reasons = {e[1][b"dead_id"]: e[1][b"dead_reason"] for e in dead}
    assert any(b"$" in why for why in reasons.values())  # decode errors name the path


async def test_idle_consumers_are_removed_once_their_pending_entries_are_claimed(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish_many(Event("svc", "processed", id=f"e{i}") for i in range(40))
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "crashed", {stream: ">"}, count=2)  # and never acknowledged
    r.xgroup_createconsumer(stream, "g", "never-read")
    async with (
        consumer(
            server, stream, claim_idle_s=0.2, claim_interval_s=0.05, consumer_idle_s=0.3
        ) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5) as client,
    ):
        assert ep.redis is not None
        await until(lambda: _folded(ep) == 40)
        await until(lambda: ep.redis is not None and ep.redis.statistics().removed_consumers == 2)
        assert [c["name"] for c in r.xinfo_consumers(stream, "g")] == [b"c1"]
        st = ep.redis.statistics()
        assert (st.claimed, st.removed_consumers) == (2, 2)
        assert r.xpending(stream, "g")["pending"] == 0
        await anyio.sleep(0.1)
        fams = families((await client.get("/metrics")).text)
        assert fams["streammetrics_redis_removed_consumers"].samples[0].value == 2


async def test_a_consumer_holding_pending_entries_is_never_removed(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    """Removing it would drop its entries from the pending list, never to be read again:
    only consumers with nothing pending go, however long idle."""
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish_many(Event("svc", "processed", id=f"e{i}") for i in range(20))
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "holding", {stream: ">"}, count=1)
    r.xgroup_createconsumer(stream, "g", "empty")
    # claim and removal far off: the test calls the removal itself
    async with consumer(server, stream, claim_idle_s=600, claim_interval_s=600) as ep:
        assert ep.redis is not None
        await until(lambda: _folded(ep) == 10)  # the entry "holding" read is not ours
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await ep.redis.remove_idle_consumers(client, 0) == ["empty"]
        finally:
            await client.aclose()
        names = sorted(c["name"] for c in r.xinfo_consumers(stream, "g"))
        assert names == [b"c1", b"holding"]
        assert r.xpending(stream, "g")["pending"] == 1

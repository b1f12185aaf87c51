"""The Redis Streams consumer group source through a real redis-server, in this process:
what is published is folded and acknowledged, lag is a figure, entries of a crashed
consumer are taken back, dedup, bad entries counted once, Redis going away and back.
Fails (not skips) without redis-server: CI installs it."""

from __future__ import annotations

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
from streammetrics.errors import TransportError
from streammetrics.judge.alerts.figures import FigureReader
from streammetrics.model.events import encode_events
from streammetrics.transports.redis_publisher import AsyncEventPublisher, EventPublisher
from tests.support.endpoints import redis_source, running
from tests.support.exposition import by_label, families
from tests.support.servers import RedisServer, free_port
from tests.support.tools import need
from tests.support.waiting import until


def _source(server: RedisServer, stream: str, **kw: Any) -> dict[str, Any]:
    return redis_source(server.url, stream, **kw)


def consumer(
    server: RedisServer, stream: str, **kw: Any
) -> AbstractAsyncContextManager[MetricsEndpoint]:
    return running(tick_s=0.05, source=_source(server, stream, **kw))


def _totals(ep: MetricsEndpoint) -> dict[str, tuple[int, int]]:
    snap = ep.aggregator.figures()
    return {
        k: (c.items_processed, c.errors_encountered)
        for k, c in snap.detailed_components.items()
        if k != "metrics"
    }


def _folded(ep: MetricsEndpoint) -> int:
    return sum(p + e for p, e in _totals(ep).values())


@pytest.mark.anyio
async def test_published_events_are_folded_acknowledged_and_lag_is_a_figure(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    expected: dict[str, tuple[int, int]] = {}
    with EventPublisher(server.url, stream, batch_size=100) as pub:
        for i in range(1000):
            name, failed = f"svc{i % 4}", i % 7 == 0
            pub.publish(Event(name, "error" if failed else "processed"))
            p, e = expected.get(name, (0, 0))
            expected[name] = (p + (not failed), e + failed)
    assert pub.statistics().entries == 10
    async with consumer(server, stream) as ep:
        assert ep.redis is not None
        await until(lambda: _folded(ep) == 1000)
        assert _totals(ep) == expected
        await until(lambda: ep.redis is not None and ep.redis.statistics().lag == 0)
        groups = r.xinfo_groups(stream)
        assert groups[0]["pending"] == 0  # every entry acknowledged
        st = ep.redis.statistics()
        assert (st.entries, st.events, st.pending, st.connected) == (10, 1000, 0, True)
        # the stream is a stream of the endpoint, with its lag, and /metrics says so
        snap = ep.aggregator.figures()
        s = snap.streaming.streams[f"redis:{stream}"]
        assert (s.total_messages, s.consumer_lag, s.to_component) == (1000, 0, "metrics")
        await anyio.sleep(0.06)
        async with httpx.AsyncClient() as client:
            text = (await client.get(ep.url + "/metrics")).text
        fams = families(text)
        labels = {"stream": stream, "group": "g"}

        def value(name: str, sample: str) -> float:
            return next(s.value for s in fams[name].samples if s.name == sample)

        assert fams["streammetrics_redis_consumer_lag"].samples[0].labels == labels
        assert value("streammetrics_redis_consumer_lag", "streammetrics_redis_consumer_lag") == 0
        assert value("streammetrics_redis_events", "streammetrics_redis_events_total") == 1000
        assert value("streammetrics_redis_up", "streammetrics_redis_up") == 1
        check = await anyio.run_process(
            [need("promtool"), "check", "metrics"], input=text.encode(), check=False
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode()


@pytest.mark.anyio
async def test_lag_feeds_the_consumer_lag_alert(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    # A group that exists but whose consumer is too slow: entries pile up unread.
    for _ in range(30):
        r.xadd(stream, {"msgpack": encode_events([Event("svc", "processed")], "msgpack")})
    r.xgroup_create(stream, "g", id="0")
    ep = MetricsEndpoint(
        name="metrics",
        port=0,
        alerts=[
            {"name": "Behind", "expr": "consumer_lag > 20", "scope": "stream", "level": "critical"}
        ],
        source=_source(server, stream, count=1),
    )
    # Measure the lag before the consumer reads anything: no run(), just the group's state.
    assert ep.redis is not None
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await ep.redis._read_lag(client)
    finally:
        await client.aclose()
    ep.aggregator.register_stream(
        ep.redis.key, to_component="metrics", stream_name=stream, lag=ep.redis.lag
    )
    snap = ep.judge.judge(ep.aggregator.figures())
    firing = {a.name: a for a in snap.alerts}
    assert firing["Behind"].component == f"redis:{stream}"
    assert firing["Behind"].value == 30
    # the built-in rule reads the same figure
    figures = FigureReader().read(snap)
    assert figures["stream"][f"redis:{stream}"]["consumer_lag"] == 30


@pytest.mark.anyio
async def test_a_restarted_consumer_takes_back_its_own_unacknowledged_entries(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish_many(Event("svc", "processed", id=f"e{i}") for i in range(50))
    # consumer c1 read everything and died before acknowledging (its crash)
    r.xgroup_create(stream, "g", id="0")
    got = r.xreadgroup("g", "c1", {stream: ">"}, count=3)
    assert len(got[0][1]) == 3
    assert r.xpending(stream, "g")["pending"] == 3
    async with consumer(server, stream) as ep:
        assert ep.redis is not None
        source = ep.redis
        # The source counts an entry once its XACK is answered, after the events fold.
        await until(lambda: _folded(ep) == 50 and source.statistics().entries >= 5)
        st = source.statistics()
        assert (st.recovered, st.entries) == (3, 5)
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)


@pytest.mark.anyio
async def test_entries_of_a_dead_consumer_are_claimed_after_the_idle_time(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish_many(Event("svc", "processed", id=f"e{i}") for i in range(40))
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "dead", {stream: ">"}, count=2)  # and never acknowledged
    async with consumer(server, stream, claim_idle_s=0.3, claim_interval_s=0.05) as ep:
        await until(lambda: _folded(ep) == 20)  # the two others: not yet idle long enough
        await until(lambda: _folded(ep) == 40)
        assert ep.redis is not None
        assert ep.redis.statistics().claimed == 2
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)
        consumers = {c["name"]: c["pending"] for c in r.xinfo_consumers(stream, "g")}
        assert consumers == {b"dead": 0, b"c1": 0}


@pytest.mark.anyio
async def test_a_repeated_event_id_folds_once_and_bad_entries_are_counted_not_redelivered(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    evs = [Event("svc", "processed", id=f"e{i}") for i in range(10)]
    async with AsyncEventPublisher(server.url, stream, batch_size=10) as pub:
        await pub.publish_many(evs)
        await pub.publish_many(evs[5:])  # a producer's retry: five ids again
        await pub.flush()
    r.xadd(stream, {"msgpack": b"\xc1"})  # not MessagePack
    r.xadd(stream, {"other": b"x"})  # no events field
    r.xadd(stream, {"json": b'[{"component": "svc", "kind": "processed", "id": "j1"}]'})
    async with consumer(server, stream) as ep:
        await until(lambda: ep.redis is not None and ep.redis.statistics().entries == 5)
        assert _totals(ep) == {"svc": (11, 0)}
        assert ep.aggregator.statistics().rejected == {"duplicate": 5, "malformed": 2}
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)


@pytest.mark.anyio
async def test_entries_without_events_or_trimmed_away_are_rejections_the_intake_counts(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    """The consumer reports what it cannot fold through the intake, as HTTP ingest does:
    the intake's figures and the rejected counter agree."""
    body = encode_events([Event("svc", "processed")], "msgpack")
    r.xadd(stream, {"other": b"x"})  # no events field
    r.xadd(stream, {"msgpack": body})
    gone = r.xadd(stream, {"msgpack": body})
    r.xgroup_create(stream, "g", id="0")
    r.xreadgroup("g", "c1", {stream: ">"})  # c1 read all three, and died
    r.xdel(stream, gone)  # trimmed away while pending
    async with consumer(server, stream) as ep:
        await until(lambda: ep.redis is not None and ep.redis.statistics().entries == 3)
        assert ep.redis is not None
        assert (ep.redis.statistics().recovered, ep.redis.statistics().trimmed) == (3, 1)
        assert ep.aggregator.statistics().rejected == {"malformed": 1, "trimmed": 1}
        st = ep.intake.statistics()
        assert (st.bodies, st.unreadable, st.trimmed, st.rejected, st.accepted) == (3, 1, 1, 2, 1)
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)


@pytest.mark.anyio
async def test_an_event_with_a_non_utf8_string_is_rejected_alone_from_its_entry(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    good = encode_events([Event("svc", "processed")], "msgpack")[1:]  # the event, unlisted
    bad = b"\x82\xa9component\xa2\xff\xfe\xa4kind\xa9processed"
    r.xadd(stream, {"msgpack": b"\x93" + good + bad + good})
    r.xadd(stream, {"json": b'[{"component": "svc", "kind": "processed", "detail": "\xc3\x28"}]'})
    async with consumer(server, stream) as ep:
        await until(lambda: ep.redis is not None and ep.redis.statistics().entries == 2)
        assert _totals(ep) == {"svc": (2, 0)}
        assert ep.aggregator.statistics().rejected == {"malformed": 2}
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)


@pytest.mark.anyio
async def test_a_deeply_nested_entry_is_counted_acknowledged_and_never_read_again(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    """100,000 levels would exhaust the decoder's recursion: the entry is a malformed
    rejection like any other, acknowledged, and the consumer goes on with the next ones;
    a restarted consumer does not find it pending."""
    deep = {"msgpack": b"\x91" * 100_000 + b"\xc0"}
    r.xadd(stream, deep)
    r.xadd(stream, {"msgpack": encode_events([Event("svc", "processed", id="a")], "msgpack")})
    r.xadd(stream, {"json": b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"})
    r.xadd(stream, deep)
    async with consumer(server, stream) as ep:
        assert ep.redis is not None
        await until(lambda: ep.redis is not None and ep.redis.statistics().entries == 4)
        assert _totals(ep) == {"svc": (1, 0)}
        assert ep.aggregator.statistics().rejected == {"malformed": 3}
        await until(lambda: r.xpending(stream, "g")["pending"] == 0)
        with EventPublisher(server.url, stream, batch_size=10) as pub:  # still consuming
            pub.publish_many(Event("svc", "processed") for _ in range(10))
        await until(lambda: _folded(ep) == 11)
        await anyio.sleep(0.1)  # the next tick's render
        async with httpx.AsyncClient(base_url=ep.url) as client:
            assert (await client.get("/health")).status_code == 200
            text = (await client.get("/metrics")).text
        fams = families(text)
        rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
        assert rejected == {"malformed": 3}
    r.xadd(stream, {"msgpack": encode_events([Event("later", "processed")], "msgpack")})
    async with consumer(server, stream) as ep:
        assert ep.redis is not None
        source = ep.redis
        # an entry is folded before it is acknowledged and counted: wait for the count
        await until(lambda: _folded(ep) == 1 and source.statistics().entries >= 1)
        st = source.statistics()
        assert (st.recovered, st.entries) == (0, 1)
        assert _totals(ep) == {"later": (1, 0)}
        assert ep.aggregator.statistics().rejected == {}


@pytest.mark.anyio
async def test_a_consumer_survives_redis_going_away_and_coming_back(
    tmp_path: Path, stream: str
) -> None:
    srv = RedisServer(tmp_path)
    port = srv.port
    try:
        async with consumer(srv, stream, reconnect_max_s=0.1) as ep:
            assert ep.redis is not None
            with EventPublisher(srv.url, stream, batch_size=10) as pub:
                pub.publish_many(Event("svc", "processed") for _ in range(10))
            await until(lambda: _folded(ep) == 10)
            srv.stop()  # persistence off: the stream and the group are gone with it
            await until(lambda: ep.redis is not None and not ep.redis.statistics().connected)
            srv = RedisServer(tmp_path, port=port)
            with EventPublisher(srv.url, stream, batch_size=10) as pub:
                pub.publish_many(Event("svc", "processed") for _ in range(10))
            await until(lambda: _folded(ep) == 20)  # group made again, entries read
            st = ep.redis.statistics()
            assert st.connected and st.reconnects >= 1
    finally:
        srv.stop()


@pytest.mark.anyio
async def test_an_unreachable_redis_stops_the_start_naming_it_without_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    ep = MetricsEndpoint(
        name="metrics", port=0, source={"redis": {"url": url, "connect_timeout_s": 1}}
    )
    with pytest.RaisesGroup(TransportError, flatten_subgroups=True) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(ep.run)
    err: BaseException = info.value
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    text = str(err)
    assert "'metrics'" in text and "streammetrics:events" in text
    assert "user:***@127.0.0.1" in text and "s3cret" not in text

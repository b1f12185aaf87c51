"""The built-in components, run for real: blueprints through a Harness, items through
memory streams, SQLite files on disk and HTTP on a loopback port."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import parse_blueprint
from streammetrics.components.api import APIEndpoint
from streammetrics.components.controller import Controller
from streammetrics.components.processor import StreamProcessor
from streammetrics.components.source import Source
from streammetrics.components.store import Store
from streammetrics.errors import BlueprintError, PortInUseError
from streammetrics.harness import Harness
from streammetrics.snapshot import Figures
from tests.support.harness import running, until

pytestmark = pytest.mark.anyio


def stopped(agg: Aggregator, *names: str) -> Callable[[], bool]:
    """True once each of ``names`` reported ``stopped`` (a finished pipeline has drained)."""

    def check() -> bool:
        comps = agg.figures().detailed_components
        return all(n in comps and comps[n].status == "stopped" for n in names)

    return check


def snapshot(harness: Harness, agg: Aggregator) -> Figures:
    harness.bus.flush()
    return agg.figures()


def rows(db: Path, table: str = "items") -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return [msgspec.json.decode(b) for (b,) in conn.execute(f"SELECT body FROM {table}")]
    finally:
        conn.close()


def pipeline(db: Path, source: str, processor: str, n_bindings_buffer: int = 1000) -> str:
    return f"""
system:
  name: pipeline
  components:
    - {{name: src, type: Source, config: {source}}}
    - {{name: proc, type: StreamProcessor, config: {processor}}}
    - {{name: store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: src, to_component: proc, buffer: {n_bindings_buffer}}}
    - {{from_component: proc, to_component: store, stream_name: kept}}
"""


async def test_source_to_store_counts_every_item(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    yaml_text = pipeline(db, "{rate: 50000, batch: 250, limit: 1000}", "{variant: map}", 64)
    async with running(yaml_text) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        store = harness.components["store"]
        assert isinstance(store, Store)
        assert store.statistics().rows == 1000
    stored = rows(db)
    assert len(stored) == 1000
    assert [r["id"] for r in stored] == list(range(1000))
    assert all(r["processed_by"] == "proc" for r in stored)
    comps = snap.detailed_components
    assert comps["src"].items_processed == 1000
    assert comps["proc"].items_processed == 1000
    assert comps["proc"].errors_encountered == 0
    assert comps["store"].items_processed == 1000
    streams = snap.streaming.streams
    assert streams["src->proc:input"].total_messages == 1000
    assert streams["proc->store:kept"].total_messages == 1000


async def test_error_ratio_fails_exactly_that_fraction(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    src = "{rate: 50000, batch: 500, limit: 1000, error_ratio: 0.07, seed: 3}"
    async with running(pipeline(db, src, "{variant: map}")) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        source = harness.components["src"]
        assert isinstance(source, Source)
        assert source.statistics().failing == 70
    proc = snap.detailed_components["proc"]
    assert proc.errors_encountered == 70
    assert proc.items_processed == 930
    assert proc.last_error == "ItemFailed: item marked to fail"
    assert len(rows(db)) == 930
    assert snap.streaming.streams["src->proc:input"].total_messages == 1000
    assert snap.streaming.streams["proc->store:kept"].total_messages == 930


async def test_source_is_paced_and_observes_its_latency() -> None:
    bp = """
system:
  name: s
  components:
    - {name: src, type: Source,
       config: {rate: 2000, batch: 20, limit: 200, latency_ms: 3, latency_jitter_ms: 1}}
"""
    t0 = anyio.current_time()
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src"))
        elapsed = anyio.current_time() - t0
        src = snapshot(harness, agg).detailed_components["src"]
    assert src.items_processed == 200
    assert src.status == "stopped"
    assert src.latency.count == 200
    assert src.latency.p50 is not None and 0.001 <= src.latency.p50 <= 0.005
    assert 0.09 <= elapsed < 2.0, elapsed  # 200 items at 2000/s take 0.1 s, not no time


class JumpingClock:
    """A Source's clock and sleep in one: time moves only when the Source sleeps, by what
    it asked for, plus a stall of ``stall_s`` on the first sleep that ends at or past
    ``stall_at`` (the event loop stopped: a GC pause, a slow render, SIGSTOP).

    Each sleep first notes (time, items sent so far). Between two sleeps the clock stands
    still, so every item was sent at the time noted at the next sleep: ``sent_by(t)`` is
    exact."""

    def __init__(
        self, source: Source, *, t0: float, stall_at: float | None, stall_s: float
    ) -> None:
        self.source = source
        self.t = t0
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.woke: float | None = None
        """When the Source woke from the stall."""
        self.trace: list[tuple[float, int]] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.trace.append((self.t, self.source.statistics().sent))
        self.t += seconds
        if self.stall_at is not None and self.t >= self.stall_at:
            self.t += self.stall_s
            self.stall_at = None
            self.woke = self.t
        await anyio.lowlevel.checkpoint()

    def sent_by(self, t: float) -> int:
        """Items sent at or before ``t``."""
        return max((n for at, n in self.trace if at <= t), default=0)

    def per_second(self, start: float, seconds: int) -> list[int]:
        """Items sent in each second after ``start`` (excluding what went at ``start``)."""
        return [self.sent_by(start + k + 1) - self.sent_by(start + k) for k in range(seconds)]


async def run_on_jumping_clock(
    rate: float, batch: int, limit: int, stall_at: float | None = None, stall_s: float = 0
) -> JumpingClock:
    """A Source of ``limit`` items run by a real harness on a ``JumpingClock`` that starts
    at 1000.0 and stalls ``stall_s`` seconds ``stall_at`` seconds in."""
    bp = f"""
system:
  name: paced
  components:
    - {{name: src, type: Source, config: {{rate: {rate}, batch: {batch}, limit: {limit}}}}}
"""
    harness = Harness(parse_blueprint(bp), flush_interval=0.02)
    src = harness.components["src"]
    assert isinstance(src, Source)
    t0 = 1000.0  # far from 0, as a monotonic clock is: float rounding shows
    at = None if stall_at is None else t0 + stall_at
    clock = JumpingClock(src, t0=t0, stall_at=at, stall_s=stall_s)
    src.clock, src.sleep = clock, clock.sleep
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        await until(lambda: src.statistics().done)
        harness.stop()
    assert src.statistics().sent == limit
    return clock


async def test_source_runs_at_its_rate_on_a_clock_that_only_moves_when_it_sleeps() -> None:
    clock = await run_on_jumping_clock(rate=200, batch=10, limit=1100)
    assert clock.woke is None
    counts = clock.per_second(1000.0, 5)
    assert all(190 <= n <= 210 for n in counts), counts
    assert clock.sent_by(1005.0) == 1000  # exactly on schedule: floor(5 s * 200/s)


@pytest.mark.parametrize(
    ("rate", "batch", "stall_s"), [(200, 10, 5.0), (5000, 250, 2.5), (200, 10, 60.0)]
)
async def test_source_is_back_at_its_rate_right_after_the_clock_jumps(
    rate: int, batch: int, stall_s: float
) -> None:
    max_debt = max(batch, rate)  # one second's worth
    limit = 3 * rate + max_debt + 4 * rate
    clock = await run_on_jumping_clock(rate, batch, limit, stall_at=3.0, stall_s=stall_s)
    assert clock.woke == pytest.approx(1000.0 + 3.0 + stall_s)
    before = clock.per_second(1000.0, 3)
    assert all(rate - batch <= n <= rate + batch for n in before), before
    # Sent at the instant it woke: the catch-up, at most one second's worth.
    caught_up = clock.sent_by(clock.woke) - clock.sent_by(clock.woke - 1e-6)
    assert max_debt - batch <= caught_up <= max_debt, caught_up
    # Then the configured rate again, from the first second on.
    after = clock.per_second(clock.woke, 3)
    assert all(rate - batch <= n <= rate + batch for n in after), after


async def test_source_rate_recovers_in_real_time_after_the_loop_is_blocked() -> None:
    rate, batch = 200, 10
    bp = f"""
system:
  name: paced
  components:
    - {{name: src, type: Source, config: {{rate: {rate}, batch: {batch}}}}}
    - {{name: sink, type: StreamProcessor}}
  bindings:
    - {{from_component: src, to_component: sink}}
"""
    async with running(bp) as (harness, _agg):
        src = harness.components["src"]
        assert isinstance(src, Source)

        def sent() -> int:
            return src.statistics().sent

        await anyio.sleep(0.2)
        t0, n0 = time.monotonic(), sent()
        await anyio.sleep(0.5)
        t1, n1 = time.monotonic(), sent()
        assert abs((n1 - n0) - rate * (t1 - t0)) <= rate / 4, (n1 - n0, t1 - t0)

        stall: dict[str, float] = {}

        async def block_the_loop() -> None:
            stall["sent"] = sent()
            time.sleep(1.5)  # noqa: ASYNC251 - the point: nothing else runs meanwhile
            stall["end"] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(block_the_loop)
        await anyio.sleep(0.25)
        t2, n2 = time.monotonic(), sent()
        # The catch-up (a second's worth of the 1.5 s owed), then the rate.
        caught_up = n2 - stall["sent"] - rate * (t2 - stall["end"])
        assert rate - 2 * batch <= caught_up <= rate + 2 * batch, caught_up
        await anyio.sleep(1.0)
        t3, n3 = time.monotonic(), sent()
        assert abs((n3 - n2) - rate * (t3 - t2)) <= rate / 4, (n3 - n2, t3 - t2)


async def test_source_items_are_reproducible(tmp_path: Path) -> None:
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    cfg = "{rate: 50000, batch: 100, limit: 50, seed: 11, routes: [a, b], error_ratio: 0.2}"
    bp = f"""
system:
  name: twins
  components:
    - {{name: src1, type: Source, config: {cfg}}}
    - {{name: src2, type: Source, config: {cfg}}}
    - {{name: tag1, type: StreamProcessor}}
    - {{name: tag2, type: StreamProcessor}}
    - {{name: store1, type: Store, config: {{path: "{one}"}}}}
    - {{name: store2, type: Store, config: {{path: "{two}"}}}}
  bindings:
    - {{from_component: src1, to_component: tag1}}
    - {{from_component: src2, to_component: tag2}}
    - {{from_component: tag1, to_component: store1}}
    - {{from_component: tag2, to_component: store2}}
"""
    async with running(bp) as (_harness, agg):
        await until(stopped(agg, "store1", "store2"))
    first = rows(one)
    assert len(first) == 40  # every fifth item failed on the way
    assert [{**r, "processed_by": "tag2"} for r in first] == rows(two)
    assert [r["route"] for r in first[:4]] == ["a", "b", "a", "b"]
    assert set(first[0]) == {"id", "value", "route", "fail", "processed_by"}


async def test_filter_drops_falsy_items_and_counts_them(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    src = "{rate: 50000, batch: 100, limit: 300, routes: [keep, '', keep]}"
    async with running(pipeline(db, src, "{variant: filter, field: route}")) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        proc = harness.components["proc"]
        assert isinstance(proc, StreamProcessor)
        stats = proc.statistics()
    assert (stats.received, stats.emitted, stats.dropped) == (300, 200, 100)
    assert snap.detailed_components["proc"].items_processed == 300  # dropped still processed
    stored = rows(db)
    assert len(stored) == 200
    assert all(r["route"] == "keep" for r in stored)


@pytest.mark.parametrize(("n", "size"), [(95, 10), (100, 10), (7, 50)])
async def test_windowing_emits_ceil_n_over_size_windows(tmp_path: Path, n: int, size: int) -> None:
    db = tmp_path / "windows.db"
    src = f"{{rate: 50000, batch: 100, limit: {n}}}"
    proc = f"{{variant: windowing, window_size: {size}}}"
    async with running(pipeline(db, src, proc)) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
    windows = rows(db)
    assert len(windows) == math.ceil(n / size)
    assert [w["count"] for w in windows] == [len(w["items"]) for w in windows]
    assert [i["id"] for w in windows for i in w["items"]] == list(range(n))  # in order
    assert windows[-1]["count"] == n - size * (len(windows) - 1)  # the flushed partial
    assert snap.streaming.streams["proc->store:kept"].total_messages == len(windows)
    assert snap.detailed_components["proc"].items_processed == n


async def test_time_window_closes_while_input_stays_open(tmp_path: Path) -> None:
    db = tmp_path / "windows.db"
    bp = f"""
system:
  name: w
  components:
    - {{name: api, type: APIEndpoint, config: {{port: 0}}}}
    - {{name: win, type: StreamProcessor,
       config: {{variant: windowing, window_size: null, window_seconds: 0.1}}}}
    - {{name: store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: api, to_component: win}}
    - {{from_component: win, to_component: store}}
"""
    async with running(bp) as (harness, _agg):
        port = harness.listening[0].port
        store = harness.components["store"]
        assert isinstance(store, Store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/items/batch", json=[1, 2, 3])
            assert r.status_code == 202
            await until(lambda: store.statistics().rows == 1, within=2.0)
            r = await client.post("/items", json=4)
            assert r.status_code == 202
            await until(lambda: store.statistics().rows == 2, within=2.0)
    assert [w["items"] for w in rows(db)] == [[1, 2, 3], [4]]


async def test_router_routes_by_key_then_round_robin(tmp_path: Path) -> None:
    orders, audit = tmp_path / "orders.db", tmp_path / "audit.db"
    bp = f"""
system:
  name: r
  components:
    - {{name: src, type: Source,
       config: {{rate: 50000, batch: 100, limit: 40, routes: [orders, orders, audit_store, x]}}}}
    - {{name: router, type: Controller, config: {{variant: router, route_key: route}}}}
    - {{name: orders_store, type: Store, config: {{path: "{orders}"}}}}
    - {{name: audit_store, type: Store, config: {{path: "{audit}"}}}}
  bindings:
    - {{from_component: src, to_component: router}}
    - {{from_component: router, to_component: orders_store, stream_name: orders}}
    - {{from_component: router, to_component: audit_store, stream_name: audit}}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "router", "orders_store", "audit_store"))
        snap = snapshot(harness, agg)
        router = harness.components["router"]
        assert isinstance(router, Controller)
        stats = router.statistics()
    # 20 "orders" by stream name, 10 "audit_store" by component name, 10 "x" round-robin
    assert (stats.by_key, stats.round_robin, stats.unroutable) == (30, 10, 0)
    assert stats.routed == {"router->orders_store:orders": 25, "router->audit_store:audit": 15}
    assert {r["route"] for r in rows(orders)} == {"orders", "x"}
    assert {r["route"] for r in rows(audit)} == {"audit_store", "x"}
    assert len(rows(orders)) == 25 and len(rows(audit)) == 15
    streams = snap.streaming.streams
    assert streams["router->orders_store:orders"].total_messages == 25
    assert streams["router->audit_store:audit"].total_messages == 15
    assert snap.detailed_components["router"].items_processed == 40


async def test_store_with_outputs_passes_items_on() -> None:
    bp = """
system:
  name: chain
  components:
    - {name: src, type: Source, config: {rate: 50000, batch: 50, limit: 120, error_ratio: 0.25}}
    - {name: first, type: Store}
    - {name: second, type: Store, config: {table: copies}}
  bindings:
    - {from_component: src, to_component: first}
    - {from_component: first, to_component: second}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "first", "second"))
        snap = snapshot(harness, agg)
        first, second = harness.components["first"], harness.components["second"]
        assert isinstance(first, Store) and isinstance(second, Store)
        assert first.statistics().rows == 90
        assert first.statistics().rejected == 30
        assert second.statistics().rows == 90
    assert snap.detailed_components["first"].errors_encountered == 30
    assert snap.streaming.streams["first->second:input"].total_messages == 90


async def test_store_commits_in_batches_and_closes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    bp = f"""
system:
  name: s
  components:
    - {{name: src, type: Source, config: {{rate: 100000, batch: 1000, limit: 3000}}}}
    - {{name: store, type: Store, config: {{path: "{db}", table: events, max_batch: 400}}}}
  bindings:
    - {{from_component: src, to_component: store, buffer: 2000}}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "store"))
        store = harness.components["store"]
        assert isinstance(store, Store)
        stats = store.statistics()
        assert not store.statistics().open  # closed in run()'s finally
    assert stats.rows == 3000
    assert stats.batches < 3000  # many items per commit, each batch at most 400
    assert stats.batches >= 3000 / 400
    assert len(rows(db, "events")) == 3000


async def test_store_that_cannot_open_stops_the_start(tmp_path: Path) -> None:
    bp = f"""
system:
  name: s
  components:
    - {{name: store, type: Store, config: {{path: "{tmp_path}/missing/dir/s.db"}}}}
"""
    harness = Harness(parse_blueprint(bp))
    with pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(harness.run)
    assert info.group_contains(sqlite3.OperationalError)


async def test_api_endpoint_items_reach_a_store(tmp_path: Path) -> None:
    db = tmp_path / "api.db"
    bp = f"""
system:
  name: api
  components:
    - {{name: app_server, type: FastAPIEndpoint, config: {{port: 0, max_body_bytes: 1000}}}}
    - {{name: data_store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: app_server, to_component: data_store, stream_name: input}}
"""
    async with running(bp) as (harness, agg):
        (where,) = harness.listening
        assert (where.component, where.host) == ("app_server", "127.0.0.1")
        assert where.port > 0
        api = harness.components["app_server"]
        assert isinstance(api, APIEndpoint)
        store = harness.components["data_store"]
        assert isinstance(store, Store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.port}") as client:
            r = await client.get("/health")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            r = await client.post("/items", json={"route": "orders", "n": 1})
            assert (r.status_code, r.json()) == (202, {"accepted": 1})
            r = await client.post("/items", json=[1, 2])  # an array is one item here
            assert (r.status_code, r.json()) == (202, {"accepted": 1})
            r = await client.post("/items/batch", json=[{"n": 2}, "three", 4, None])
            assert (r.status_code, r.json()) == (202, {"accepted": 4})
            r = await client.post("/items", content=b'{"n": ')
            assert r.status_code == 400
            assert r.json()["error"] == "malformed JSON"
            r = await client.post("/items/batch", json={"not": "a list"})
            assert r.status_code == 400
            r = await client.post("/items", content=b"[" + b"1," * 600 + b"1]")
            assert r.status_code == 413
            await until(lambda: store.statistics().rows == 6)
        assert api.statistics().accepted == 6
        assert api.statistics().rejected == 3
        snap = snapshot(harness, agg)
    assert rows(db) == [{"route": "orders", "n": 1}, [1, 2], {"n": 2}, "three", 4, None]
    app = snap.detailed_components["app_server"]
    assert app.items_processed == 6
    assert app.errors_encountered == 3
    assert app.last_error is not None and "413" in app.last_error
    assert snap.streaming.streams["app_server->data_store:input"].total_messages == 6


async def test_api_endpoint_answers_503_when_downstream_is_stuck() -> None:
    bp = """
system:
  name: api
  components:
    - {name: api, type: APIEndpoint, config: {port: 0, send_timeout_s: 0.1}}
    - {name: slow, type: StreamProcessor, config: {work_ms: 10000}}
  bindings:
    - {from_component: api, to_component: slow, buffer: 1}
"""
    async with running(bp) as (harness, _agg):
        port = harness.listening[0].port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/items/batch", json=[1, 2, 3, 4])
        assert r.status_code == 503
        assert r.json()["detail"].startswith("accepted 2 of 4 items")


async def test_api_endpoint_on_a_busy_port_stops_the_start() -> None:
    async with running(
        "system: {name: a, components: [{name: one, type: APIEndpoint, config: {port: 0}}]}"
    ) as (first, _agg):
        port = first.listening[0].port
        bp = (
            "system: {name: b, components: "
            f"[{{name: two, type: APIEndpoint, config: {{port: {port}}}}}]}}"
        )
        second = Harness(parse_blueprint(bp))
        with pytest.raises(BaseExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                await tg.start(second.run)
        assert info.group_contains(PortInUseError)


@pytest.mark.parametrize(
    ("component", "path"),
    [
        ("{name: s, type: Store, config: {table: 'items; DROP'}}", "config.table"),
        ("{name: s, type: Source, config: {error_ratio: 1.5}}", "config.error_ratio"),
        ("{name: s, type: Source, config: {rate: 0}}", "config.rate"),
        ("{name: s, type: StreamProcessor, config: {variant: sort}}", "config.variant"),
        ("{name: s, type: Controller, config: {route_by: x}}", "config"),
        ("{name: s, type: APIEndpoint, config: {}}", "config"),
        ("{name: s, type: APIEndpoint, config: {port: 0, path: items}}", "config.path"),
        ("{name: s, type: APIEndpoint, config: {port: 0, path: /health}}", "config"),
        (
            "{name: s, type: StreamProcessor, "
            "config: {variant: windowing, window_size: null, window_seconds: null}}",
            "config",
        ),
    ],
)
def test_bad_configs_are_refused_with_their_path(component: str, path: str) -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(f"system: {{name: x, components: [{component}]}}")
    assert info.value.path.startswith(f"system.components[0].{path}")


def test_types_are_registered_under_blueprint_names() -> None:
    from streammetrics.components import component_types

    types = component_types()
    assert types["FastAPIEndpoint"] is types["APIEndpoint"] is APIEndpoint
    for cls in (APIEndpoint, Controller, StreamProcessor, Source, Store):
        assert types[cls.type_name] is cls


async def test_store_stores_what_it_is_given_and_counts_each_item() -> None:
    bp = "system: {name: s, components: [{name: store, type: Store}]}"
    async with running(bp) as (harness, agg):
        store = harness.components["store"]
        assert isinstance(store, Store)
        assert await store.store([{"n": 1}]) == [{"n": 1}]
        assert await store.store([{"n": 2, "fail": True}]) == []
        assert await store.store([{"n": 3}]) == [{"n": 3}]
        assert store.statistics().rows == 2
        comp = snapshot(harness, agg).detailed_components["store"]
    assert (comp.items_processed, comp.errors_encountered) == (2, 1)
    assert comp.last_error == "ItemFailed: item marked to fail"

"""The live feed behind ``GET /stream`` (Server-Sent Events), through a real server: one
snapshot per tick, heartbeats, connection limits, shutdown, the client's window, and one
encoding per tick however many clients."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.http.app import create_app
from streammetrics.http.dashboard import LIVE_ROUTES
from streammetrics.views.live import COLUMNS, LiveConfig, LiveFeed
from tests.support.http_app import FakeClock, running, seed, service_for

pytestmark = pytest.mark.anyio


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any], str]]:
    """(event, data, raw block) of each SSE block; comments come as ("comment", {}, text)."""
    buf = ""
    async for chunk in response.aiter_text():
        buf += chunk
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    yield "comment", {}, line
                elif ":" in line:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
            if "data" in fields:
                yield fields.get("event", "message"), json.loads(fields["data"]), block


async def test_stream_delivers_one_snapshot_per_tick_with_the_components() -> None:
    async with streammetrics.serve(name="live", port=0, tick_s=0.1) as ep:
        worker = ep.probe("worker")
        worker.processed(5, latency=0.003)
        snaps: list[dict[str, Any]] = []
        ids: list[int] = []
        async with (
            httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
            client.stream("GET", "/stream") as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "no-cache" in r.headers["cache-control"]
            with anyio.fail_after(5):
                async for event, data, block in sse_events(r):
                    if event != "snapshot":
                        continue
                    snaps.append(data)
                    ids.append(int(re.search(r"^id: (\d+)$", block, re.M)[1]))  # type: ignore[index]
                    worker.processed(1)
                    if len(snaps) == 4:
                        break
    assert ids == sorted(ids) and len(set(ids)) == 4
    cols = snaps[-1]["cols"]
    assert tuple(cols) == COLUMNS
    rows = {row[0]: dict(zip(cols, row, strict=True)) for row in snaps[-1]["comps"]}
    assert set(rows) == {"live", "worker"}
    assert rows["worker"]["items_processed"] >= 5
    assert rows["worker"]["breaker"] is None  # it has no circuit breaker
    assert snaps[-1]["status"] == "healthy" and snaps[-1]["name"] == "live"
    # Snapshots are at least a tick apart (the feed does not resend the same one).
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(snaps))


async def test_a_client_may_ask_for_fewer_snapshots_and_gets_heartbeats() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, dashboard={"heartbeat_s": 0.2})
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
        client.stream("GET", "/stream", params={"interval": "0.5"}) as r,
    ):
        times: list[float] = []
        comments = 0
        with anyio.fail_after(5):
            async for event, _data, _block in sse_events(r):
                if event == "snapshot":
                    times.append(time.monotonic())
                elif event == "comment":
                    comments += 1
                if len(times) == 3:
                    break
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.45, gaps  # throttled to the client's interval, not the 0.1 s tick
    assert comments >= 2  # heartbeats in between (every 0.2 s without a frame)


async def test_bad_stream_parameters_are_refused_clearly() -> None:
    async with (
        streammetrics.serve(name="m", port=0) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/stream", params={"interval": "soon"})
        assert r.status_code == 400
        assert "interval" in r.json()["detail"] and "'soon'" in r.json()["detail"]
        r = await client.get("/stream", params={"every": "1"})
        assert r.status_code == 400
        assert r.json()["detail"].startswith("unknown query parameter 'every'")


async def test_connection_limit_answers_503_and_a_gone_client_frees_its_slot() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, dashboard={"max_clients": 1})
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        async with client.stream("GET", "/stream") as first:
            assert first.status_code == 200
            await anext(first.aiter_bytes())
            second = await client.get("/stream")
            assert second.status_code == 503
            assert second.headers["retry-after"] == "5"
            body = second.json()
            assert body["error"] == "stream unavailable"
            assert "too many stream clients: 1 connected, the limit is 1" in body["detail"]
            assert "config.dashboard.max_clients" in body["detail"]
        # The first client hung up: the server notices and frees the slot.
        with anyio.fail_after(5):
            while ep.service.live.statistics().clients:  # noqa: ASYNC110 - polled, bounded
                await anyio.sleep(0.02)
        async with client.stream("GET", "/stream") as again:
            assert again.status_code == 200
        assert ep.service.live.statistics().refused == 1


async def test_shutdown_ends_every_stream_at_once() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, shutdown_timeout_s=10)
    events: list[str] = []
    endpoint_scope = anyio.CancelScope()

    async def run_endpoint(*, task_status: anyio.abc.TaskStatus[Any]) -> None:
        with endpoint_scope:
            await ep.run(task_status=task_status)

    async with anyio.create_task_group() as tg:
        await tg.start(run_endpoint)

        async def listen() -> None:
            async with (
                httpx.AsyncClient(base_url=ep.url, timeout=15.0) as client,
                client.stream("GET", "/stream") as r,
            ):
                async for event, _data, _block in sse_events(r):
                    events.append(event)
            events.append("closed")

        async with anyio.create_task_group() as clients:
            for _ in range(3):
                clients.start_soon(listen)
            with anyio.fail_after(5):
                while events.count("snapshot") < 3:  # noqa: ASYNC110 - polled, bounded
                    await anyio.sleep(0.02)
            t0 = time.monotonic()
            endpoint_scope.cancel()  # stop the endpoint only; the clients wait for their end
        stopped_in = time.monotonic() - t0
    assert events.count("shutdown") == 3 and events.count("closed") == 3
    # Far below the 10 s graceful-shutdown deadline: streams were ended, not waited out.
    assert stopped_in < 3.0, stopped_in


async def test_a_stopped_endpoint_tells_stream_clients_it_has_no_figures() -> None:
    feed = LiveFeed(LiveConfig(heartbeat_s=5), name="m", tick_s=0.05)
    feed.unavailable("no harness feeds metrics endpoint 'm'")
    frames = feed.connect()
    first = await anext(frames)
    assert first.startswith(b"retry: 3000\n")
    frame = await anext(frames)
    assert b"event: unavailable\n" in frame
    assert b'"detail":"no harness feeds metrics endpoint \'m\'"' in frame
    feed.close()
    assert b"event: shutdown" in await anext(frames)
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
    assert feed.statistics().clients == 0
    with pytest.raises(LookupError, match="shutting down"):
        feed.connect()


async def test_a_hundred_clients_cost_one_encoding_per_tick() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.2, dashboard={"max_clients": 100})
    got: list[int] = []
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(
            base_url=ep.url, timeout=10.0, limits=httpx.Limits(max_connections=200)
        ) as client,
    ):

        async def one() -> None:
            n = 0
            async with client.stream("GET", "/stream") as r:
                async for event, _data, _block in sse_events(r):
                    if event == "snapshot":
                        n += 1
                        if n == 2:
                            break
            got.append(n)

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(one)
    stats = ep.service.live.statistics()
    assert got == [2] * 100
    assert stats.frames_sent >= 200
    assert stats.encoded <= stats.published  # shared by every client, never per client
    assert stats.encoded < 30


async def _first_snapshot(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    async with client.stream("GET", "/stream", params=params) as r:
        assert r.status_code == 200
        with anyio.fail_after(5):
            async for event, data, _block in sse_events(r):
                if event == "snapshot":
                    return data
    raise AssertionError("the stream ended without a snapshot")


def _rows(frame: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row[0]: dict(zip(frame["cols"], row, strict=True)) for row in frame["comps"]}


async def test_the_window_of_the_component_figures_is_the_clients_choice() -> None:
    """Everything in the seeded system happened 20 s ago: inside the 60 s window health
    is judged over (the default), outside a 10 s one. Each frame says which window its
    rows cover and which one health was judged over, and the rows are the figures
    ``/components`` has for that window."""
    clock = FakeClock()
    service = service_for(seed(clock), clock)
    async with running(create_app(service, extra_route_handlers=LIVE_ROUTES)) as client:
        default = await _first_snapshot(client)
        by_window = {w: await _first_snapshot(client, window=w) for w in ("10s", "60s", "300s")}
        views = {
            w: (await client.get("/components", params={"window": w})).json()["components"]
            for w in ("10s", "60s", "300s")
        }
        health = (await client.get("/health")).json()
    assert (default["window_s"], default["health_window_s"]) == (60, 60)
    assert default["system"]["window_seconds"] == 60
    assert default["comps"] == by_window["60s"]["comps"]
    for w, frame in by_window.items():
        assert frame["window_s"] == int(w[:-1])
        assert frame["health_window_s"] == 60  # the reasons do not move with the columns
        assert frame["reasons"] == default["reasons"]
        for name, row in _rows(frame).items():
            fig = views[w][name]["windows"][w]
            assert row["items_per_second"] == pytest.approx(fig["items_per_second"], rel=1e-3)
            assert row["error_rate"] == pytest.approx(fig["error_rate"], rel=1e-3)
            if fig["p99"] is None:
                assert row["p99"] is None
            else:
                assert row["p99"] == pytest.approx(fig["p99"], rel=1e-3)
    api60, api10 = _rows(by_window["60s"])["task_api"], _rows(by_window["10s"])["task_api"]
    assert api60["items_per_second"] > 0 and api60["error_rate"] > 0
    assert api10["items_per_second"] == 0.0 and api10["error_rate"] == 0.0
    # The deductions of the frame are the ones /health gives, judged over the same 60 s.
    assert {r.split(" (-")[0] for r in default["reasons"]} == {
        f"{d['component']}: {d['reason']}" for d in health["reasons"]
    }
    # A breaker only where there is one: payments' is open, the others have none.
    assert {n: r["breaker"] for n, r in _rows(default).items()} == {
        "task_api": None,
        "task_store": None,
        "payments": "open",
    }
    # The default window asked for by name shares the default's encoding.
    assert service.live.statistics().encoded == 3


async def test_bad_window_on_the_stream_is_refused_clearly() -> None:
    async with (
        streammetrics.serve(name="m", port=0) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/stream", params={"window": "5s"})
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert "'window' must be one of 10s, 60s, 300s; got '5s'" in detail
        r = await client.get("/stream", params=[("window", "10s"), ("window", "60s")])
        assert r.status_code == 400
        assert "'window' given more than once" in r.json()["detail"]
        r = await client.get("/stream", params={"windw": "10s"})
        assert r.status_code == 400
        assert "accepts: interval, window" in r.json()["detail"]


def test_feed_refuses_a_window_it_has_no_figures_for() -> None:
    with pytest.raises(ValueError, match="window must be one of 10s, 60s, 300s; got '1h'"):
        LiveFeed().connect(window="1h")

"""Embedding: a MetricsEndpoint made in code, without a blueprint or a harness."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest

import streammetrics
from streammetrics import MetricsEndpoint, ProductionMetricsEndpoint
from streammetrics.blueprint import parse_blueprint
from streammetrics.bus import EventBus
from streammetrics.errors import ConfigError
from tests.support.paths import ROOT
from tests.support.process import Spawned

EXAMPLES = ROOT / "examples"


async def _poll_json(url: str, check: str, deadline_s: float = 5.0) -> dict[str, object]:
    """GET ``url`` until ``check`` (a component name) shows a count; bounded."""
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            body: dict[str, object] = (await client.get(url)).json()
            comps = body.get("detailed_components", {})
            assert isinstance(comps, dict)
            if comps.get(check, {}).get("items_processed"):
                return body
            assert time.monotonic() < deadline, body
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_endpoint_in_code_serves_what_its_probes_count() -> None:
    ep = MetricsEndpoint(name="embedded", port=0, tick_s=0.1)
    worker = ep.probe("worker")
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        for _ in range(7):
            worker.processed(latency=0.01)
        worker.error(detail="ValueError: bad item")
        body = await _poll_json(ep.url + "/metrics/json", "worker")
        tg.cancel_scope.cancel()
    w = body["detailed_components"]["worker"]  # type: ignore[index]
    assert w["items_processed"] == 7
    assert w["errors_encountered"] == 1
    assert w["last_error"] == "ValueError: bad item"
    # The endpoint lists itself, as it does in a blueprint.
    assert body["detailed_components"]["embedded"]["type"] == "MetricsEndpoint"  # type: ignore[index]


def test_probe_is_listed_before_its_first_count() -> None:
    ep = MetricsEndpoint(name="m", port=0)
    ep.probe("idle_worker")
    snap = ep.aggregator.figures()
    assert snap.detailed_components["idle_worker"].status == "registered"


def test_bad_keyword_names_the_setting_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=70000)
    assert info.value.path == "config.port"
    assert info.value.value == 70000
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=0, tick=1)
    assert info.value.path == "config.tick"
    assert "no setting 'tick'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="bad name!", port=0)
    assert info.value.path == "name"


def test_port_is_required() -> None:
    with pytest.raises(ConfigError, match="port"):
        MetricsEndpoint(name="m")


def test_url_before_listening_says_so() -> None:
    with pytest.raises(RuntimeError, match="not listening yet"):
        _ = MetricsEndpoint(name="m", port=0).url


# -- serve() / run() in anyio and asyncio programs ------------------------------------


@pytest.mark.anyio
async def test_serve_yields_a_listening_endpoint_and_stops_it() -> None:
    async with streammetrics.serve(name="svc", port=0, tick_s=0.1) as ep:
        assert isinstance(ep, MetricsEndpoint)
        url = ep.url
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(url + "/health")).status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2.0) as client:
            await client.get(url + "/health")


@pytest.mark.anyio
async def test_serve_takes_an_endpoint_or_keywords_not_both() -> None:
    with pytest.raises(TypeError, match="not both"):
        async with streammetrics.serve(MetricsEndpoint(port=0), port=0):
            pass


@pytest.mark.anyio
async def test_run_under_an_anyio_task_group_returns_the_endpoint_once_listening() -> None:
    async with anyio.create_task_group() as tg:
        ep = await tg.start(partial(streammetrics.serve_forever, name="svc", port=0))
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(ep.url + "/")).json()["endpoints"]["/dashboard"]
        tg.cancel_scope.cancel()


def test_run_as_a_plain_asyncio_task() -> None:
    async def main() -> dict[str, object]:
        ep = MetricsEndpoint(name="svc", port=0, tick_s=0.1)
        probe = ep.probe("job")

        @probe.timed
        async def job(i: int) -> int:
            await asyncio.sleep(0)
            if i == 3:
                raise ValueError("three")
            return i

        task = asyncio.create_task(streammetrics.serve_forever(ep))
        try:
            async with asyncio.timeout(5):
                while ep.port is None:  # noqa: ASYNC110 - no "listening" event to wait on
                    await asyncio.sleep(0.01)
            for i in range(5):
                with contextlib.suppress(ValueError):
                    await job(i)
            return await _poll_json(ep.url + "/metrics/json", "job")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    body = asyncio.run(main())
    job = body["detailed_components"]["job"]  # type: ignore[index]
    assert (job["items_processed"], job["errors_encountered"]) == (4, 1)
    assert job["last_error"] == "ValueError: three"
    assert job["latency"]["count"] == 5


# -- ProductionMetricsEndpoint ---------------------------------------------------------


@pytest.mark.anyio
async def test_production_endpoint_has_cors_and_a_rate_limit_by_default() -> None:
    ep = ProductionMetricsEndpoint(name="prod", port=0)
    assert ep.config.cors is not None and ep.config.rate_limit is not None
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/metrics/json", headers={"origin": "https://dash.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        # A burst well past the default bucket (100, refilled at 100/s) meets 429s.
        codes: list[int] = []

        async def hit() -> None:
            codes.append((await client.get("/alerts")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(hit)
        assert codes.count(429) > 0 and codes.count(200) >= 100, sorted(set(codes))


@pytest.mark.anyio
async def test_the_specifications_production_endpoint() -> None:
    production_metrics = ProductionMetricsEndpoint(
        name="prod_metrics",
        port=9090,
        enable_cors=True,  # For web dashboard access
    )
    cfg = production_metrics.config
    assert (production_metrics.name, cfg.port) == ("prod_metrics", 9090)
    assert cfg.cors is not None and cfg.cors.allow_origins == ["*"]
    assert cfg.rate_limit is not None and cfg.rate_limit.requests == 100  # stricter
    # the same call on a free port, served
    ep = ProductionMetricsEndpoint(name="prod_metrics", port=0, enable_cors=True)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/health", headers={"origin": "https://grafana.example"})
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert r.headers["access-control-allow-origin"] == "*"
        assert (await client.head("/health")).status_code == 200
        assert (await client.get("/health/ready")).json() == {"status": "healthy"}
        assert "/health/live" in (await client.get("/")).json()["endpoints"]


def test_production_endpoint_takes_the_specifications_switches() -> None:
    ep = ProductionMetricsEndpoint(name="prod", port=0, enable_cors=False, enable_rate_limit=False)
    assert ep.config.cors is None and ep.config.rate_limit is None
    ep = ProductionMetricsEndpoint(
        name="prod", port=0, enable_cors=True, cors={"allow_origins": ["https://a.example"]}
    )
    assert ep.config.cors is not None
    assert ep.config.cors.allow_origins == ["https://a.example"]


def test_production_endpoint_is_a_blueprint_type() -> None:
    bp = parse_blueprint(
        "system:\n  name: s\n  components:\n"
        "    - {name: m, type: ProductionMetricsEndpoint, config: {port: 0}}\n"
    )
    cfg = bp.component("m").config
    assert cfg.cors is not None and cfg.rate_limit is not None


# -- the examples, run as a user runs them ---------------------------------------------


class Example(Spawned):
    """``python examples/NAME.py --port 0`` until SIGINT; its URL from the first line."""

    def __init__(self, name: str) -> None:
        super().__init__([sys.executable, str(EXAMPLES / name), "--port", "0"])

    def url(self) -> str:
        return self.wait_for(r"metrics on (http://\S+)", 15)[1]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> tuple[int, str, str]:
        return super().stop(sig, timeout)


def _wait_for(url: str, check: Callable[[Any], bool], deadline_s: float = 10.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        body = httpx.get(url, timeout=5.0).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_embed_example_runs_and_reports_its_probes() -> None:
    ex = Example("embed.py")
    try:
        url = ex.url()
        body = _wait_for(
            url + "/metrics/json",
            lambda b: all(
                b["detailed_components"].get(n, {}).get("items_processed", 0) > 0
                for n in ("order_handler", "price_lookup", "audit_log")
            ),
        )
        comps = body["detailed_components"]
        assert comps["orders_service"]["type"] == "MetricsEndpoint"
        assert comps["price_lookup"]["latency"]["p99"] is not None
        assert httpx.get(url + "/dashboard", timeout=5.0).status_code == 200
        text = httpx.get(url + "/metrics", timeout=5.0).text
        assert 'component_items_processed_total{component="order_handler"}' in text
    finally:
        code, _out, err = ex.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_custom_endpoint_example_serves_its_route_and_collectors() -> None:
    ex = Example("custom_endpoint.py")
    try:
        url = ex.url()
        custom = httpx.get(url + "/custom-metrics", timeout=5.0).json()
        assert set(custom) == {"queue_depth", "orders_placed"}
        body = _wait_for(url + "/metrics/json", lambda b: "shop_metrics" in b["extra"])
        assert {"orders_queue_depth", "orders_placed", "process_cpu_seconds"} <= set(body["custom"])
        assert body["errors"] == []
        text = httpx.get(url + "/metrics", timeout=5.0).text
        assert "orders_placed_total " in text and "process_resident_memory_bytes " in text
    finally:
        code, _out, err = ex.stop()
    assert code == 0, err


# -- probes while nothing listens --------------------------------------------------------


def test_a_probe_nobody_listens_to_counts_but_reads_no_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streammetrics.probe as probe_mod

    bus = EventBus()
    p = bus.probe("worker")
    assert p.timing is False  # no sink yet

    reads: list[int] = []

    def perf_counter() -> float:
        reads.append(1)
        return time.perf_counter()

    monkeypatch.setattr(probe_mod, "time", SimpleNamespace(perf_counter=perf_counter))

    @p.timed
    def job(fail: bool) -> None:
        if fail:
            raise ValueError("bad")

    with p.time():
        pass
    job(False)
    with pytest.raises(ValueError):
        job(True)
    assert reads == []  # no clock read at all
    recorder = _Recorder()
    bus.subscribe(recorder)  # someone listens from now on: timing switches on
    assert p.timing is True
    job(False)
    assert len(reads) == 2
    bus.flush()
    (d,) = recorder.deltas
    # Counted while nobody listened, nothing lost; one latency, from after the subscribe.
    assert (d.processed, d.errors) == (3, 1)
    assert d.latency_counts is not None and sum(d.latency_counts) == 1
    assert d.last_error == "ValueError: bad"
    bus.unsubscribe(recorder)
    assert p.timing is False


class _Recorder:
    def __init__(self) -> None:
        self.deltas: list[Any] = []

    def fold_events(self, events: Any) -> list[Any]:
        return []

    def fold_deltas(self, deltas: Any) -> None:
        self.deltas += deltas


@pytest.mark.anyio
async def test_counts_made_before_the_endpoint_runs_are_served() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1)
    early = ep.probe("early")
    for _ in range(3):
        with early.time():
            pass
    async with streammetrics.serve(ep):
        body = await _poll_json(ep.url + "/metrics/json", "early")
    assert body["detailed_components"]["early"]["items_processed"] == 3  # type: ignore[index]


@pytest.mark.anyio
async def test_an_error_in_the_serve_block_leaves_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with streammetrics.serve(port=0):
            raise KeyError("mine")


# -- run_until_interrupted: a program's entry point, stopped by a real signal ------------

SERVING_PROGRAM = """
import asyncio, sys
import streammetrics

async def main(name: str) -> None:
    try:
        async with streammetrics.serve(name=name, port=0) as endpoint:
            endpoint.probe("worker").processed(3)
            print("metrics on", endpoint.url, flush=True)
            await asyncio.Event().wait()
    finally:
        print("left serve()", flush=True)  # the block ended and the program's cleanup ran

streammetrics.run_until_interrupted(main, "svc")
"""


class Program(Spawned):
    """``python -c PROGRAM`` with its stdout read line by line."""

    def __init__(self, program: str) -> None:
        super().__init__([sys.executable, "-c", program])

    def line(self, timeout: float = 20) -> str:
        line = self.next_line(time.monotonic() + timeout)
        if line is None:
            raise AssertionError(f"exited early: {self.finish()}")
        return line

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"still running after {timeout}s: {self.lines} {self.stderr}"
            ) from None
        return self.proc.returncode, self.collect(), self.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_program_quietly(sig: signal.Signals, code: int) -> None:
    prog = Program(SERVING_PROGRAM)
    try:
        url = prog.line().split()[-1]
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        prog.proc.send_signal(sig)
        rc, out, err = prog.finish()
    assert rc == code, err
    assert err == f"stopped by {sig.name}\n"  # one line, no traceback
    assert out == "left serve()\n"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


def test_a_second_signal_exits_at_once_while_the_first_is_still_stopping() -> None:
    prog = Program(
        """
import anyio, streammetrics

async def main() -> None:
    try:
        print("ready", flush=True)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):  # a shutdown that hangs
            print("stopping", flush=True)
            await anyio.sleep(60)

streammetrics.run_until_interrupted(main)
"""
    )
    assert prog.line() == "ready\n"
    prog.proc.send_signal(signal.SIGINT)
    assert prog.line() == "stopping\n"
    started = time.monotonic()
    prog.proc.send_signal(signal.SIGINT)
    rc, _out, err = prog.finish(timeout=10)
    assert time.monotonic() - started < 5
    assert rc == 130
    assert err == "SIGINT again: exiting at once\n"


def test_a_program_that_ends_by_itself_gets_main_s_result() -> None:
    async def main(a: int, b: int) -> int:
        async with streammetrics.serve(port=0) as ep, httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(ep.url + "/health")).status_code == 200
        return a + b

    assert streammetrics.run_until_interrupted(main, 2, 3) == 5


def test_an_error_of_main_leaves_unwrapped() -> None:
    async def main() -> None:
        async with streammetrics.serve(port=0):
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        streammetrics.run_until_interrupted(main)


def test_a_coroutine_instead_of_the_function_is_refused_with_the_fix() -> None:
    async def main() -> None:
        pass

    with pytest.raises(TypeError, match=r"run_until_interrupted\(main\), not"):
        streammetrics.run_until_interrupted(main())  # type: ignore[arg-type]

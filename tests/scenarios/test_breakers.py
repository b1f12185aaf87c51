"""Circuit breakers in real pipelines: a consumer that trips, holds items in its binding while
open and recovers, an API endpoint whose sends trip its breaker, as ``/components``,
``/metrics/json`` and ``/metrics`` show them, and a really flapping breaker that earns its
recommendation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streammetrics.blueprint import Blueprint, parse_blueprint
from streammetrics.breaker import BreakerConfig
from streammetrics.components import Component, Context, Processor
from streammetrics.components.api import APIEndpoint
from streammetrics.errors import BlueprintError
from streammetrics.harness import Harness
from tests.support.harness import serving, with_class
from tests.support.sinks import Recorder
from tests.support.waiting import poll

# -- a real pipeline ----------------------------------------------------------------------------

PIPELINE = """
system:
  name: breaker_e2e
  components:
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - name: proc
      type: StreamProcessor
      config:
        circuit_breaker:
          failure_threshold: 3
          failure_rate: null
          reset_timeout_s: 1.0
          half_open_max_calls: 2
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: api, to_component: proc, buffer: 50}
"""


KEY = "api->proc:input"


@asynccontextmanager
async def pipeline(
    text: str | Blueprint,
) -> AsyncIterator[tuple[Harness, httpx.AsyncClient, httpx.AsyncClient, Recorder]]:
    """The blueprint serving (``harness.serving``), every breaker event it reports recorded."""
    rec = Recorder()
    async with serving(text, rec) as (harness, api, metrics):
        yield harness, api, metrics, rec


async def prom_breaker_state(
    metrics: httpx.AsyncClient, component: str = "proc"
) -> dict[str, float]:
    r = await metrics.get("/metrics")
    assert r.status_code == 200
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(r.text):
        if fam.name in ("circuit_breaker_state", "circuit_breaker_failures"):
            for s in fam.samples:
                if s.labels.get("component") == component:
                    out[s.name] = s.value
    return out


async def prom_breaker_components(metrics: httpx.AsyncClient) -> set[str]:
    """The components ``circuit_breaker_state`` has a series for."""
    r = await metrics.get("/metrics")
    assert r.status_code == 200
    return {
        s.labels["component"]
        for fam in text_string_to_metric_families(r.text)
        if fam.name == "circuit_breaker_state"
        for s in fam.samples
    }


def proc_breaker(body: dict[str, Any]) -> dict[str, Any]:
    b: dict[str, Any] = body["circuit_breakers"]["proc"]
    return b


@pytest.mark.anyio
async def test_a_failing_consumer_trips_holds_items_and_recovers() -> None:
    async with pipeline(PIPELINE) as (harness, api, metrics, rec):
        t_before = time.time()
        for _ in range(3):
            assert (await api.post("/items", json={"fail": True})).status_code == 202
        # While open, good items are accepted and wait in the binding.
        for i in range(10):
            assert (await api.post("/items", json={"n": i})).status_code == 202
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                proc_breaker(b)["state"] == "open"
                and b["streaming"]["streams"][KEY]["buffer_used"] == 10
                and b["components"]["proc"]["errors_encountered"] == 3
            ),
        )
        br = proc_breaker(body)
        assert br["failure_count"] == 1  # tripped once
        assert t_before <= br["last_failure"] <= time.time()
        assert br["transitions"] == 1
        proc = body["components"]["proc"]
        assert (proc["items_processed"], proc["errors_encountered"]) == (0, 3)
        assert await prom_breaker_state(metrics) == {
            "circuit_breaker_state": 1.0,
            "circuit_breaker_failures_total": 1.0,
        }
        first_trip = br["last_failure"]

        # After reset_timeout_s: two trial items succeed, it closes, the rest follow.
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                proc_breaker(b)["state"] == "closed"
                and b["components"]["proc"]["items_processed"] == 10
            ),
        )
        br = proc_breaker(body)
        assert br["transitions"] == 3
        assert br["failure_count"] == 1
        assert br["last_failure"] == first_trip
        assert 1.0 <= br["time_open_seconds"] < 5.0  # open, then half_open for the trials
        assert body["streaming"]["streams"][KEY]["buffer_used"] == 0
        assert (await prom_breaker_state(metrics))["circuit_breaker_state"] == 0.0
        assert [(c, d) for c, d, _t in rec.breaker] == [
            ("proc", "open"),
            ("proc", "half_open"),
            ("proc", "closed"),
        ]

        # Trip it again and let it half-open with nothing waiting: it stays half-open
        # until an item comes to try.
        for _ in range(3):
            await api.post("/items", json={"fail": True})
        body = await poll(metrics, "/metrics/json", lambda b: proc_breaker(b)["state"] == "open")
        assert proc_breaker(body)["failure_count"] == 2
        assert proc_breaker(body)["last_failure"] > first_trip
        body = await poll(
            metrics, "/metrics/json", lambda b: proc_breaker(b)["state"] == "half_open"
        )
        assert (await prom_breaker_state(metrics))["circuit_breaker_state"] == 2.0
        health = (await metrics.get("/health")).json()
        assert {"component": "proc", "reason": "circuit breaker half_open", "penalty": 0.25} in (
            health["reasons"]
        )
        for i in range(2):
            await api.post("/items", json={"n": 100 + i})
        body = await poll(
            metrics,
            "/metrics/json",
            lambda b: (
                proc_breaker(b)["state"] == "closed"
                and b["detailed_components"]["proc"]["items_processed"] == 12
                and b["detailed_components"]["api"]["items_processed"] == 18
                and b["streaming"]["streams"][KEY]["total_messages"] == 18
            ),
        )
        # Nothing lost: what the API accepted was either processed or failed, once.
        comps = body["detailed_components"]
        assert comps["api"]["items_processed"] == 18
        assert (comps["proc"]["items_processed"], comps["proc"]["errors_encountered"]) == (12, 6)
        assert body["streaming"]["streams"][KEY]["total_messages"] == 18
        br = proc_breaker(body)
        assert (br["state"], br["failure_count"], br["transitions"]) == ("closed", 2, 6)
        assert br["time_open_seconds"] >= 2.0  # two open periods of at least 1 s each
        stats = harness.components["proc"].ctx.breaker
        assert stats is not None
        assert msgspec.structs.asdict(stats.statistics()) | {"rejected_waits": 0} == {
            "state": "closed",
            "failure_count": 6,
            "consecutive_failures": 0,
            "transitions": 6,
            "times_opened": 2,
            "rejected_waits": 0,
        }
        assert [d for _c, d, _t in rec.breaker] == [
            "open",
            "half_open",
            "closed",
            "open",
            "half_open",
            "closed",
        ]


@pytest.mark.anyio
async def test_components_without_a_breaker_are_not_listed_and_a_disabled_one_never_opens() -> None:
    text = PIPELINE.replace(
        "failure_threshold: 3", "enabled: false\n          failure_threshold: 1"
    )
    async with pipeline(text) as (harness, api, metrics, rec):
        assert harness.components["proc"].ctx.breaker is None
        for _ in range(5):
            await api.post("/items", json={"fail": True})
        await api.post("/items", json={"n": 1})
        body = await poll(
            metrics, "/components", lambda b: b["components"]["proc"]["items_processed"] == 1
        )
        assert body["components"]["proc"]["errors_encountered"] == 5
        # A component without a breaker is not listed, not even as closed; the API's
        # (around its sends) is, closed, though it never moved.
        guarded = {n for n, c in harness.components.items() if c.ctx.breaker is not None}
        assert guarded == {"api"}
        assert set(body["circuit_breakers"]) == guarded
        assert body["circuit_breakers"]["api"]["state"] == "closed"
        assert await prom_breaker_components(metrics) == guarded
        assert rec.breaker == []


# -- the API endpoint's breaker: what it sends downstream ---------------------------------------


class Gated(Processor):
    """A consumer that holds each item until the test opens its gate: a stuck dependency
    that the test can make well again."""

    type_name = "Gated"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gate = anyio.Event()
        self.done = 0

    async def process(self, item: Any) -> Any | None:
        await self.gate.wait()
        self.done += 1
        return None


class Gone(Component):
    """A consumer that starts and returns at once: the harness closes its end of the
    binding, so every send into it is refused."""

    type_name = "Gone"


API_SEND_TIMEOUT_S = 0.5


API_PIPELINE = f"""
system:
  name: api_breaker
  components:
    - name: api
      type: APIEndpoint
      config:
        port: 0
        send_timeout_s: {API_SEND_TIMEOUT_S}
        circuit_breaker:
          failure_threshold: 3
          failure_rate: null
          reset_timeout_s: 1.0
          half_open_max_calls: 2
    - {{name: slow, type: StreamProcessor}}
    - {{name: metrics, type: MetricsEndpoint, config: {{port: 0, tick_s: 0.05}}}}
  bindings:
    - {{from_component: api, to_component: slow, buffer: 1}}
"""


API_KEY = "api->slow:input"


def api_breaker(body: dict[str, Any]) -> dict[str, Any]:
    """The API endpoint's entry under ``circuit_breakers``; empty while not listed."""
    b: dict[str, Any] = body["circuit_breakers"].get("api", {})
    return b


@pytest.mark.anyio
async def test_an_api_endpoint_whose_consumer_is_stuck_trips_answers_503_at_once_and_recovers() -> (
    None
):
    bp = with_class(parse_blueprint(API_PIPELINE), "slow", Gated)
    async with pipeline(bp) as (harness, api, metrics, rec):
        slow = harness.components["slow"]
        assert isinstance(slow, Gated)
        breaker = harness.components["api"].ctx.breaker
        assert breaker is not None and harness.components["api"].ctx.probe.breaker is None

        # Bad bodies are the client's fault: refused, counted, but not downstream failures.
        for _ in range(4):
            assert (await api.post("/items", content=b"{nope")).status_code == 400
        assert breaker.state == "closed" and breaker.failure_count == 0

        # The consumer takes the first item and holds it; the second fills the binding.
        assert [(await api.post("/items", json={"n": i})).status_code for i in range(2)] == [
            202,
            202,
        ]
        # Three sends time out: the breaker opens on the third.
        for i in range(3):
            t0 = time.perf_counter()
            r = await api.post("/items", json={"n": 10 + i})
            waited = time.perf_counter() - t0
            assert (r.status_code, r.json()["error"]) == (503, "downstream busy")
            assert waited >= API_SEND_TIMEOUT_S * 0.9
            assert "Retry-After" not in r.headers
        assert breaker.state == "open"

        # Open: refused at once, no waiting on the full binding, nothing more sent.
        t0 = time.perf_counter()
        r = await api.post("/items/batch", json=[1, 2, 3])
        waited = time.perf_counter() - t0
        assert r.status_code == 503
        assert waited < API_SEND_TIMEOUT_S / 5, waited
        assert r.json()["error"] == "circuit open"
        assert "no item was accepted" in r.json()["detail"]
        retry_after = int(r.headers["Retry-After"])
        assert retry_after == 1  # reset_timeout_s 1.0, rounded up, never 0

        # The transition is an event, published at once; the refusals are probe counts,
        # flushed on the harness's tick: wait for the figures of this moment, both.
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                api_breaker(b).get("state") == "open"
                and b["components"]["api"]["errors_encountered"] >= 3 + 3
            ),
        )
        br = api_breaker(body)
        assert (br["failure_count"], br["transitions"]) == (1, 1)
        assert body["streaming"]["streams"][API_KEY]["buffer_used"] == 1  # only item 2 waits
        api_comp = body["components"]["api"]
        # The four bad bodies are the client's errors (a 4xx), apart from its own failures
        # (the timeouts and the refusals, 5xx): only those count against its health.
        assert (api_comp["items_processed"], api_comp["errors_encountered"]) == (2, 3 + 3)
        assert api_comp["client_errors"] == 4
        body = await poll(metrics, "/metrics/json", lambda b: api_breaker(b).get("state") == "open")
        assert api_breaker(body)["failure_count"] == 1
        assert await prom_breaker_state(metrics, "api") == {
            "circuit_breaker_state": 1.0,
            "circuit_breaker_failures_total": 1.0,
        }

        # The consumer is well again and drains the binding; after Retry-After seconds
        # two trial requests go through and close the breaker.
        slow.gate.set()
        await poll(
            metrics, "/components", lambda b: b["components"]["slow"]["items_processed"] == 2
        )
        await anyio.sleep(retry_after)
        for i in range(2):
            r = await api.post("/items", json={"n": 20 + i})
            assert (r.status_code, r.json()) == (202, {"accepted": 1})
        assert breaker.state == "closed"
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                api_breaker(b).get("state") == "closed"
                and b["components"]["slow"]["items_processed"] == 4
            ),
        )
        br = api_breaker(body)
        assert (br["failure_count"], br["transitions"]) == (1, 3)
        assert 1.0 <= br["time_open_seconds"] < 5.0
        assert body["streaming"]["streams"][API_KEY]["total_messages"] == 4
        assert (await prom_breaker_state(metrics, "api"))["circuit_breaker_state"] == 0.0
        assert [(c, d) for c, d, _t in rec.breaker] == [
            ("api", "open"),
            ("api", "half_open"),
            ("api", "closed"),
        ]
        assert slow.done == 4
        stats = harness.components["api"]
        assert isinstance(stats, APIEndpoint)
        assert (stats.statistics().accepted, stats.statistics().rejected) == (4, 4 + 3 + 1)


@pytest.mark.anyio
async def test_a_failed_trial_request_opens_the_api_breaker_again() -> None:
    text = API_PIPELINE.replace("failure_threshold: 3", "failure_threshold: 1")
    bp = with_class(parse_blueprint(text), "slow", Gated)
    async with pipeline(bp) as (harness, api, metrics, rec):
        breaker = harness.components["api"].ctx.breaker
        assert breaker is not None
        for i in range(3):  # taken, buffered, timed out: open
            await api.post("/items", json={"n": i})
        assert breaker.state == "open"
        await anyio.sleep(int((await api.post("/items", json=0)).headers["Retry-After"]))
        r = await api.post("/items", json={"n": 9})  # the trial: the consumer is still stuck
        assert (r.status_code, r.json()["error"]) == (503, "downstream busy")
        assert breaker.state == "open"
        r = await api.post("/items", json={"n": 10})
        assert (r.status_code, r.json()["error"]) == (503, "circuit open")
        body = await poll(
            metrics, "/components", lambda b: api_breaker(b).get("failure_count") == 2
        )
        assert api_breaker(body)["state"] == "open"
        assert [d for _c, d, _t in rec.breaker] == ["open", "half_open", "open"]


@pytest.mark.anyio
async def test_sends_refused_by_a_closed_binding_trip_the_api_breaker() -> None:
    text = API_PIPELINE.replace("failure_threshold: 3", "failure_threshold: 2")
    bp = with_class(parse_blueprint(text), "slow", Gone)
    async with pipeline(bp) as (harness, api, metrics, _rec):
        await poll(metrics, "/components", lambda b: b["components"]["slow"]["status"] == "stopped")
        for _ in range(2):
            t0 = time.perf_counter()
            r = await api.post("/items/batch", json=[1, 2])
            assert time.perf_counter() - t0 < API_SEND_TIMEOUT_S  # refused, not timed out
            assert (r.status_code, r.json()["error"]) == (503, "downstream closed")
            assert r.json()["detail"] == ("accepted 0 of 2 items: downstream no longer takes items")
        r = await api.post("/items", json=1)
        assert (r.status_code, r.json()["error"]) == (503, "circuit open")
        assert int(r.headers["Retry-After"]) >= 1
        await poll(metrics, "/metrics/json", lambda b: api_breaker(b).get("state") == "open")
        # The transition is an event, folded at once; the errors are the probe's counts,
        # folded at its next flush: a snapshot may show the one before the other.
        body = await poll(
            metrics,
            "/metrics/json",
            lambda b: b["detailed_components"]["api"]["errors_encountered"] >= 2 + 2 + 1,
        )
        assert body["detailed_components"]["api"]["errors_encountered"] == 2 + 2 + 1
        breaker = harness.components["api"].ctx.breaker
        assert breaker is not None
        assert (breaker.failure_count, breaker.statistics().rejected_waits) == (2, 1)


@pytest.mark.parametrize("api_type", ["APIEndpoint", "FastAPIEndpoint"])
def test_a_breaker_on_an_api_endpoint_is_accepted(api_type: str) -> None:
    bp = parse_blueprint(API_PIPELINE.replace("type: APIEndpoint", f"type: {api_type}"))
    api = bp.component("api")
    assert api.breaker == BreakerConfig(
        failure_threshold=3, failure_rate=None, reset_timeout_s=1.0, half_open_max_calls=2
    )
    assert not hasattr(api.config, "circuit_breaker")  # the breaker's, not the endpoint's


def test_a_bad_breaker_on_an_api_endpoint_names_its_path() -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(API_PIPELINE.replace("reset_timeout_s: 1.0", "reset_timeout_s: -1"))
    assert info.value.path == "system.components[0].config.circuit_breaker.reset_timeout_s"
    assert info.value.value == -1


# -- a real flapping breaker ----------------------------------------------------------------------

FLAPPING = """
system:
  name: flapping
  components:
    - {name: src, type: Source, config: {rate: 1500, batch: 10, limit: 600, error_ratio: 0.5}}
    - name: proc
      type: StreamProcessor
      config:
        circuit_breaker:
          failure_threshold: 1000
          failure_rate: 0.5
          min_calls: 10
          window_s: 10
          reset_timeout_s: 0.05
          half_open_max_calls: 1
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: src, to_component: proc, buffer: 100}
"""


@pytest.mark.anyio
async def test_a_really_flapping_breaker_earns_the_recommendation() -> None:
    harness = Harness(parse_blueprint(FLAPPING), flush_interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        port = next(w.port for w in harness.listening if w.component == "metrics")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                rec: dict[str, Any] | None = None
                with anyio.fail_after(10):
                    while rec is None:
                        body = (await client.get("/alerts")).json()
                        flaps = [
                            r for r in body["recommendations"] if r["figure"] == "breaker_flaps"
                        ]
                        rec = flaps[0] if flaps else None
                        await anyio.sleep(0.02)
                assert (rec["type"], rec["component"]) == ("reliability", "proc")
                assert rec["value"] >= 4
                assert "raise its circuit_breaker.reset_timeout_s" in rec["message"]
                # every item was processed or failed once: the breaker lost none
                with anyio.fail_after(10):
                    while True:
                        harness.bus.flush()
                        comps = (await client.get("/components")).json()
                        proc = comps["components"]["proc"]
                        if proc["items_processed"] + proc["errors_encountered"] == 600:
                            break
                        await anyio.sleep(0.02)
                assert (proc["items_processed"], proc["errors_encountered"]) == (300, 300)
                assert comps["circuit_breakers"]["proc"]["failure_count"] >= 2
        finally:
            harness.stop()

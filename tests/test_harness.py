"""The harness running real blueprints: lifecycle as the aggregator sees it, failures
that stay contained, starts that fail as a whole, and bindings with backpressure."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import parse_blueprint
from streammetrics.breaker import BreakerConfig, CircuitBreaker
from streammetrics.components import Component
from streammetrics.errors import PortInUseError
from streammetrics.harness import Harness
from streammetrics.judge.health import HealthJudge
from tests.support.harness import running, with_class
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


def statuses(agg: Aggregator) -> dict[str, str]:
    return {n: c.status for n, c in agg.figures().detailed_components.items()}


class Exploding(Component):
    """Starts, works for a moment, then raises: a component bug after a good start."""

    type_name = "Exploding"

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep(0.05)
        raise RuntimeError("boom")


PIPELINE = """
system:
  name: lifecycle
  components:
    - {name: src, type: Source, config: {rate: 20000, batch: 100, limit: 500}}
    - {name: proc, type: StreamProcessor}
    - {name: store, type: Store}
  bindings:
    - {from_component: src, to_component: proc}
    - {from_component: proc, to_component: store}
"""


async def test_started_and_stopped_events_drive_status() -> None:
    async with running(parse_blueprint(PIPELINE)) as (harness, agg):
        assert harness.state == "running"
        # the Source stops at its limit; its closed output then stops the rest in turn
        await until(lambda: set(statuses(agg).values()) == {"stopped"})
        harness.bus.flush()
        snap = HealthJudge().judge(agg.figures())
        assert {n: c.items_processed for n, c in snap.detailed_components.items()} == {
            "src": 500,
            "proc": 500,
            "store": 500,
        }
        assert snap.components.running == 0
        assert harness.statistics().running == 0
    assert harness.state == "stopped"


async def test_running_components_are_running_until_stopped() -> None:
    bp = parse_blueprint(PIPELINE.replace(", limit: 500", ""))
    async with running(bp) as (harness, agg):
        assert statuses(agg) == {"src": "running", "proc": "running", "store": "running"}
        stats = harness.statistics()
        assert (stats.state, stats.components, stats.running, stats.failed) == (
            "running",
            3,
            3,
            [],
        )
        assert set(stats.bindings) == {"src->proc:input", "proc->store:input"}
    # cancelled by stop(): each component still reports that it stopped
    assert statuses(agg) == {"src": "stopped", "proc": "stopped", "store": "stopped"}
    assert harness.state == "stopped"


async def test_a_component_that_fails_after_starting_is_failed_and_alone() -> None:
    bp = parse_blueprint(
        """
system:
  name: contained
  components:
    - {name: src, type: Source, config: {rate: 2000, batch: 20}}
    - {name: store, type: Store}
    - {name: buggy, type: Store}
  bindings:
    - {from_component: src, to_component: store}
"""
    )
    async with running(with_class(bp, "buggy", Exploding)) as (harness, agg):
        await until(lambda: statuses(agg).get("buggy") == "failed")
        assert harness.statistics().failed == ["buggy"]
        harness.bus.flush()
        before = agg.figures().detailed_components["store"].items_processed
        await anyio.sleep(0.1)
        harness.bus.flush()
        snap = HealthJudge().judge(agg.figures())
        assert statuses(agg) == {"src": "running", "store": "running", "buggy": "failed"}
        assert snap.detailed_components["store"].items_processed > before  # still flowing
        buggy = snap.detailed_components["buggy"]
        assert buggy.errors_encountered == 1
        assert buggy.last_error == "RuntimeError: boom"
        assert not buggy.is_healthy


async def test_a_busy_port_aborts_the_whole_start() -> None:
    bp = parse_blueprint(
        """
system:
  name: first
  components: [{name: api, type: APIEndpoint, config: {port: 0}}]
"""
    )
    async with running(bp) as (first, _agg):
        (where,) = first.listening
        assert (where.component, where.type, where.host) == ("api", "APIEndpoint", "127.0.0.1")
        clash = parse_blueprint(
            f"""
system:
  name: second
  components:
    - {{name: src, type: Source, config: {{rate: 100}}}}
    - {{name: app_server, type: FastAPIEndpoint, config: {{port: {where.port}}}}}
"""
        )
        second = Harness(clash)
        agg = Aggregator()
        second.bus.subscribe(agg)
        with pytest.raises(BaseExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                await tg.start(second.run)
        (err,) = info.value.exceptions
        while isinstance(err, BaseExceptionGroup):
            (err,) = err.exceptions
        assert isinstance(err, PortInUseError)
        assert (err.component, err.host, err.port) == ("app_server", "127.0.0.1", where.port)
        assert second.state == "stopped"
        assert second.listening == []
        assert statuses(agg)["src"] == "stopped"


async def test_a_full_binding_slows_the_sender_instead_of_dropping() -> None:
    bp = parse_blueprint(
        """
system:
  name: backpressure
  components:
    - {name: src, type: Source, config: {rate: 100000, batch: 100, limit: 60}}
    - {name: slow, type: StreamProcessor, config: {work_ms: 2}}
  bindings:
    - {from_component: src, to_component: slow, buffer: 4}
"""
    )
    async with running(bp) as (harness, agg):
        await until(lambda: harness.statistics().bindings["src->slow:input"][0] == 4)
        assert statuses(agg)["src"] == "running"  # held back, not done
        await until(lambda: statuses(agg).get("slow") == "stopped")
        harness.bus.flush()
        snap = agg.figures()
        assert snap.detailed_components["slow"].items_processed == 60
        assert snap.streaming.streams["src->slow:input"].total_messages == 60


async def test_an_api_endpoint_gets_a_breaker_on_its_sends_only_when_it_sends() -> None:
    bp = parse_blueprint(
        """
system:
  name: wiring
  components:
    - {name: fed, type: APIEndpoint, config: {port: 0}}
    - {name: alone, type: APIEndpoint, config: {port: 0}}
    - {name: disabled, type: APIEndpoint, config: {port: 0, circuit_breaker: {enabled: false}}}
    - {name: store, type: Store}
  bindings:
    - {from_component: fed, to_component: store}
    - {from_component: disabled, to_component: store, stream_name: other}
"""
    )
    async with running(bp) as (harness, _agg):
        comps = harness.components
        fed = comps["fed"].ctx
        assert isinstance(fed.breaker, CircuitBreaker)
        assert fed.breaker.config == BreakerConfig()  # the defaults, as for any consumer
        # The endpoint reports its sends itself; its probe's errors (bad bodies) stay out.
        assert fed.probe.breaker is None
        assert comps["alone"].ctx.breaker is None  # no binding out: nothing to guard
        assert comps["disabled"].ctx.breaker is None
        store = comps["store"].ctx
        assert store.breaker is not None and store.probe.breaker is store.breaker

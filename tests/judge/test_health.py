"""The health judgement as a load balancer sees it: ``/health`` on a real server going
503 and back to 200 as a real component fails and recovers, the reasons naming each
deduction, thresholds from the MetricsEndpoint's config, and stalled streams."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import parse_blueprint
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import BlueprintError
from streammetrics.http.app import create_app
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.health import (
    PENALTIES,
    HealthConfig,
    HealthJudge,
    SourceHealth,
    component_health,
    status_for,
    stream_stall,
    system_health,
)
from streammetrics.model.events import Event
from streammetrics.snapshot import Deduction, ProcessStats, Snapshot
from streammetrics.views.tick_cache import TickCache
from tests.support.harness import serving
from tests.support.http_app import FakeClock, FixedSampler, running
from tests.support.loop import with_turns
from tests.support.waiting import poll_response

PIPELINE = """
system:
  name: health_e2e
  components:
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - name: proc
      type: StreamProcessor
      config:
        circuit_breaker: {failure_threshold: 3, failure_rate: null, reset_timeout_s: 0.5}
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: api, to_component: proc, buffer: 200}
"""


@pytest.mark.anyio
async def test_health_goes_503_while_a_component_fails_and_200_once_it_recovers() -> None:
    async with serving(PIPELINE) as (_harness, api, metrics):
        # Until every component's "started" is folded, one may still be "registered".
        r = await poll_response(
            metrics,
            "/health",
            lambda r: r.status_code == 200 and r.json()["components"]["running"] == 3,
        )
        body = r.json()
        assert (body["status"], body["health_score"], body["reasons"]) == ("healthy", 1.0, [])
        assert body["components"] == {"total": 3, "healthy": 3, "running": 3}

        for _ in range(3):
            await api.post("/items", json={"fail": True})
        r = await poll_response(metrics, "/health", lambda r: r.status_code == 503)
        body = r.json()
        assert body["status"] == "degraded"  # (1 + 0 + 1) / 3
        assert body["health_score"] == pytest.approx(0.6667, abs=1e-4)
        assert body["reasons"] == [
            {"component": "proc", "reason": "circuit breaker open", "penalty": 0.5},
            {"component": "proc", "reason": "error_rate 1 > budget 0.05", "penalty": 0.6},
        ]
        assert body["components"] == {"total": 3, "healthy": 2, "running": 3}

        # Good items: the breaker half-opens after 0.5 s, the trials pass, it closes, and
        # 3 errors in 103 items are within the budget.
        r = await api.post("/items/batch", json=[{"n": i} for i in range(100)])
        assert r.status_code == 202
        # 200 comes as soon as the score is back over 0.8 (half-open, or the good items
        # partly counted); then every deduction goes.
        r = await poll_response(
            metrics, "/health", lambda r: r.status_code == 200 and not r.json()["reasons"]
        )
        body = r.json()
        assert (body["status"], body["health_score"], body["reasons"]) == ("healthy", 1.0, [])


STALLING = """
system:
  name: stall_e2e
  components:
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - {name: proc, type: StreamProcessor, config: {work_ms: 60000}}
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        tick_s: 0.05
        health: {stall_timeout_s: 0.3, healthy_threshold: 0.9}
  bindings:
    - {from_component: api, to_component: proc, buffer: 50}
"""


@pytest.mark.anyio
async def test_a_hung_consumer_stalls_its_stream_and_the_configured_threshold_judges_it() -> None:
    async with serving(STALLING) as (harness, api, metrics):
        agg = harness.components["metrics"]
        assert isinstance(agg, MetricsEndpoint)
        assert agg.judge.health == HealthConfig(stall_timeout_s=0.3, healthy_threshold=0.9)
        await poll_response(metrics, "/health", lambda r: r.status_code == 200)
        r = await api.post("/items/batch", json=[{"n": i} for i in range(5)])
        assert r.status_code == 202  # the first hangs in process(), four wait behind it
        r = await poll_response(metrics, "/health", lambda r: r.status_code == 503)
        body = r.json()
        (d,) = body["reasons"]
        assert (d["component"], d["penalty"]) == ("proc", 0.5)
        assert d["reason"].startswith("stream api->proc:input stalled: 4/50 items waiting, none")
        assert d["reason"].endswith("s > 0.3s")
        # 0.833 is healthy by default; this endpoint's threshold is 0.9
        assert body["health_score"] == pytest.approx(0.8333, abs=1e-4)
        assert body["status"] == "degraded"
        comps = (await metrics.get("/components")).json()
        stream = comps["streaming"]["streams"]["api->proc:input"]
        assert stream["buffer_used"] == 4
        assert stream["stalled_seconds"] > 0.3


@pytest.mark.anyio
async def test_health_reasons_in_the_issue_shape_over_http() -> None:
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.fold_events(
        [
            Event("task_api", "processed", count=100),
            Event("task_store", "processed", count=88),
            Event("task_store", "error", count=12),
            Event("payments", "stopped", detail="failed"),
        ]
    )
    service = TickCache(
        agg,
        sampler=FixedSampler(ProcessStats(512.0, 10.0)),
        clock=clock.monotonic,
        wall=clock.wall,
        judge=HealthJudge(HealthConfig(memory_limit_mb=400)),
    )
    async with running(create_app(service)) as client:
        r = await client.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["reasons"] == [
        {"component": "task_store", "reason": "error_rate 0.12 > budget 0.05", "penalty": 0.2},
        {"component": "payments", "reason": "component failed", "penalty": 1.0},
        {"component": None, "reason": "memory 512MB > limit 400MB", "penalty": 0.1},
    ]
    # the score is the documented arithmetic of those penalties
    assert body["health_score"] == round((1.0 + 0.8 + 0.0) / 3 - 0.1, 4)
    assert body["status"] == "degraded"


# -- stalled streams, by hand ---------------------------------------------------------------


class Stalls:
    def __init__(self, **health: Any) -> None:
        self.clock = FakeClock()
        self.agg = Aggregator(clock=self.clock.monotonic, wall=self.clock.wall)
        self.judge = HealthJudge(HealthConfig(**health))
        self.level = [5]
        self.agg.register_component("p")
        self.agg.register_component("c")
        self.agg.register_stream(
            "p->c:input",
            from_component="p",
            to_component="c",
            buffer=lambda: (self.level[0], 10),
        )

    def at(self, seconds: float) -> tuple[float | None, list[Deduction]]:
        self.clock.advance(seconds)
        snap = self.judge.judge(self.agg.figures())
        return snap.streaming.streams["p->c:input"].stalled_seconds, snap.reasons


def test_a_stall_is_judged_only_past_the_timeout() -> None:
    s = Stalls()
    assert s.at(0) == (0.0, [])
    assert s.at(60) == (60.0, [])  # exactly the timeout: not yet
    stalled, reasons = s.at(1)
    assert stalled == 61.0
    assert reasons == [
        Deduction(
            "c", "stream p->c:input stalled: 5/10 items waiting, none taken for 61s > 60s", 0.5
        )
    ]
    assert s.judge.judge(s.agg.figures()).detailed_components["c"].health == 0.5


def test_a_consumer_that_takes_items_is_not_stalled_however_full() -> None:
    s = Stalls()
    s.level[0] = 10  # full, and stays full: the producer refills as fast as c takes
    for _ in range(10):
        s.agg.fold_events([Event("c", "processed")])
        stalled, reasons = s.at(30)
        assert stalled == 0.0  # progress was seen at this snapshot
        assert reasons == []


def test_a_shrinking_buffer_is_progress_and_an_empty_one_is_not_a_stall() -> None:
    s = Stalls()
    s.at(50)
    s.level[0] = 4  # the consumer took one (its counts may not have arrived yet)
    assert s.at(50) == (0.0, [])
    s.level[0] = 0
    assert s.at(100) == (None, [])
    s.level[0] = 3  # waiting again: the clock starts now
    assert s.at(1) == (0.0, [])


def test_an_unobserved_consumer_leaves_the_penalty_with_the_producer() -> None:
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, observe=["p"])
    agg.register_component("p")
    agg.register_stream("p->x:input", from_component="p", to_component="x", buffer=lambda: (2, 8))
    judge = HealthJudge()
    judge.judge(agg.figures())
    clock.advance(61)
    (d,) = judge.judge(agg.figures()).reasons
    assert (d.component, d.penalty) == ("p", 0.5)


def test_stall_judgement_can_be_switched_off() -> None:
    s = Stalls(stall_timeout_s=None)
    s.at(0)
    stalled, reasons = s.at(3600)
    assert (stalled, reasons) == (3600.0, [])  # still shown, never penalised


def test_stream_stall_function() -> None:
    cfg = HealthConfig(stall_timeout_s=10)
    assert stream_stall("k", "c", waiting=1, capacity=None, stalled_for=10, config=cfg) is None
    assert stream_stall("k", "c", waiting=0, capacity=5, stalled_for=99, config=cfg) is None
    d = stream_stall("k", "c", waiting=3, capacity=None, stalled_for=12.345, config=cfg)
    assert d == Deduction("c", "stream k stalled: 3 items waiting, none taken for 12.3s > 10s", 0.5)
    assert PENALTIES["stalled_stream"] == 0.5


# -- one judgement, in steps ------------------------------------------------------------------


@pytest.mark.anyio
async def test_judge_async_matches_judge_and_lets_the_loop_run() -> None:
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    for i in range(1000):
        agg.fold_events(
            [
                Event(f"c{i}", "processed", count=10),
                Event(f"c{i}", "error", count=2 * (i % 4)),  # none, over budget, over 5x
                *([Event(f"c{i}", "breaker", detail="open")] if i % 7 == 0 else []),
            ]
        )
    clock.advance(5)
    figures = agg.figures()
    expected = HealthJudge().judge(figures)
    assert {d.penalty for d in expected.reasons} == {0.2, 0.5, 0.6}
    got, turns = await with_turns(HealthJudge().judge_async(figures, chunk=100))
    assert msgspec.json.encode(got) == msgspec.json.encode(expected)
    # 1,000 components in chunks of 100: the other task ran between the chunks
    assert turns >= 9


def test_the_figures_carry_no_judgement_and_the_judge_adds_all_of_it() -> None:
    """The aggregator's figures are what it folded; scores, status and reasons are the
    judge's, computed from them alone (the same figures judged twice agree)."""
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.fold_events([Event("a", "processed", count=9), Event("a", "error"), Event("b", "stopped")])
    figures = agg.figures()
    assert not {"health_score", "system_status", "reasons"} & set(figures.__struct_fields__)
    assert "health" not in figures.detailed_components["a"].__struct_fields__
    judge = HealthJudge()
    snap = judge.judge(figures)
    assert snap == judge.judge(figures)
    assert {n: c.health for n, c in snap.detailed_components.items()} == {"a": 0.8, "b": 0.0}
    assert (snap.health_score, snap.system_status) == (0.4, "unhealthy")
    assert [(d.component, d.penalty) for d in snap.reasons] == [("a", 0.2), ("b", 1.0)]


# -- thresholds in the MetricsEndpoint's config ----------------------------------------------


def test_health_config_from_the_blueprint() -> None:
    bp = parse_blueprint(
        """
system:
  name: cfg
  components:
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        health:
          error_budget: 0.01
          heartbeat_timeout_s: 5
          healthy_threshold: 0.9
          degraded_threshold: 0.6
          memory_limit_mb: 256
          cpu_limit_percent: 150
          stall_timeout_s: 15
"""
    )
    assert bp.components[0].config.health == HealthConfig(
        error_budget=0.01,
        heartbeat_timeout_s=5,
        healthy_threshold=0.9,
        degraded_threshold=0.6,
        memory_limit_mb=256,
        cpu_limit_percent=150,
        stall_timeout_s=15,
    )


@pytest.mark.parametrize(
    ("health", "path", "says"),
    [
        (
            "{healthy_threshold: 0.5, degraded_threshold: 0.7}",
            "config.health",
            "degraded_threshold",
        ),
        ("{error_budget: 2}", "config.health.error_budget", "<= 1.0"),
        ("{stall_timeout_s: 0}", "config.health.stall_timeout_s", "> 0"),
        ("{heartbeat_timeout: 5}", "config.health", "heartbeat_timeout"),
    ],
)
def test_bad_health_config_names_its_path(health: str, path: str, says: str) -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(
            f"""
system:
  name: cfg
  components:
    - {{name: metrics, type: MetricsEndpoint, config: {{port: 0, health: {health}}}}}
"""
        )
    assert info.value.path.startswith(f"system.components[0].{path}")
    assert says in str(info.value)


# -- the documented formula, checked by hand ------------------------------------------------

CFG = HealthConfig()  # budget 0.05, heartbeat 30 s, healthy 0.8, degraded 0.5


@pytest.mark.parametrize(
    ("status", "error_rate", "breaker", "hb_age", "score", "penalties"),
    [
        ("running", 0.0, "closed", None, 1.0, []),
        ("registered", 0.05, "closed", None, 1.0, []),  # at the budget: no penalty
        ("running", 0.0501, "closed", None, 0.8, [0.2]),
        ("running", 0.25, "closed", None, 0.8, [0.2]),  # 5 x budget is still the small penalty
        ("running", 0.2501, "closed", None, 0.4, [0.6]),
        ("stopped", 0.0, "closed", None, 0.0, [1.0]),
        ("failed", 0.0, "closed", None, 0.0, [1.0]),
        ("running", 0.0, "closed", 30.0, 1.0, []),
        ("running", 0.0, "closed", 30.5, 0.0, [1.0]),
        ("stopped", 0.0, "closed", 99.0, 0.0, [1.0]),  # stopped and silent: one penalty
        ("running", 0.0, "open", None, 0.5, [0.5]),
        ("running", 0.0, "half_open", None, 0.75, [0.25]),
        ("running", 0.1, "half_open", None, 0.55, [0.25, 0.2]),
        ("running", 0.9, "open", None, 0.0, [0.5, 0.6]),  # clamped at 0
    ],
)
def test_component_health_formula(
    status: str,
    error_rate: float,
    breaker: str,
    hb_age: float | None,
    score: float,
    penalties: list[float],
) -> None:
    got, ded = component_health(
        "c",
        status=status,  # type: ignore[arg-type]
        error_rate=error_rate,
        breaker=breaker,  # type: ignore[arg-type]
        heartbeat_age=hb_age,
        config=CFG,
    )
    assert got == pytest.approx(score)
    assert [d.penalty for d in ded] == penalties
    assert all(d.component == "c" for d in ded)


def test_component_health_respects_configured_budget() -> None:
    cfg = HealthConfig(error_budget=0.01)
    assert component_health(
        "c", status="running", error_rate=0.03, breaker="closed", heartbeat_age=None, config=cfg
    )[0] == pytest.approx(0.8)
    assert component_health(
        "c", status="running", error_rate=0.06, breaker="closed", heartbeat_age=None, config=cfg
    )[0] == pytest.approx(0.4)


def test_system_health_formula() -> None:
    assert system_health([], memory_mb=None, cpu_percent=None, config=CFG) == (1.0, [])
    score, ded = system_health([1.0, 0.5, 0.0], memory_mb=9e9, cpu_percent=100, config=CFG)
    assert (score, ded) == (0.5, [])  # no limits configured: process figures ignored
    cfg = HealthConfig(memory_limit_mb=100, cpu_limit_percent=50)
    score, ded = system_health([1.0, 0.5, 0.0], memory_mb=100.0, cpu_percent=50.0, config=cfg)
    assert (score, ded) == (0.5, [])  # at the limit is not over it
    score, ded = system_health([1.0, 0.5, 0.0], memory_mb=100.5, cpu_percent=None, config=cfg)
    assert score == pytest.approx(0.4)
    assert [(d.component, d.penalty) for d in ded] == [(None, 0.1)]
    assert "memory" in ded[0].reason
    score, ded = system_health([1.0, 0.5, 0.0], memory_mb=101, cpu_percent=51, config=cfg)
    assert score == pytest.approx(0.3)
    assert "cpu" in ded[1].reason
    score, _ = system_health([0.05], memory_mb=101, cpu_percent=51, config=cfg)
    assert score == 0.0  # clamped
    score, _ = system_health([1.0, 1.0, 0.0], memory_mb=None, cpu_percent=None, config=CFG)
    assert score == 0.6667  # rounded to 4 places


@pytest.mark.parametrize(
    ("score", "critical", "status"),
    [
        (1.0, False, "healthy"),
        (0.8, False, "healthy"),
        (0.7999, False, "degraded"),
        (0.5, False, "degraded"),
        (0.4999, False, "unhealthy"),
        (0.0, False, "unhealthy"),
        (1.0, True, "degraded"),  # a critical alert firing caps the status at degraded
        (0.3, True, "unhealthy"),  # unhealthy > degraded > healthy
    ],
)
def test_status_thresholds(score: float, critical: bool, status: str) -> None:
    assert status_for(score, critical_firing=critical, config=CFG) == status


def test_status_thresholds_are_configurable() -> None:
    cfg = HealthConfig(healthy_threshold=0.9, degraded_threshold=0.7)
    assert status_for(0.85, critical_firing=False, config=cfg) == "degraded"
    assert status_for(0.69, critical_firing=False, config=cfg) == "unhealthy"


def test_health_config_is_checked() -> None:
    with pytest.raises(msgspec.ValidationError, match="error_budget"):
        msgspec.convert({"error_budget": 1.5}, HealthConfig)
    with pytest.raises(msgspec.ValidationError, match="budjet"):
        msgspec.convert({"error_budjet": 0.1}, HealthConfig)
    with pytest.raises(msgspec.ValidationError, match="memory_limit_mb"):
        msgspec.convert({"memory_limit_mb": 0}, HealthConfig)


class _Source:
    """An ``EventSource`` whose state the test sets."""

    def __init__(self) -> None:
        self.state = SourceHealth("redis:events", True)

    def source_health(self) -> SourceHealth:
        return self.state


def test_an_event_source_that_cannot_read_degrades_and_fires_until_it_reads_again() -> None:
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.register_component("metrics")
    agg.register_stream("redis:events", to_component="metrics", stream_name="events")
    source = _Source()
    judge = HealthJudge(HealthConfig(), alerts=AlertEngine(), sources=[source])

    def snap() -> Snapshot:
        clock.advance(1)
        return judge.judge(agg.figures())

    ok = snap()
    assert (ok.system_status, ok.reasons) == ("healthy", [])
    assert ok.streaming.streams["redis:events"].source_up is True
    source.state = SourceHealth("redis:events", False, "connection lost: refused")
    down = snap()
    assert down.system_status == "degraded"
    assert down.health_score == 1.0  # the score is the components'; the reason is why
    assert down.reasons == [
        Deduction(None, "event source redis:events cannot read: connection lost: refused", 0.0)
    ]
    assert [(a.name, a.component, a.state) for a in down.alerts] == [
        ("EventSourceDown", "redis:events", "firing")
    ]
    assert down.streaming.streams["redis:events"].source_up is False
    source.state = SourceHealth("redis:events", True)
    back = snap()
    assert (back.system_status, back.reasons, back.alerts) == ("healthy", [], [])
    assert [(a.name, a.state) for a in back.resolved_alerts] == [("EventSourceDown", "resolved")]


def test_an_unhealthy_score_stays_unhealthy_with_a_source_down() -> None:
    """A source that cannot read makes the status at best degraded, never better."""
    agg = Aggregator()
    agg.register_component("a")
    agg.fold_events([Event("a", "stopped")])
    source = _Source()
    source.state = SourceHealth("redis:events", False, "stopped")
    snap = HealthJudge(sources=[source]).judge(agg.figures())
    assert snap.system_status == "unhealthy"
    assert snap.reasons[-1].reason == "event source redis:events cannot read: stopped"

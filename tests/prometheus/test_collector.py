"""The Prometheus exposition: names, values and labels parsed back from ``/metrics``."""

from __future__ import annotations

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.buckets import DEFAULT_HISTOGRAM_BUCKETS
from streammetrics.http.app import create_app
from streammetrics.judge.health import HealthJudge
from streammetrics.prometheus.collector import SnapshotCollector
from streammetrics.snapshot import Snapshot
from streammetrics.views.tick_cache import TickCache
from tests.support.exposition import OPENMETRICS, families, value
from tests.support.harness import running as running_blueprint
from tests.support.histograms import LADDER
from tests.support.histograms import bucket_index as ladder_index
from tests.support.http_app import (
    AGE,
    API_DONE,
    API_ERRORS,
    API_LATENCIES,
    PAY_DONE,
    STORE_DONE,
    FakeClock,
    get_once,
    running,
    seed,
    service_for,
)
from tests.support.tools import need

pytestmark = pytest.mark.anyio

#: Names the seed's Grafana panels and alert rules query: they must not change.
SEED_NAMES = {
    "system_health_score": "gauge",
    "system_uptime_seconds": "gauge",
    "system_error_rate": "gauge",
    "component_health": "gauge",
    "circuit_breaker_state": "gauge",
}


async def _scrape(service: TickCache, accept: str | None = None) -> tuple[str, str]:
    headers = {"accept": accept} if accept else {}
    r = await get_once(service, "/metrics", headers=headers)
    assert r.status_code == 200
    return r.headers["content-type"], r.text


def _check_figures(fams: dict[str, Metric]) -> None:
    for name, typ in SEED_NAMES.items():
        assert fams[name].type == typ, name
    assert value(fams["system_health_score"], "system_health_score") == round(2.5 / 3, 4)
    assert value(fams["system_uptime_seconds"], "system_uptime_seconds") == AGE
    done = API_DONE + STORE_DONE + PAY_DONE
    assert value(fams["system_error_rate"], "system_error_rate") == pytest.approx(
        API_ERRORS / (done + API_ERRORS)
    )
    assert value(fams["system_items_per_second"], "system_items_per_second") == pytest.approx(
        done / AGE
    )
    health = fams["component_health"]
    assert value(health, "component_health", component="task_api") == 1.0
    assert value(health, "component_health", component="payments") == 0.0
    items = fams["component_items_processed"]
    assert items.type == "counter"
    assert value(items, "component_items_processed_total", component="task_api") == API_DONE
    assert value(items, "component_items_processed_total", component="task_store") == STORE_DONE
    errors = fams["component_errors"]
    assert value(errors, "component_errors_total", component="task_api") == API_ERRORS
    breaker = fams["circuit_breaker_state"]
    assert value(breaker, "circuit_breaker_state", component="payments") == 1.0
    # Only components with a breaker have a series: task_api and task_store have none.
    assert {s.labels["component"] for s in breaker.samples} == {"payments"}
    failures = fams["circuit_breaker_failures"]
    assert value(failures, "circuit_breaker_failures_total", component="payments") == 1.0
    ips = fams["component_items_per_second"]
    assert value(ips, "component_items_per_second", component="task_api", window="60s") == (
        pytest.approx(API_DONE / AGE)
    )
    assert value(ips, "component_items_per_second", component="task_api", window="10s") == 0.0
    erate = fams["component_error_rate"]
    assert value(erate, "component_error_rate", component="task_api", window="300s") == (
        pytest.approx(API_ERRORS / (API_DONE + API_ERRORS))
    )
    score = fams["component_health_score"]
    assert value(score, "component_health_score", component="payments") == 0.5
    streams = fams["stream_messages"]
    assert value(streams, "stream_messages_total", stream="input") == API_DONE
    binding = "task_api->task_store"
    assert value(fams["stream_buffer_used"], "stream_buffer_used", stream=binding) == 3
    assert value(fams["stream_buffer_size"], "stream_buffer_size", stream=binding) == 100
    assert value(fams["traces"], "traces_total") == 1
    assert value(fams["spans_active"], "spans_active") == 1
    rejected = fams["streammetrics_events_rejected"]
    assert value(rejected, "streammetrics_events_rejected_total", reason="malformed") == 3
    assert value(fams["alerts_firing"], "alerts_firing", level="critical") == 0
    rss = fams["streammetrics_process_resident_memory_bytes"]
    assert value(rss, "streammetrics_process_resident_memory_bytes") == 512 * 2**20
    cpu = fams["streammetrics_process_cpu_percent"]
    assert value(cpu, "streammetrics_process_cpu_percent") == 25.5

    quant = fams["component_latency_p99_seconds"]
    p99 = value(quant, "component_latency_p99_seconds", component="task_api", window="60s")
    assert API_LATENCIES[0] < p99 <= LADDER[ladder_index(API_LATENCIES[1])]
    hist = fams["component_latency_seconds"]
    assert hist.type == "histogram"
    buckets = [
        (s.labels["le"], s.value)
        for s in hist.samples
        if s.name == "component_latency_seconds_bucket" and s.labels["component"] == "task_api"
    ]
    # The default exported buckets: prometheus-client's own.
    assert [float(le) for le, _v in buckets[:-1]] == list(DEFAULT_HISTOGRAM_BUCKETS)
    assert buckets[-1] == ("+Inf", 2)
    counts = [v for _le, v in buckets]
    assert counts == sorted(counts)  # cumulative
    for le, n in buckets[:-1]:  # each bucket counts the latencies at or below its bound
        assert n == sum(x <= float(le) for x in API_LATENCIES)
    assert value(hist, "component_latency_seconds_count", component="task_api") == 2
    assert value(hist, "component_latency_seconds_sum", component="task_api") == pytest.approx(
        sum(API_LATENCIES)
    )
    # Components never timed expose no histogram (42 zero buckets each would be pure cost).
    assert not [s for s in hist.samples if s.labels["component"] == "task_store"]


async def test_text_format_has_the_seed_names_and_the_folded_figures(
    service: TickCache,
) -> None:
    content_type, text = await _scrape(service)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE system_uptime_seconds gauge" in text
    assert "# TYPE component_items_processed_total counter" in text
    _check_figures(families(text))


async def test_openmetrics_when_the_scraper_asks(service: TickCache) -> None:
    # What Prometheus 3 sends: OpenMetrics first, text as fallbacks.
    accept = (
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )
    content_type, text = await _scrape(service, accept)
    assert content_type == OPENMETRICS
    assert text.endswith("# EOF\n")
    _check_figures(families(text, openmetrics=True))


async def test_plain_text_when_the_scraper_does_not_ask_for_openmetrics(
    service: TickCache,
) -> None:
    content_type, _text = await _scrape(service, "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
    assert content_type.startswith("text/plain; version=0.0.4")


async def test_label_values_round_trip_quotes_backslashes_and_newlines(clock: FakeClock) -> None:
    name = 'we"ird\\comp\nname'
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.fold_events([Event(name, "processed", count=7, stream='s"\\\n')])
    service = service_for(agg, clock)
    for accept, om in ((None, False), (OPENMETRICS, True)):
        _ctype, text = await _scrape(service, accept)
        fams = families(text, openmetrics=om)
        items = fams["component_items_processed"]
        assert value(items, "component_items_processed_total", component=name) == 7
        assert value(fams["stream_messages"], "stream_messages_total", stream='s"\\\n') == 7
    async with running(create_app(service)) as client:
        body = (await client.get("/components")).json()
    assert body["components"][name]["items_processed"] == 7


def test_collector_name_clashes(clock: FakeClock) -> None:
    registry = CollectorRegistry(auto_describe=False)
    snap = HealthJudge().judge(seed(clock).figures())
    registry.register(SnapshotCollector(lambda: snap))
    names = {m.name for m in registry.collect()}
    assert {"system_health_score", "component_items_processed"} <= names
    # describe() lets the registry refuse a second collector exposing the same names.
    clash = Counter("component_items_processed", "clash", ["component"], registry=None)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(clash)
    empty = CollectorRegistry(auto_describe=False)
    empty.register(SnapshotCollector(lambda: None))
    assert list(empty.collect()) == []


async def test_promtool_accepts_the_exposition(service: TickCache) -> None:
    _ctype, text = await _scrape(service)
    promtool = need("promtool")  # CI installs it: missing is a failure, not a skip
    result = await anyio.run_process(
        [promtool, "check", "metrics"], input=text.encode(), check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


GUARDED = """
system:
  name: guarded
  components:
    - {name: source, type: Source, config: {rate: 200}}
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - name: proc
      type: StreamProcessor
      config: {circuit_breaker: {failure_threshold: 3}}
    - {name: store, type: Store, config: {circuit_breaker: {enabled: false}}}
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: source, to_component: proc}
    - {from_component: api, to_component: proc}
    - {from_component: proc, to_component: store}
"""


async def test_circuit_breaker_state_only_for_components_with_a_breaker() -> None:
    """A consumer's breaker and an API's (around its sends) are exported (closed, 0)
    before their first transition; the source, the store whose breaker is disabled and
    the endpoint have none: no series, and no entry under ``circuit_breakers``."""
    async with running_blueprint(GUARDED) as (harness, _agg):
        guarded = {n for n, c in harness.components.items() if c.ctx.breaker is not None}
        assert guarded == {"api", "proc"}
        port = next(w.port for w in harness.listening if w.component == "metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            with anyio.fail_after(5):
                while True:  # until the store has taken items through the processor
                    body = (await client.get("/components")).json()
                    if body["components"]["store"]["items_processed"] > 0:
                        break
                    await anyio.sleep(0.02)
            json_view = (await client.get("/metrics/json")).json()
            text = (await client.get("/metrics")).text
    assert set(body["components"]) == {"source", "api", "proc", "store", "metrics"}
    for view in (body, json_view):
        assert set(view["circuit_breakers"]) == guarded
        for name in guarded:
            assert view["circuit_breakers"][name] == {
                "state": "closed",
                "failure_count": 0,
                "last_failure": None,
                "time_open_seconds": 0.0,
                "transitions": 0,
            }
    fams = families(text)
    state = fams["circuit_breaker_state"]
    assert {s.labels["component"] for s in state.samples} == guarded
    assert value(state, "circuit_breaker_state", component="proc") == 0.0
    assert value(state, "circuit_breaker_state", component="api") == 0.0
    failures = fams["circuit_breaker_failures"]
    assert {s.labels["component"] for s in failures.samples} == guarded


async def test_no_breaker_anywhere_no_circuit_breaker_families(clock: FakeClock) -> None:
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.fold_events([Event("a", "processed", count=3), Event("b", "error", detail="x")])
    _ctype, text = await _scrape(service_for(agg, clock))
    fams = families(text)
    assert "component_health" in fams
    # No HELP/TYPE pair without a sample either: nothing claims a breaker exists.
    assert "circuit_breaker_state" not in fams and "circuit_breaker_failures" not in fams
    assert "circuit_breaker" not in text


def _prometheus(snap: Snapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition of ``snap``, by sample name."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_span_figures_in_prometheus() -> None:
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, span_timeout_s=1.0)
    agg.fold_events(
        [
            Event("api", "span_start", trace_id="t1", span_id="a1"),
            Event("db", "span_start", trace_id="t1", span_id="d1"),
            Event("db", "processed"),
        ]
    )
    clock.advance(0.5)
    agg.fold_events([Event("api", "span_end", span_id="a1")])
    clock.advance(1.0)  # d1 expires
    got = _prometheus(HealthJudge().judge(agg.figures()))
    assert got["component_span_latency_p50_seconds"] == [
        # one span of 0.5 s: its bucket is clamped to it
        ({"component": "api", "window": "60s"}, pytest.approx(0.5))
    ]
    assert [c["component"] for c, _v in got["component_span_latency_p99_seconds"]] == ["api"]
    assert got["spans_expired_total"] == [({}, 1.0)]
    assert got["spans_active"] == [({}, 0.0)]
    assert got["traces_total"] == [({}, 1.0)]

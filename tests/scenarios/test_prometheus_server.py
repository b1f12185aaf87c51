"""A real Prometheus server scraping real ``streammetrics run`` processes, answering PromQL
with our figures; the deploy/ rules and dashboard queries run on it. Fails (not skips)
without prometheus / redis-server: CI installs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.support.paths import ROOT, SUPPORT
from tests.support.servers import Prometheus, RedisServer, Run, redis_server
from tests.support.waiting import wait_until

DEPLOY = ROOT / "deploy"


def _scalar(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _rule_exprs() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in doc["dashboard"]["panels"] for t in p["targets"]]


def test_prometheus_scrapes_a_running_system_and_answers_with_its_figures(
    tmp_path: Path,
) -> None:
    blueprint = tmp_path / "scraped.yaml"
    blueprint.write_text(
        """
system:
  name: scraped
  components:
    - {name: source, type: Source, config: {rate: 300, limit: 900, error_ratio: 0.1, batch: 30}}
    - {name: worker, type: StreamProcessor, config: {variant: map}}
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.2}}
  bindings:
    - {from_component: source, to_component: worker, stream_name: input}
"""
    )
    run = Run(blueprint)
    prom: Prometheus | None = None
    try:
        url = run.wait_listening()["metrics"]
        target = url.removeprefix("http://")
        prom = Prometheus(tmp_path, [target], rules=DEPLOY / "rules.yml")
        prom.wait_for('up{job="streammetrics"} == 1')

        def done() -> dict[str, Any] | None:
            w = run.json("/metrics/json")["detailed_components"]["worker"]
            return w if w["items_processed"] + w["errors_encountered"] == 900 else None

        worker = wait_until(done, timeout=30, what="the source's 900 items")
        assert worker["errors_encountered"] == 90
        # Prometheus answers with exactly what the endpoint counted.
        processed = 'component_items_processed_total{component="worker"}'
        prom.wait_for(processed, lambda r: r and _scalar(r) == worker["items_processed"])
        errors = prom.query('component_errors_total{component="worker"}')
        assert _scalar(errors) == 90
        health = prom.query("system_health_score")
        assert 0 <= _scalar(health) <= 1
        # the deploy/rules.yml recording rules evaluate on our series
        rate = prom.wait_for("component:items_processed:rate5m", timeout=30)
        assert {r["metric"]["component"] for r in rate} >= {"worker", "source"}
        # every rule and dashboard query is valid PromQL against our series
        for expr in [*_rule_exprs(), *_dashboard_exprs()]:
            prom.query(expr)
        spec_panels = [prom.query(e) for e in _dashboard_exprs()[:3]]
        assert all(spec_panels), spec_panels  # the specification's panels show data
    finally:
        run.stop()
        if prom is not None:
            prom.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as srv:
        yield srv


def test_many_instances_in_one_consumer_group_sum_up_in_prometheus(
    tmp_path: Path, server: RedisServer
) -> None:
    n, stream = 8000, "fleet"
    blueprint = tmp_path / "fleet.yaml"
    blueprint.write_text(
        f"""
system:
  name: fleet
  components:
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        tick_s: 0.2
        source: {{redis: {{url: "{server.url}", stream: {stream}, group: g, block_ms: 100}}}}
"""
    )
    runs = [Run(blueprint), Run(blueprint)]
    prom: Prometheus | None = None
    try:
        targets = [run.wait_listening()["metrics"].removeprefix("http://") for run in runs]
        prom = Prometheus(tmp_path, targets)
        prom.wait_for('count(up{job="streammetrics"} == 1) == 2')
        pub = subprocess.run(
            [
                sys.executable,
                str(SUPPORT / "publisher.py"),
                server.url,
                stream,
                "--events",
                str(n),
                "--batch",
                "100",
                "--pace-s",
                "0.001",
                "--components",
                "4",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert pub.returncode == 0, pub.stderr
        r = redis.Redis.from_url(server.url)
        try:
            wait_until(
                lambda: (g := r.xinfo_groups(stream)[0])["lag"] == 0 and g["pending"] == 0,
                what="group drained",
            )
            assert len(r.xinfo_consumers(stream, "g")) == 2
        finally:
            r.close()
        # Each instance holds its share; Prometheus adds them up.
        per_instance = prom.wait_for(
            "sum by (instance) (streammetrics_redis_events_total)",
            lambda res: len(res) == 2 and sum(float(x["value"][1]) for x in res) == n,
        )
        assert all(float(x["value"][1]) > 0 for x in per_instance), per_instance
        by_component = prom.query("sum by (component) (component_items_processed_total)")
        assert {x["metric"]["component"]: float(x["value"][1]) for x in by_component} == {
            f"svc{k}": n / 4 for k in range(4)
        } | {"metrics": 0.0}
        # window histograms merge: a quantile over the summed buckets of both instances
        p99 = _scalar(
            prom.query("histogram_quantile(0.99, sum by (le) (component_latency_seconds_bucket))")
        )
        assert 0.08 <= p99 <= 0.15  # latencies 1..100 ms, log buckets
        count = prom.query("sum(component_latency_seconds_count)")
        assert _scalar(count) == n
    finally:
        for run in runs:
            run.stop()
        if prom is not None:
            prom.stop()

"""deploy/: the Prometheus config, the rules and their unit tests (promtool), the
Alertmanager config (amtool), the Grafana dashboard and the fleet blueprint. promtool and
amtool are required: CI installs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from streammetrics.blueprint import load_blueprint
from tests.support.paths import ROOT
from tests.support.tools import need

DEPLOY = ROOT / "deploy"


def promtool(*args: str) -> str:
    result = subprocess.run(
        [need("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return doc


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["dashboard"]["panels"] for t in p["targets"]]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 15 rules found" in promtool("check", "rules", "rules.yml")


def test_the_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_the_rules_unit_tests_can_fail(tmp_path: Path) -> None:
    # A wrong expectation must fail, or the passing test above proves nothing.
    broken = (DEPLOY / "rules_test.yml").read_text().replace("value: 10", "value: 11")
    (tmp_path / "rules.yml").write_text((DEPLOY / "rules.yml").read_text())
    (tmp_path / "rules_test.yml").write_text(broken)
    result = subprocess.run(
        [need("promtool"), "test", "rules", "rules_test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "component:items_processed:rate5m" in result.stdout + result.stderr


def test_the_specification_rules_are_kept_unchanged() -> None:
    text = (DEPLOY / "rules.yml").read_text()
    for line in (
        "- alert: SystemUnhealthy",
        "expr: system_health_score < 0.8",
        "- alert: ComponentDown",
        "expr: component_health == 0",
        'summary: "Component {{ $labels.component }} is unhealthy"',
    ):
        assert line in text


def test_the_dashboard_has_the_specification_panels_and_more() -> None:
    d = dashboard()["dashboard"]
    assert d["title"] == "AutoCoder System Metrics"
    by_title = {p["title"]: p for p in d["panels"]}
    for title, expr in (
        ("System Health Score", "system_health_score"),
        ("Component Health", "component_health"),
        ("Error Rate", "system_error_rate"),
    ):
        assert by_title[title]["targets"][0]["expr"] == expr
    assert len(d["panels"]) > 10
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_exprs()
    assert any("histogram_quantile(0.99, sum by (le)" in e for e in exprs)
    assert any("streammetrics_redis_consumer_lag" in e for e in exprs)
    for p in d["panels"]:  # on the 24-column grid, no overlaps
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
    cells = [
        (x, y)
        for p in d["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))


def test_the_fleet_blueprint_is_valid() -> None:
    bp = load_blueprint(DEPLOY / "streammetrics.yaml")
    cfg = bp.component("system_metrics").config
    assert cfg.source.redis.group == "streammetrics"


def amtool(*args: str) -> str:
    result = subprocess.run(
        [need("amtool"), *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def test_amtool_accepts_the_alertmanager_config_and_routes_by_severity() -> None:
    out = amtool("check-config", "alertmanager.yml")
    assert "SUCCESS" in out and "1 inhibit rules" in out and "2 receivers" in out
    config = ["config", "routes", "test", "--config.file=alertmanager.yml"]
    assert amtool(*config, "severity=critical", "alertname=ComponentDown").startswith("oncall")
    assert amtool(*config, "severity=warning", "alertname=HighErrorRate").startswith("team")


def test_amtool_refuses_a_broken_alertmanager_config(tmp_path: Path) -> None:
    # The check must be able to fail, or the passing one above proves nothing.
    broken = (DEPLOY / "alertmanager.yml").read_text().replace("receiver: oncall", "receiver: x")
    (tmp_path / "alertmanager.yml").write_text(broken)
    result = subprocess.run(
        [need("amtool"), "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert 'undefined receiver "x"' in result.stdout + result.stderr


def test_the_fleet_and_prometheus_send_to_the_one_alertmanager() -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (am,) = prometheus["alerting"]["alertmanagers"]
    (target,) = am["static_configs"][0]["targets"]
    cfg = load_blueprint(DEPLOY / "streammetrics.yaml").component("system_metrics").config
    (url,) = cfg.alertmanager.urls
    assert urlsplit(url).netloc == target == "localhost:9093"

"""deploy/: the Prometheus config, the rules and their unit tests (promtool), the Grafana
dashboard and the fleet blueprint. promtool is required: CI installs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

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

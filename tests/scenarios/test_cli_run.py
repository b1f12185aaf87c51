"""``streammetrics run`` and ``streammetrics demo`` as a user runs them: real subprocesses serving
real ports, stopped by real signals."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.support.paths import BLUEPRINTS
from tests.support.servers import Cli, Run, free_offset


def test_run_basic_blueprint_serves_every_route_and_stops_on_sigterm() -> None:
    offset = free_offset([8000, 9000])
    run = Run(BLUEPRINTS / "basic.yaml", "--port-offset", str(offset))
    try:
        urls = list(run.wait_listening(2).values())
        metrics = f"http://127.0.0.1:{9000 + offset}"
        api = f"http://127.0.0.1:{8000 + offset}"
        assert metrics in urls and api in urls
        with httpx.Client(timeout=5) as c:
            for i in range(5):
                assert c.post(f"{api}/items", json={"n": i}).status_code == 202
            deadline = time.monotonic() + 10
            while True:
                comps = c.get(f"{metrics}/components").json()["components"]
                if comps["data_store"]["items_processed"] == 5:
                    break
                assert time.monotonic() < deadline, comps
                time.sleep(0.2)
            assert comps["app_server"]["items_processed"] == 5
            assert set(comps) == {"app_server", "data_store", "system_metrics"}
            health = c.get(f"{metrics}/health")
            assert health.status_code == 200
            assert health.json()["components"]["total"] == 3
            text = c.get(f"{metrics}/metrics").text
            assert 'component_items_processed_total{component="data_store"} 5.0' in text
    finally:
        code, out, _err = run.stop()
    assert code == 0
    assert "SIGTERM: stopping" in out


def test_multi_environment_blueprint_serves_each_port() -> None:
    offset = free_offset([9000, 9001, 9002])
    run = Run(BLUEPRINTS / "multi_environment.yaml", "--port-offset", str(offset))
    try:
        urls = list(run.wait_listening(3).values())
        assert len(set(urls)) == 3
        with httpx.Client(timeout=5) as c:
            for url in urls:
                body = c.get(f"{url}/").json()
                assert body["service"] == "System Metrics API"
                assert c.get(f"{url}/health").json()["components"]["total"] == 4
    finally:
        code, _out, _err = run.stop()
    assert code == 0


def test_demo_shows_moving_numbers() -> None:
    offset = free_offset([8000, 9000])
    run = Cli("demo", "--port-offset", str(offset))
    try:
        run.wait_listening(2)
        url = f"http://127.0.0.1:{9000 + offset}"
        with httpx.Client(timeout=5) as c:
            time.sleep(1.5)
            first = c.get(f"{url}/metrics/json").json()
            time.sleep(1.5)
            second = c.get(f"{url}/metrics/json").json()
        a = first["detailed_components"]["enrich"]["items_processed"]
        b = second["detailed_components"]["enrich"]["items_processed"]
        assert b > a > 0
        assert second["performance"]["items_per_second"] > 0
        assert second["detailed_components"]["enrich"]["errors_encountered"] > 0
        assert second["streaming"]["total_messages"] > first["streaming"]["total_messages"]
    finally:
        code, _out, _err = run.stop()
    assert code == 0


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_run_stops_cleanly_on_sigint(sig: signal.Signals) -> None:
    offset = free_offset([8000, 9000])
    run = Run(BLUEPRINTS / "basic.yaml", "--port-offset", str(offset))
    run.wait_listening(2)
    code, out, _err = run.stop(sig, timeout=15)
    assert code == 0
    assert "stopped" in out

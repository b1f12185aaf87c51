"""The examples, run as a user runs them: ``python examples/NAME.py --port 0`` until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.paths import ROOT
from tests.support.process import Spawned

EXAMPLES = ROOT / "examples"


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

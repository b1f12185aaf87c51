"""Embedding: a MetricsEndpoint made in code, without a blueprint or a harness."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import ConfigError

pytestmark = pytest.mark.anyio


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
    snap = ep.aggregator.snapshot()
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

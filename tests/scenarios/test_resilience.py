"""The specification's "Error Handling": collectors that fail give partial figures with
an ``errors`` list, never a failed response."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streammetrics.http.app import create_app
from tests.support.http_app import API_DONE, BrokenSampler, FakeClock, running, seed, service_for

pytestmark = pytest.mark.anyio


async def test_a_failing_sampler_and_a_failing_binding_probe_still_give_the_rest() -> None:
    clock = FakeClock()
    agg = seed(clock)

    def gone() -> tuple[int, int]:
        raise RuntimeError("binding closed under us")

    agg.register_stream(
        "task_store->archive:input",
        from_component="task_store",
        to_component="archive",
        stream_name="input",
        buffer=gone,
    )
    service = service_for(agg, clock, sampler=BrokenSampler())
    async with running(create_app(service)) as c:
        body = (await c.get("/metrics/json")).json()
        components = await c.get("/components")
        health = await c.get("/health")
        text = (await c.get("/metrics")).text
    assert sorted(body["errors"]) == [
        "process sampler failed: OSError: no /proc here",
        "stream task_store->archive:input: buffer statistics failed: "
        "RuntimeError: binding closed under us",
    ]
    assert body["detailed_components"]["task_api"]["items_processed"] == API_DONE
    assert body["performance"]["memory_usage_mb"] is None
    stream = body["streaming"]["streams"]["task_store->archive:input"]
    assert (stream["buffer_used"], stream["buffer_size"]) == (None, None)
    assert components.status_code == 200
    assert health.status_code in (200, 503)  # judged on what could be gathered
    assert set(health.json()) >= {"status", "health_score", "components"}
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (errors,) = families["streammetrics_collection_errors"].samples
    assert errors.value == 2
    (items,) = [
        s
        for s in families["component_items_processed"].samples
        if s.labels == {"component": "task_api"} and s.name.endswith("_total")
    ]
    assert items.value == API_DONE

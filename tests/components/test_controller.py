"""The Controller, run for real: each item to the output its key names, the rest round-robin."""

from __future__ import annotations

from pathlib import Path

import pytest

from streammetrics.components.controller import Controller
from tests.support.harness import rows, running, snapshot, stopped
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_router_routes_by_key_then_round_robin(tmp_path: Path) -> None:
    orders, audit = tmp_path / "orders.db", tmp_path / "audit.db"
    bp = f"""
system:
  name: r
  components:
    - {{name: src, type: Source,
       config: {{rate: 50000, batch: 100, limit: 40, routes: [orders, orders, audit_store, x]}}}}
    - {{name: router, type: Controller, config: {{variant: router, route_key: route}}}}
    - {{name: orders_store, type: Store, config: {{path: "{orders}"}}}}
    - {{name: audit_store, type: Store, config: {{path: "{audit}"}}}}
  bindings:
    - {{from_component: src, to_component: router}}
    - {{from_component: router, to_component: orders_store, stream_name: orders}}
    - {{from_component: router, to_component: audit_store, stream_name: audit}}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "router", "orders_store", "audit_store"))
        snap = snapshot(harness, agg)
        router = harness.components["router"]
        assert isinstance(router, Controller)
        stats = router.statistics()
    # 20 "orders" by stream name, 10 "audit_store" by component name, 10 "x" round-robin
    assert (stats.by_key, stats.round_robin, stats.unroutable) == (30, 10, 0)
    assert stats.routed == {"router->orders_store:orders": 25, "router->audit_store:audit": 15}
    assert {r["route"] for r in rows(orders)} == {"orders", "x"}
    assert {r["route"] for r in rows(audit)} == {"audit_store", "x"}
    assert len(rows(orders)) == 25 and len(rows(audit)) == 15
    streams = snap.streaming.streams
    assert streams["router->orders_store:orders"].total_messages == 25
    assert streams["router->audit_store:audit"].total_messages == 15
    assert snap.detailed_components["router"].items_processed == 40

"""Alerts delivered to a real Alertmanager (``prometheus-alertmanager``, started per test
on a loopback port, clustering off) whose webhook receiver is a small HTTP server of the
test: firing with our labels, resolved, resent, the payload as Alertmanager stores it,
and Alertmanager down, hung or refusing while nothing else waits on it. Fails (not skips)
without the program: CI installs it."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import ConfigError
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.model.events import Event
from streammetrics.transports.alertmanager import AlertmanagerNotifier, rfc3339
from streammetrics.transports.alertmanager_config import AlertmanagerConfig
from tests.support.alerts import System, half_failing
from tests.support.exposition import by_label, families
from tests.support.harness import started
from tests.support.servers import Alertmanager, free_port
from tests.support.waiting import until
from tests.support.webhook import Webhook, webhook

RULE = {"name": "ErrorFlood", "expr": "error_rate > 0.5", "for": "200ms", "level": "critical"}


@pytest.fixture
def hook() -> Iterator[Webhook]:
    with webhook() as h:
        yield h


@pytest.fixture
def am(tmp_path: Path, hook: Webhook) -> Iterator[Alertmanager]:
    server = Alertmanager(tmp_path, hook.url)
    try:
        yield server
    finally:
        server.stop()


def _config(*urls: str, **kw: Any) -> dict[str, Any]:
    return {"urls": list(urls), "resend_s": 1.0, "backoff_s": 0.05, "max_backoff_s": 0.2, **kw}


@asynccontextmanager
async def endpoint(
    *urls: str, retention: float = 300.0, **kw: Any
) -> AsyncIterator[MetricsEndpoint]:
    ep = MetricsEndpoint(
        name="metrics",
        port=0,
        tick_s=0.05,
        builtin_alerts=False,
        alerts=[RULE],
        alert_retention_s=retention,
        alertmanager=_config(*urls, **kw),
    )
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(ep.run)
            yield ep
            tg.cancel_scope.cancel()


async def get(ep: MetricsEndpoint, path: str) -> Any:
    """The JSON body of ``path`` on ``ep``, without blocking the loop that serves it."""
    async with httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
        return (await client.get(path)).json()


def flood(ep: MetricsEndpoint, component: str = "worker") -> None:
    ep.probe(component).error(50)


def recover(ep: MetricsEndpoint, component: str = "worker") -> None:
    ep.probe(component).processed(500)


def _ours(status: str, alertname: str = "ErrorFlood") -> Any:
    return lambda alerts: [
        a for a in alerts if a["status"] == status and a["labels"]["alertname"] == alertname
    ]


def _counts(ep: MetricsEndpoint) -> dict[str, float]:
    assert ep.alertmanager is not None
    (st,) = ep.alertmanager.statistics().targets
    return {"sent": st.sent, "failed": st.failed, "rejected": st.rejected}


@pytest.mark.anyio
async def test_an_error_flood_reaches_the_webhook_firing_then_resolved(
    am: Alertmanager, hook: Webhook
) -> None:
    async with endpoint(am.url) as ep:
        flood(ep)
        (firing,) = await hook.wait_for(_ours("firing"))
        assert firing["labels"] == {
            "alertname": "ErrorFlood",
            "severity": "critical",
            "component": "worker",
            "system": "metrics",  # in code, without a blueprint: the endpoint's name
            "endpoint": "metrics",
            "instance": f"127.0.0.1:{ep.port}",
        }
        ann = firing["annotations"]
        assert ann["figure"] == "error_rate" and float(ann["value"]) == 1.0
        assert ann["summary"] == "ErrorFlood: error_rate > 0.5"
        assert "error_rate > 0.5 for 0.2s" in ann["description"]
        assert "error_rate = 1" in ann["description"]
        assert firing["generatorURL"] == f"{ep.url}/alerts"
        shown = (await get(ep, "/alerts"))["alerts"]
        assert _unix(firing["startsAt"]) == pytest.approx(shown[0]["timestamp"], abs=1e-3)

        recover(ep)
        (resolved,) = await hook.wait_for(_ours("resolved"))
        gone = (await get(ep, "/alerts"))["resolved_alerts"]
        assert resolved["labels"] == firing["labels"]
        assert resolved["startsAt"] == firing["startsAt"]
        assert _unix(resolved["endsAt"]) == pytest.approx(gone[0]["resolved_at"], abs=1e-3)
        assert _counts(ep)["failed"] == 0


@pytest.mark.anyio
async def test_the_payload_as_alertmanager_lists_it(am: Alertmanager) -> None:
    async with endpoint(am.url, labels={"env": "test"}) as ep:
        flood(ep, "db")
        flood(ep, "cache")
        listed = {a["labels"]["component"]: a for a in await listing(am, 2)}
        shown = {a["component"]: a for a in (await get(ep, "/alerts"))["alerts"]}
        assert set(listed) == {"db", "cache"}
        for component, a in listed.items():
            assert a["labels"] == {
                "alertname": "ErrorFlood",
                "severity": "critical",
                "component": component,
                "system": "metrics",
                "endpoint": "metrics",
                "instance": f"127.0.0.1:{ep.port}",
                "env": "test",
            }
            assert a["status"]["state"] == "active"
            assert a["generatorURL"] == f"{ep.url}/alerts"
            assert _unix(a["startsAt"]) == pytest.approx(shown[component]["timestamp"], abs=1e-3)
            assert set(a["annotations"]) == {"summary", "description", "figure", "value"}
            # Valid for four resends: Alertmanager keeps it while we keep resending.
            ends = _unix(a["endsAt"])
            assert time.time() + 2.5 < ends < time.time() + 4.5
        recover(ep, "db")
        (left,) = await listing(am, 1)
        assert left["labels"]["component"] == "cache"


async def listing(am: Alertmanager, n: int, within: float = 10) -> list[dict[str, Any]]:
    """Alertmanager's active alerts once it lists ``n`` of them (asked without blocking
    the loop the endpoint runs on)."""
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=am.url, timeout=5) as client:
        with anyio.move_on_after(within):
            while len(got := (await client.get("/api/v2/alerts")).json()) != n:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return got
    raise AssertionError(f"Alertmanager lists {got}, not {n} alerts, after {within}s")


def _unix(rfc: str) -> float:
    """Unix seconds of an RFC 3339 time (Alertmanager drops trailing zeros of the
    fraction: ``.97Z`` for our ``.970Z``)."""
    return datetime.fromisoformat(rfc.replace("Z", "+00:00")).timestamp()


@pytest.mark.anyio
async def test_a_firing_alert_is_resent_every_resend_s_with_its_end_moved_on(
    am: Alertmanager,
) -> None:
    async with endpoint(am.url, resend_s=0.3) as ep:
        flood(ep)
        (a,) = await listing(am, 1)
        first = _unix(a["endsAt"])
        sent = _counts(ep)["sent"]
        await anyio.sleep(1.0)
        assert 2 <= _counts(ep)["sent"] - sent <= 5  # about one every 0.3 s
        # Still one alert: a resend updates it, it does not add one.
        (a,) = await listing(am, 1)
        assert _unix(a["endsAt"]) > first + 0.5


@pytest.mark.anyio
async def test_alertmanager_down_blocks_nothing_is_counted_and_delivery_resumes(
    tmp_path: Path, hook: Webhook
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with endpoint(url) as ep:
        flood(ep)
        await until(lambda: _counts(ep)["failed"] >= 3)
        async with httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
            t0 = time.monotonic()
            for _ in range(5):
                assert (await client.get("/health")).status_code in (200, 503)
            assert time.monotonic() - t0 < 1.0
            body = (await client.get("/metrics/json")).json()
            fam = body["custom"]["streammetrics_alertmanager_notifications"]
            failed = [s for s in fam["samples"] if s["labels"]["result"] == "failed"]
            assert failed[0]["labels"]["alertmanager"] == url and failed[0]["value"] >= 3
            text = (await client.get("/metrics")).text
        fams = families(text)
        sent = by_label(fams["streammetrics_alertmanager_notifications"], "result", "_total")
        assert sent["failed"] >= 3 and sent["sent"] == 0
        assert ep.alertmanager is not None
        (st,) = ep.alertmanager.statistics().targets
        assert st.consecutive_failures >= 3 and "ConnectError" in (st.last_error or "")
        assert st.due == 1

        server = await anyio.to_thread.run_sync(Alertmanager, tmp_path, hook.url, port)
        try:
            await hook.wait_for(_ours("firing"))
            await until(lambda: _counts(ep)["sent"] >= 1)
            (st,) = ep.alertmanager.statistics().targets
            assert st.consecutive_failures == 0 and st.due == 0
            recover(ep)
            await hook.wait_for(_ours("resolved"))
        finally:
            server.stop()


@pytest.mark.anyio
async def test_a_hung_alertmanager_costs_a_timeout_and_no_tick() -> None:
    with socket.socket() as hung:  # listens, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        async with endpoint(url, timeout_s=0.3) as ep:
            flood(ep)
            await until(lambda: _counts(ep)["failed"] >= 2, within=10)
            assert ep.alertmanager is not None
            (st,) = ep.alertmanager.statistics().targets
            assert st.last_error == "no answer within 0.3s"
            before = ep.service.statistics().snapshots_built
            await anyio.sleep(0.5)
            assert ep.service.statistics().snapshots_built - before >= 5  # ticks go on


@pytest.mark.anyio
async def test_each_alertmanager_gets_every_alert_and_one_down_does_not_hold_the_other(
    am: Alertmanager, hook: Webhook
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with endpoint(down, am.url) as ep:
        flood(ep)
        await hook.wait_for(_ours("firing"))
        assert ep.alertmanager is not None
        dead, alive = ep.alertmanager.statistics().targets
        assert (dead.url, alive.url) == (down, am.url)
        assert dead.failed >= 1 and dead.sent == 0 and alive.sent >= 1


@pytest.mark.anyio
async def test_a_blueprint_endpoint_labels_its_alerts_with_the_system_name(
    am: Alertmanager, hook: Webhook
) -> None:
    bp = f"""
system:
  name: orders
  components:
    - {{name: src, type: Source, config: {{rate: 200, error_ratio: 1.0, latency_ms: 0}}}}
    - {{name: proc, type: StreamProcessor}}
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        tick_s: 0.05
        builtin_alerts: false
        alerts: [{{name: ErrorFlood, expr: "error_rate > 0.5", for: 200ms, component: proc}}]
        alertmanager: {{urls: ["{am.url}"], resend_s: 1}}
  bindings:
    - {{from_component: src, to_component: proc, stream_name: items}}
"""
    async with started(bp, within=30):
        (firing,) = await hook.wait_for(_ours("firing"))
        assert firing["labels"]["system"] == "orders"
        assert firing["labels"]["endpoint"] == "metrics"
        assert firing["labels"]["component"] == "proc"
        assert firing["labels"]["severity"] == "warning"


@pytest.mark.parametrize(
    ("config", "path", "reason"),
    [
        ({"urls": []}, "config.alertmanager.urls", "length >= 1"),
        ({"urls": ["ftp://x"]}, "config.alertmanager", "not an http:// or https:// URL"),
        ({"urls": ["http://a:9093", "http://a:9093/"]}, "config.alertmanager", "twice"),
        ({"urls": ["http://a"], "labels": {"system": "x"}}, "config.alertmanager", "own labels"),
        ({"urls": ["http://a"], "labels": {"bad-name": "x"}}, "config.alertmanager", "label"),
        ({"urls": ["http://a"], "resend_s": 0}, "config.alertmanager.resend_s", "> 0"),
        ({"urls": ["http://a"], "bogus": 1}, "config.alertmanager", "bogus"),
    ],
)
def test_a_bad_alertmanager_config_is_refused_with_its_path(
    config: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        MetricsEndpoint(name="m", port=0, alertmanager=config)
    assert info.value.path.startswith(path)


class Refusing:
    """A peer on loopback that answers every POST with ``status`` (and ``headers``), and
    notes when each came: an Alertmanager refusing or overloaded, which the real one
    cannot be made to be on demand."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.posts: list[float] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.posts.append(time.monotonic())
                body = b"refused on purpose"
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Refusing:
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.mark.anyio
async def test_alerts_refused_with_a_4xx_are_counted_and_not_hammered() -> None:
    with Refusing(400) as peer:
        async with endpoint(peer.url, resend_s=0.6) as ep:
            flood(ep)
            await until(lambda: _counts(ep)["rejected"] == 1)
            await anyio.sleep(0.3)
            assert len(peer.posts) == 1  # not retried: it would be refused alike
            assert ep.alertmanager is not None
            (st,) = ep.alertmanager.statistics().targets
            assert st.last_error == "HTTP 400: refused on purpose"
            assert st.due == 0 and st.failed == 0 and st.sent == 0
            await until(lambda: len(peer.posts) == 2)  # its resend, though, goes out
            assert peer.posts[1] - peer.posts[0] >= 0.55


@pytest.mark.anyio
async def test_an_overloaded_alertmanager_is_retried_when_it_asks() -> None:
    with Refusing(503, {"Retry-After": "0.4"}) as peer:
        async with endpoint(peer.url) as ep:  # backoff 0.05 s, but it asks for 0.4 s
            flood(ep)
            await until(lambda: _counts(ep)["failed"] >= 3)
            gaps = [b - a for a, b in itertools.pairwise(peer.posts)]
            assert len(gaps) >= 2 and all(g >= 0.35 for g in gaps), gaps
            assert _counts(ep)["rejected"] == 0


# -- what the notifier tracks, on a hand-driven clock and without a network ------------


def _notifier(system: System, **kw: Any) -> AlertmanagerNotifier:
    cfg = msgspec.convert({"urls": ["http://127.0.0.1:1"]}, AlertmanagerConfig)
    return AlertmanagerNotifier(
        cfg,
        system="sys",
        endpoint="ep",
        rules=system.engine.rules(),
        clock=system.clock.monotonic,
        wall=system.clock.wall,
        **kw,
    )


FAST = AlertRule("Failing", "error_rate > 0.1")


def test_firing_resolving_and_vanishing_are_each_owed_once_more() -> None:
    s = System([FAST], retention=0)
    n = _notifier(s)
    s.at(1)
    n.observe(s.engine.current())
    assert n.statistics().tracked == 0
    half_failing(s)
    s.at(1)
    n.observe(s.engine.current())
    (st,) = n.statistics().targets
    assert (n.statistics().tracked, st.due) == (1, 1)
    alert = n._postable(next(iter(n._alerts.values())))
    assert alert.ends_at == rfc3339(s.wall + 4 * 60)  # valid for four resends
    s.fold(*[Event("db", "processed")] * 100)
    s.at(1)
    n.observe(s.engine.current())
    (resolved,) = s.engine.current().resolved_alerts
    alert = n._postable(next(iter(n._alerts.values())))
    assert alert.ends_at == rfc3339(resolved.resolved_at or 0)
    s.at(1)  # retention 0: the engine forgets it; it is still owed to the Alertmanager
    n.observe(s.engine.current())
    assert s.engine.current().resolved_alerts == []
    assert n.statistics().tracked == 1 and n.statistics().targets[0].due == 1


def test_resolved_alerts_owed_to_an_unreachable_alertmanager_are_bounded() -> None:
    s = System([FAST], retention=0)
    n = _notifier(s, max_undelivered=2)
    for c in ("a", "b", "c", "d", "e"):
        half_failing(s, c)
    s.at(1)
    n.observe(s.engine.current())
    assert n.statistics().tracked == 5
    for c in ("a", "b", "c", "d", "e"):
        s.fold(*[Event(c, "processed")] * 100)
    s.at(1)
    s.at(1)
    n.observe(s.engine.current())
    st = n.statistics()
    assert st.tracked == 2 and st.targets[0].dropped == 3


@pytest.mark.anyio
async def test_a_resolved_alert_is_forgotten_once_delivered_and_no_longer_listed(
    am: Alertmanager, hook: Webhook
) -> None:
    async with endpoint(am.url, retention=0.3) as ep:
        assert ep.alertmanager is not None
        flood(ep)
        await hook.wait_for(_ours("firing"))
        assert ep.alertmanager.statistics().tracked == 1
        recover(ep)
        await hook.wait_for(_ours("resolved"))
        await until(
            lambda: ep.alertmanager is not None and not ep.alertmanager.statistics().tracked
        )
        assert _counts(ep)["failed"] == 0


def test_times_go_out_in_rfc3339_utc_to_the_millisecond() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_796_000_000.25) == "2026-11-30T00:53:20.250Z"


def test_a_system_alert_has_no_component_label_and_says_it_is_the_systems() -> None:
    s = System([AlertRule("SysErr", "error_rate > 0.1", scope="system", level="critical")])
    n = _notifier(s)
    half_failing(s)
    s.at(1)
    n.observe(s.engine.current())
    (tracked,) = n._alerts.values()
    alert = n._postable(tracked)
    assert alert.labels == {
        "alertname": "SysErr",
        "severity": "critical",
        "system": "sys",
        "endpoint": "ep",
    }
    assert alert.annotations["description"] == (
        "SysErr (critical) on the system of sys: error_rate > 0.1; error_rate = 0.5"
    )
    assert alert.annotations["figure"] == "error_rate"
    assert alert.annotations["value"] == "0.5"

"""Kills: ``streammetrics run`` SIGKILLed while entries are pending (read, not yet
acknowledged), and redis-server SIGKILLed mid-stream with an append-only file. Real
processes and real signals; the totals are checked against what was published, to the
event: nothing lost, nothing counted twice."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from streammetrics import Event
from streammetrics.model.events import encode_events
from tests.support.endpoints import consumer_blueprint, redis_source
from tests.support.servers import RedisServer, Run
from tests.support.waiting import wait_until


def _blueprint(tmp: Path, url: str, stream: str, **source: Any) -> Path:
    options = {"block_ms": 100, "lag_interval_s": 0.1, "reconnect_max_s": 0.2, **source}
    return consumer_blueprint(tmp / "consumer.yaml", redis_source(url, stream, **options))


def _entry(k: int, per_entry: int) -> dict[str, bytes]:
    """Entry ``k``: ``per_entry`` events with ids of their own, spread over 3 components."""
    evs = [
        Event(f"svc{i % 3}", "processed", id=f"e{k}-{i}") for i in range(per_entry)
    ]  # fmt: skip
    return {"msgpack": encode_events(evs, "msgpack")}


def _folded(run: Run) -> int:
    comps = run.json("/metrics/json")["detailed_components"]
    return sum(c["items_processed"] for k, c in comps.items() if k != "metrics")


def _redis_figure(run: Run, name: str) -> float:
    text = httpx.get(next(iter(run.urls.values())) + "/metrics", timeout=5).text
    return next(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


def _delivered(r: redis.Redis, stream: str) -> tuple[int, int]:
    """(entries delivered to the group, of which still pending). Counted from the
    group's last-delivered id: its ``entries-read`` may be unknown (nil)."""
    group = r.xinfo_groups(stream)[0]
    return len(r.xrange(stream, "-", group["last-delivered-id"])), int(group["pending"])


def _drained(r: redis.Redis, stream: str) -> bool:
    g = r.xinfo_groups(stream)[0]
    return bool(g["lag"] == 0 and g["pending"] == 0)


def test_an_endpoint_killed_with_entries_pending_gets_them_again_and_counts_each_once(
    tmp_path: Path, server: RedisServer, stream: str, r: redis.Redis
) -> None:
    entries, per_entry, count = 40, 1000, 5
    for k in range(entries):
        r.xadd(stream, _entry(k, per_entry))
    published = entries * per_entry
    blueprint = _blueprint(tmp_path, server.url, stream, count=count)
    first = Run(blueprint)
    try:
        first.wait_listening()
        # Freeze it (SIGSTOP) until Redis shows entries it read and has not acknowledged,
        # after it acknowledged some: then the kill lands with entries pending, for sure.
        deadline = time.monotonic() + 60
        while True:
            first.proc.send_signal(signal.SIGSTOP)
            delivered, pending_now = _delivered(r, stream)
            if pending_now and delivered > pending_now:
                break
            assert delivered < entries, "read everything before it could be caught"
            assert time.monotonic() < deadline, (delivered, pending_now)
            first.proc.send_signal(signal.SIGCONT)
            time.sleep(0.005)
        pending = r.xpending(stream, "g")
        assert pending["pending"] > 0 and pending["consumers"][0]["name"] == b"c1"
        first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    delivered, pending_at_kill = _delivered(r, stream)
    assert pending_at_kill == pending["pending"]  # the kill acknowledged nothing
    acked_by_first = (delivered - pending_at_kill) * per_entry
    assert 0 < acked_by_first < published

    second = Run(blueprint)  # the same consumer name: it reads its pending entries first
    try:
        second.wait_listening()
        wait_until(lambda: _drained(r, stream), timeout=60, what="group drained")
        wait_until(lambda: _folded(second) == published - acked_by_first, timeout=30)
        assert acked_by_first + _folded(second) == published  # none lost, none twice
        assert _redis_figure(second, "streammetrics_redis_recovered_entries_total") == (
            pending_at_kill
        )
        assert _redis_figure(second, "streammetrics_redis_events_total") == (
            published - acked_by_first
        )
        assert r.xpending(stream, "g")["pending"] == 0
        assert httpx.get(next(iter(second.urls.values())) + "/health", timeout=5).status_code == 200
    finally:
        second.stop()


class _Producer(threading.Thread):
    """Publishes entry after entry until told to stop or Redis goes away; counts the
    XADDs Redis acknowledged (each entry ``per_entry`` events)."""

    def __init__(self, url: str, stream: str, per_entry: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.stream = stream
        self.per_entry = per_entry
        self.acked = 0
        self.failed: Exception | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.client.xadd(self.stream, _entry(self.acked, self.per_entry))
                self.acked += 1
                time.sleep(0.002)
        except redis.RedisError as exc:
            self.failed = exc
        finally:
            self.client.close()


def test_redis_killed_mid_stream_with_an_append_only_file_loses_no_event(
    tmp_path: Path, stream: str
) -> None:
    per_entry = 10
    data = tmp_path / "redis"
    data.mkdir()
    srv = RedisServer(data, aof=True)
    port = srv.port
    run: Run | None = None
    try:
        run = Run(_blueprint(tmp_path, srv.url, stream))
        run.wait_listening()
        producer = _Producer(srv.url, stream, per_entry)
        producer.start()
        wait_until(lambda: _folded(run) >= 100 * per_entry, timeout=30, what="stream flowing")
        srv.stop(signal.SIGKILL)  # mid-stream: the producer is publishing, the endpoint reading
        producer.join(10)
        assert producer.failed is not None, "the producer did not notice the kill"
        # Redis away: /health still answers, and says why it is not healthy.
        health = wait_until(
            lambda: (
                (h := httpx.get(run.urls["metrics"] + "/health", timeout=5)).status_code == 503
                and h
            ),
            what="health 503 while Redis is away",
        )
        assert health.json()["status"] == "degraded"
        srv = RedisServer(data, port=port, aof=True)  # the same files: what it acknowledged
        check = redis.Redis.from_url(srv.url)
        try:
            # What was published is what Redis has: every acknowledged XADD, and maybe the
            # one in flight at the kill (written, its reply lost).
            have = check.xlen(stream)
            assert producer.acked <= have <= producer.acked + 1
            for k in range(have, have + 50):  # and the stream goes on
                check.xadd(stream, _entry(k, per_entry))
            published = (have + 50) * per_entry
            wait_until(lambda: _drained(check, stream), timeout=30, what="group drained")
            wait_until(lambda: _folded(run) == published, timeout=30, what="all folded")
            assert _folded(run) == published  # to the event
            wait_until(
                lambda: httpx.get(run.urls["metrics"] + "/health", timeout=5).status_code == 200,
                what="healthy again",
            )
            body = run.json("/metrics/json")
            # an entry folded whose acknowledgement died with Redis came back: folded once
            assert body["rejected"].get("duplicate", 0) % per_entry == 0
        finally:
            check.close()
    finally:
        if run is not None:
            run.stop()
        srv.stop()

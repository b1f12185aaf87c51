"""The Redis Streams transport across processes: publishers in their own processes, and
``streammetrics run`` consumers in a group that are killed, restarted and split the
stream, losing nothing and counting nothing twice. Fails (not skips) without
redis-server: CI installs it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.endpoints import consumer_blueprint, redis_source
from tests.support.paths import SUPPORT
from tests.support.process import cli
from tests.support.servers import RedisServer, Run, free_port
from tests.support.waiting import wait_until


def _blueprint(tmp: Path, server: RedisServer, stream: str, consumer: str) -> Path:
    path = tmp / f"consumer-{consumer.replace('{', '').replace('}', '')}.yaml"
    options = {"consumer": consumer, "block_ms": 100, "lag_interval_s": 0.1}
    return consumer_blueprint(path, redis_source(server.url, stream, **options))


def _publish(server: RedisServer, stream: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SUPPORT / "publisher.py"), server.url, stream, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert out.startswith("published"), out


def _run_totals(run: Run) -> tuple[int, dict[str, Any]]:
    body = run.json("/metrics/json")
    comps = body["detailed_components"]
    n = sum(
        c["items_processed"] + c["errors_encountered"] for k, c in comps.items() if k != "metrics"
    )
    return n, body


def _drained(r: redis.Redis, stream: str) -> bool:
    g = r.xinfo_groups(stream)[0]
    return bool(g["lag"] == 0 and g["pending"] == 0)


def test_publisher_and_endpoint_in_two_processes_n_sent_n_folded(
    server: RedisServer, stream: str, r: redis.Redis, tmp_path: Path
) -> None:
    n = 5000
    run = Run(_blueprint(tmp_path, server, stream, "c1"))
    try:
        run.wait_listening()
        _finish(
            _publish(server, stream, "--events", str(n), "--batch", "250", "--errors-every", "10")
        )
        wait_until(lambda: _drained(r, stream), what="group drained")
        total, body = wait_until(lambda: (t := _run_totals(run))[0] == n and t, what="N folded")
        assert total == n
        comps = body["detailed_components"]
        assert sum(c["errors_encountered"] for c in comps.values()) == n // 10
        assert body["streaming"]["streams"][f"redis:{stream}"]["total_messages"] == n
    finally:
        run.stop()


def test_a_consumer_killed_halfway_and_restarted_loses_nothing_and_counts_nothing_twice(
    server: RedisServer, stream: str, r: redis.Redis, tmp_path: Path
) -> None:
    n, batch, repeat = 20_000, 50, 500
    blueprint = _blueprint(tmp_path, server, stream, "c1")
    first = Run(blueprint)
    try:
        first.wait_listening()
        pub = _publish(
            server, stream, "--events", str(n), "--batch", str(batch), "--pace-s", "0.003",
            "--repeat-last", str(repeat),
        )  # fmt: skip
        wait_until(lambda: _run_totals(first)[0] >= n // 2, timeout=60, what="half folded")
        seen_alive = _run_totals(first)[0]
        first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    # What the dead consumer folded is what it acknowledged (it acknowledged only after
    # folding): every entry delivered to the group, less those still pending.
    group = r.xinfo_groups(stream)[0]
    delivered = len(r.xrange(stream, "-", group["last-delivered-id"]))
    pending = r.xpending(stream, "g")["pending"]
    acked_by_first = (delivered - pending) * batch
    assert n // 2 <= seen_alive <= acked_by_first + pending * batch
    second = Run(blueprint)  # same consumer name: takes back its pending entries
    try:
        second.wait_listening()
        _finish(pub)
        wait_until(lambda: _drained(r, stream), timeout=60, what="group drained")
        wait_until(
            lambda: _run_totals(second)[0] == n - acked_by_first,
            timeout=30,
            what=f"{n - acked_by_first} folded by the restarted consumer",
        )
        total, body = _run_totals(second)
        assert acked_by_first + total == n  # no loss, no double count across the crash
        # the producer's retry of its last events folded once
        assert body["rejected"].get("duplicate") == repeat
        metrics = httpx.get(next(iter(second.urls.values())) + "/metrics", timeout=5).text
        recovered = next(
            s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.name == "streammetrics_redis_recovered_entries_total"
        )
        assert recovered == pending
    finally:
        second.stop()


def test_two_consumers_in_a_group_split_the_stream(
    server: RedisServer, stream: str, r: redis.Redis, tmp_path: Path
) -> None:
    n = 6000
    blueprint = _blueprint(tmp_path, server, stream, "{host}-{port}")
    runs = [Run(blueprint), Run(blueprint)]
    try:
        for run in runs:
            run.wait_listening()
        _finish(_publish(server, stream, "--events", str(n), "--batch", "100", "--pace-s", "0.002"))
        wait_until(lambda: _drained(r, stream), timeout=60, what="group drained")
        wait_until(lambda: sum(_run_totals(run)[0] for run in runs) == n, what="N folded")
        shares = [_run_totals(run)[0] for run in runs]
        assert sum(shares) == n
        assert all(s > 0 for s in shares), shares
        assert len(r.xinfo_consumers(stream, "g")) == 2
    finally:
        for run in runs:
            run.stop()


def test_streammetrics_run_exits_2_when_redis_cannot_be_reached(tmp_path: Path) -> None:
    bp = tmp_path / "bad.yaml"
    url = f"redis://:pw@127.0.0.1:{free_port()}/0"
    bp.write_text(
        "system:\n  name: x\n  components:\n    - name: m\n      type: MetricsEndpoint\n"
        f"      config: {{port: 0, source: {{redis: {{url: '{url}', connect_timeout_s: 1}}}}}}\n"
    )
    result = cli("run", str(bp))
    assert result.returncode == 2, result.stderr
    assert "component 'm': cannot consume stream 'streammetrics:events'" in result.stderr
    assert ":***@127.0.0.1" in result.stderr and ":pw@" not in result.stderr

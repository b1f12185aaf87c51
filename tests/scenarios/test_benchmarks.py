"""The benchmark code itself works: every case runs at tiny sizes and the ingest totals
check passes (and catches a contender that skips work). Correctness only: no timing is
asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benchmarks import (
    _servers,
    churn,
    footprint,
    ingest,
    memory,
    otlp,
    overload,
    scale,
    serving,
)
from benchmarks._report import BenchmarkError
from benchmarks.stream import Stream, StreamSpec, parse_latency

TINY = StreamSpec(events=3_500, components=3, error_ratio=0.2, block=1_000, batch=100, seed=7)


def test_stream_expected_counts_every_event() -> None:
    s = Stream(TINY)
    exp = s.expected()
    assert sum(p + e for p, e in exp.values()) == TINY.events
    walked = [0, 0]
    for j0, j1 in ingest.chunks(s, 300):
        for j in range(j0, j1):
            walked[s.err[j]] += 1
    assert walked == [sum(p for p, _ in exp.values()), sum(e for _, e in exp.values())]
    assert sum(1 for _ in s.batch_plan(s.batches())) == 35


def test_parse_latency() -> None:
    assert parse_latency("constant:2").a == pytest.approx(0.002)
    assert parse_latency("uniform:1:3").kind == "uniform"
    with pytest.raises(ValueError, match="lognormal:MEDIAN_MS"):
        parse_latency("gamma:1")


def test_ingest_case_every_contender_ends_with_the_same_totals() -> None:
    r = ingest.run_case(TINY, rounds=2, min_round_seconds=0.0)
    names = {row["contender"] for row in r.rows}
    want = set(ingest.PEERS)
    if not ingest.otel_available():
        want.discard("opentelemetry-sdk")
    assert names == want
    assert all(row["totals_ok"] and row["events"] == TINY.events for row in r.rows)
    assert all(row["runs"] == 2 for row in r.rows)
    assert {t.name for t in r.targets} >= {"ingest: probe path"}
    assert r.params["expected_processed"] + r.params["expected_errors"] == TINY.events


def test_totals_check_fails_loudly_when_a_contender_skips_work() -> None:
    s = Stream(TINY)

    def lazy(stream: Stream) -> ingest.PeerRun:
        run = ingest.peer_probe(stream)
        name, (p, e) = next(iter(run.totals.items()))
        run.totals[name] = (p - 1, e)
        return run

    with pytest.raises(BenchmarkError, match="skipped or invented work"):
        ingest.measure("lazy", lazy, s, s.expected(), min_seconds=0.0, max_runs=1)


def test_scale_case_runs() -> None:
    r = scale.run_case((5, 10), events_per_component=10, flat_factor=2)
    assert [row["components"] for row in r.rows] == [5, 10]
    assert all(row["series"] > 0 and row["json_kb"] > 0 for row in r.rows)
    assert r.params["flat_in_events"]["events"] == [100, 200]
    assert r.targets[0].verdict == "n/a"  # 1,000 components was not among the sizes
    # The direct writer beside generate_latest (their bodies are checked identical).
    assert all(row["gl_x"] > 0 and row["gl_om_x"] > 0 for row in r.rows)
    assert all(row["metrics_warm_ms"] > 0 and row["om_ms"] > 0 for row in r.rows)
    assert {t.verdict for t in r.targets[1:]} == {"n/a"}  # 10,000 was not among them


def test_footprint_case_runs() -> None:
    """Memory (child process), tick and quantile accuracy at a tiny size: the figures
    are there and sane (the targets are the full run's)."""
    r = footprint.run_case(50, quick=True, accuracy_samples=2_000)
    memory_row = r.rows[0]
    assert memory_row["components"] == 50 and memory_row["per_component_kb"] > 0
    ticks = [row for row in r.rows if str(row.get("measure", "")).startswith("tick")]
    assert [t["changed"] for t in ticks] == [1, 50]
    streams = [row for row in r.rows if "stream" in row]
    assert len(streams) == 3
    assert all(0 <= row["p99_err_ladder"] < 1 for row in streams)
    assert {t.verdict for t in r.targets} <= {"met", "MISSED"}


def test_memory_case_runs() -> None:
    r = memory.run_case((2_000, 4_000), components=2, flush_every=500)
    assert [row["events"] for row in r.rows] == [2_000, 4_000]
    assert r.targets[0].measured is not None


def test_churn_case_runs_and_its_table_stays_bounded() -> None:
    r = churn.run_case(2_000, per_tick=100, ttl_s=2.0, retention_s=2.0)
    assert [row["names_so_far"] for row in r.rows] == list(range(200, 2_001, 200))
    # names of the last TTL + 1 ticks and the declared one, however many came before
    assert r.params["components_held_most"] <= 4 * 100 + 1
    assert r.rows[-1]["evicted"] + r.rows[-1]["components_held"] - 1 == 2_000
    assert r.targets[0].measured is not None


WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:5000/health
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  210.00us   1.20s    90.00%
    Req/Sec     9.50k   500.00    10.00k    80.00%
  Latency Distribution
     50%  950.00us
     75%    1.10ms
     90%    1.20ms
     99%    2.50ms
  19000 requests in 2.00s, 3.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   9500.00
Transfer/sec:      1.50MB
"""


def test_otlp_case_folds_every_span_on_each_path() -> None:
    r = otlp.run_case(spans=1_500, rounds=1, min_round_seconds=0.0, http_repeat=1)
    assert [row["path"] for row in r.rows] == ["protobuf", "receiver", "http"]
    assert all(row["spans_per_s"] > 0 for row in r.rows)
    assert r.params["expected_items"] > 0 and r.params["expected_errors"] > 0
    assert {t.name for t in r.targets} >= {"otlp: spans folded through /v1/traces"}


def test_otlp_totals_check_fails_loudly() -> None:
    with pytest.raises(BenchmarkError, match="receiver ended with"):
        otlp._check("receiver", {"service-0": (1, 0)}, {"service-0": (2, 0)})


def test_otlp_client_fails_loudly_on_an_error_answer(tmp_path: Path) -> None:
    """The HTTP client of the case posts pre-built requests over raw sockets: an answer
    that is not an empty 200 (here the 400 of a body that does not decode) ends it with
    the status, not with a figure."""
    import anyio

    from tests.support.endpoints import running

    file = tmp_path / "bodies"
    otlp._write_bodies([b"\xff\xff\xff"], file)
    out: list[tuple[int, str]] = []

    async def main() -> None:
        async with running(otlp={}, rate_limit=None) as ep:
            cmd = [sys.executable, "-m", "benchmarks.otlp", "--post"]
            cmd += [f"{ep.url}/v1/traces", str(file), "1"]
            with anyio.fail_after(30):
                proc = await anyio.run_process(cmd, check=False, cwd=otlp._ROOT)
            out.append((proc.returncode, proc.stdout.decode()))

    anyio.run(main)
    assert out[0][0] == 1
    assert out[0][1].startswith("FAILED 400 ")


def test_parse_wrk() -> None:
    r = serving.parse_wrk(WRK_OUTPUT)
    assert r == pytest.approx(
        {
            "errors": 3,
            "non2xx": 5,
            "max_ms": 1200.0,
            "p50_ms": 0.95,
            "p99_ms": 2.5,
            "requests": 19000,
            "requests_per_s": 9500.0,
        }
    )


def test_http_case_runs_on_loopback() -> None:
    r = serving.run_case(
        connections=(2,),
        seconds=0.2,
        components=3,
        routes=("/health", "/metrics"),
        servers=("streammetrics",),  # prometheus-client's server: see the test below
        many_connections=None,
        render_components=20,
        render_seconds=0.2,
        fixed_rate=100.0,
        tool="asyncio",
        lifetime=60.0,
    )
    by = {(row["route"], row["server"]): row for row in r.rows}
    assert set(by) == {
        ("/health", "streammetrics"),
        ("/metrics", "streammetrics"),
        ("/health @ 100 req/s", "streammetrics"),
        ("/health while /metrics renders", "streammetrics"),
    }
    assert all(row["req_per_s"] > 0 and row["errors"] == 0 for row in r.rows)
    assert by[("/health", "streammetrics")]["non2xx"] == 0
    assert by[("/health while /metrics renders", "streammetrics")]["renders"] >= 1
    assert r.params["series"] > 0
    verdicts = {t.name: t.verdict for t in r.targets}
    assert verdicts["http: /metrics req/s / prometheus-client server"] == "n/a"


def test_prometheus_peer_serves_exactly_the_series_count() -> None:
    reg = _servers.prometheus_registry(components=3, series=500)
    assert sum(len(m.samples) for m in reg.collect()) == 500


def test_the_load_generator_counts_a_peer_that_never_answers_as_timeouts() -> None:
    """A slow peer is a figure, never a crash: connections that are accepted and never
    answered end as counted timeouts within the run's bound."""
    import asyncio
    import socket
    import time

    from benchmarks import _loadgen

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # accepted by the kernel, never read nor answered
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        result = asyncio.run(
            _loadgen.run(f"http://127.0.0.1:{port}/health", 3, 0.5, request_timeout=0.5)
        )
        assert time.monotonic() - t0 < 10
    assert result["timeouts"] >= 3
    assert result["requests"] == 0 and result["p99_ms"] is None


def test_overload_case_runs_on_loopback() -> None:
    """Both servers through every phase at tiny sizes: /health answered in each, the idle
    connections really open on the server's side, a target per loaded phase."""
    r = overload.run_case(seconds=0.5, hammer=20, sse=5, idle=100)
    assert [(row["server"], row["phase"]) for row in r.rows] == [
        (kind, phase)
        for kind in ("streammetrics", "litestar")
        for phase in ("quiet", "hammer", "sse", "idle")
    ]
    for row in r.rows:
        assert row["p99_ms"] is not None and row["errors"] + row["timeouts"] == 0, row
        assert row["kept_lost"] == 0, row
    idle = next(row for row in r.rows if row["phase"] == "idle")
    assert idle["idle_open"] == 100 and idle["server_open"] >= 100
    assert [t.name for t in r.targets] == [
        "/health p99 with 20 clients hammering /metrics/json",
        "/health p99 with 5 SSE clients",
        "/health p99 with 100 idle connections",
    ]

"""HTTP: ``/health``, ``/metrics`` and ``/metrics/json`` under load, beside the floor and
prometheus-client's own exposition server, each server in its own process.

Contenders:

- ``streammetrics``: the MetricsEndpoint app (``create_app(TickCache(...))``) over a
  seeded aggregator of ``components`` components, served by ``streammetrics.http.server.serve``;
  ``create_app`` alone has no rate limit (a MetricsEndpoint adds its default one), so the
  figures are the routes' without the limiter, as wrk's thousands of requests a second from
  127.0.0.1 would otherwise measure 429s;
- ``litestar``: bare Litestar handlers on the same ``serve``: a small dict at ``/health``,
  fixed bodies of the same sizes at ``/metrics`` and ``/metrics/json`` (the HTTP floor);
- ``prometheus-client``: ``prometheus_client.start_http_server`` on a loopback port with
  exactly as many samples as streammetrics' ``/metrics`` (it renders per request).

The load comes from ``wrk`` when it is installed (``scripts/bench`` installs it), else
from ``benchmarks._loadgen`` (asyncio, in its own process); each row says which. Then a
10,000-component endpoint renders ``/metrics`` in a loop while ``/health`` is measured: a whole
``MetricsEndpoint`` (its defaults, rate limit included, but ``max_components``), so that the
figure pays what a real one does (its ticker's build every tick, its alert rules) and has what
a real one has (its garbage-collector policy: the 10,000 components' tables are frozen out of
the full collections, which otherwise hold the loop 100-500 ms every few seconds); the row
counts the full collections of that server's life (``gc_full``, the longest ``gc_max_ms``).

A request with no answer within ``REQUEST_TIMEOUT_S`` is a timeout, for either generator:
each row counts timeouts beside socket errors and non-2xx answers, and the targets built on
a row say so (a p99 whose row timed out on more than 1 % of its requests is at least the
timeout, so that is the figure judged). A slow peer is a figure, never a failed case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal

from ._loadgen import DEFAULT_TIMEOUT_S
from ._proc import read_line
from ._report import BenchmarkError, CaseResult, Target, progress

__all__ = ("REQUEST_TIMEOUT_S", "Server", "load", "parse_wrk", "run_case", "started")

Tool = Literal["wrk", "asyncio"]
ROOT = Path(__file__).resolve().parent.parent
ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("streammetrics", "litestar"),
    "/metrics": ("streammetrics", "prometheus-client", "litestar"),
    "/metrics/json": ("streammetrics", "litestar"),
}
_KIND = {
    "streammetrics": "streammetrics",
    "endpoint": "endpoint",
    "litestar": "litestar",
    "prometheus-client": "prometheus",
}
REQUEST_TIMEOUT_S = DEFAULT_TIMEOUT_S
"""Seconds without a complete answer after which a request counts as a timeout (wrk's
``--timeout``, the asyncio generator's ``--timeout``)."""


class Server:
    """A server process of ``benchmarks._servers``; stops when ``stop()`` closes its stdin,
    and by itself after ``lifetime`` seconds whatever happens here."""

    def __init__(self, kind: str, args: Sequence[str], *, lifetime: float) -> None:
        self.kind = kind
        # stderr to a file, not a pipe: a chatty server must never block on a full pipe
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._servers",
            _KIND[kind],
            "--lifetime",
            str(lifetime),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err
        )
        self.port = 0

    def wait_ready(self, timeout: float = 120.0) -> int:
        """Wait for the ``READY <port>`` line; raise with the server's stderr if none comes."""
        line = read_line(self.proc.stdout, timeout)
        if not line.startswith("READY "):
            err = self.stop()
            raise BenchmarkError(f"{self.kind} server did not start: {line!r}\n{err}")
        self.port = int(line.split()[1])
        return self.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> str:
        """Stop the process (if still running); returns the tail of its stderr."""
        p = self.proc
        for pipe in (p.stdin, p.stdout):
            _close(pipe)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        if self._err.closed:
            return ""
        self._err.seek(0)
        tail = self._err.read().decode(errors="replace")[-2000:]
        self._err.close()
        return tail


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        with suppress(OSError):
            pipe.close()


@contextmanager
def started(
    specs: Sequence[tuple[str, Sequence[str]]], lifetime: float
) -> Iterator[dict[str, Server]]:
    """Start servers (one process each, side by side), stop all of them on the way out."""
    with ExitStack() as stack:
        out: dict[str, Server] = {}
        for kind, args in specs:
            s = Server(kind, args, lifetime=lifetime)
            stack.callback(s.stop)
            out[kind] = s
        for s in out.values():
            s.wait_ready()
        yield out


def fetch(url: str, timeout: float = 120.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only
        body: bytes = r.read()
        return body


# -- load ---------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """requests, errors, non2xx, requests_per_s, p50_ms, p99_ms, max_ms from wrk --latency."""
    r: dict[str, Any] = {"errors": 0, "non2xx": 0}
    for line in out.splitlines():
        s = line.split()
        if not s:
            continue
        if s[0] == "Latency" and len(s) >= 4:
            r["max_ms"] = _ms(s[3])
        elif s[0] == "50%":
            r["p50_ms"] = _ms(s[1])
        elif s[0] == "99%":
            r["p99_ms"] = _ms(s[1])
        elif len(s) > 2 and s[1] == "requests" and s[2] == "in":
            r["requests"] = int(s[0])
        elif s[0] == "Socket" and s[1] == "errors:":
            r["errors"] = sum(int(x) for x in re.findall(r"\d+", line))
        elif line.strip().startswith("Non-2xx"):
            r["non2xx"] = int(s[-1])
        elif s[0] == "Requests/sec:":
            r["requests_per_s"] = float(s[1])
    if "requests_per_s" not in r:
        raise BenchmarkError(f"could not read wrk's output:\n{out}")
    return r


def wrk_timeouts(out: str) -> int:
    """The timeouts of wrk's ``Socket errors:`` line (``parse_wrk`` counts them among the
    errors); 0 when the line is absent (wrk prints it only when there were errors)."""
    m = re.search(r"^\s*Socket errors:.*\btimeout (\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else 0


def tool_available() -> Tool:
    return "wrk" if shutil.which("wrk") else "asyncio"


def load(
    url: str, connections: int, seconds: float, tool: Tool, rate: float | None = None
) -> dict[str, Any]:
    """Drive ``url`` with ``connections`` keep-alive connections for ``seconds``: as fast
    as answers come (closed loop), or ``rate`` requests/s offered (open loop: asyncio
    generator only, Debian's wrk 4.1 has no ``-R``). ``errors`` and ``timeouts`` are
    disjoint: socket errors, and requests unanswered after ``REQUEST_TIMEOUT_S``."""
    if tool == "wrk" and rate is None:
        threads = max(1, min(connections, (os.cpu_count() or 2) // 2))
        secs = max(1, round(seconds))
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{secs}s",
            "--latency",
            "--timeout",
            f"{REQUEST_TIMEOUT_S:g}s",
            url,
        ]
        p = _run(cmd, secs + REQUEST_TIMEOUT_S + 60)
        if p.returncode:
            raise BenchmarkError(f"wrk failed ({p.returncode}): {p.stderr.strip()}")
        r = parse_wrk(p.stdout)
        r["timeouts"] = wrk_timeouts(p.stdout)
        r["errors"] -= r["timeouts"]
        return r
    cmd = [
        sys.executable,
        "-m",
        "benchmarks._loadgen",
        url,
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
        "--timeout",
        str(REQUEST_TIMEOUT_S),
        *(["--rate", str(rate)] if rate else []),
    ]
    # it ends by itself within seconds + timeout (in-flight requests are waited for)
    p = _run(cmd, seconds + REQUEST_TIMEOUT_S + 60)
    if p.returncode:
        raise BenchmarkError(f"load generator failed: {p.stderr.strip()[-2000:]}")
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a load generator; one that outlives ``timeout`` is a failed measurement."""
    try:
        return subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"{cmd[0]} did not end within {timeout:.0f} s: {cmd}") from exc


# -- the case -----------------------------------------------------------------------------


def _row(route: str, server: str, conns: int, r: dict[str, Any], tool: Tool) -> dict[str, Any]:
    return {
        "route": route,
        "server": server,
        "conns": conns,
        "req_per_s": r["requests_per_s"],
        "p50_ms": r.get("p50_ms"),
        "p99_ms": r.get("p99_ms"),
        "max_ms": r.get("max_ms"),
        "requests": r.get("requests", 0),
        "errors": r.get("errors", 0),
        "timeouts": r.get("timeouts", 0),
        "non2xx": r.get("non2xx", 0),
        "load": tool,
    }


def _counts(row: dict[str, Any]) -> str:
    """A row's requests that are not in its latency figures, for progress lines."""
    return f"timeouts {row['timeouts']}, errors {row['errors']}"


def _full_collections(stderr: str) -> tuple[int | None, float | None]:
    """The server's full collections and the longest in ms, from the ``GC2`` line it
    writes as it stops (None, None without one)."""
    m = re.search(r"^GC2 (\d+) ([\d.]+) ", stderr, re.MULTILINE)
    return (int(m.group(1)), float(m.group(2))) if m else (None, None)


def _under_render(
    components: int, conns: int, seconds: float, tool: Tool, lifetime: float
) -> dict[str, Any]:
    """``/health`` under load while a ``components``-component MetricsEndpoint renders
    ``/metrics`` in a loop (tick 1 s: every scrape after a tick renders anew)."""
    args = ["--components", str(components), "--events-per-component", "10"]
    with started([("endpoint", args)], lifetime) as servers:
        s = servers["endpoint"]
        fetch(s.url("/health"))  # the first snapshot is built before the clock starts
        stop = threading.Event()
        renders: list[tuple[float, int]] = []
        failures: list[str] = []

        def scrape() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    body = fetch(s.url("/metrics"), timeout=lifetime)
                except OSError as exc:
                    failures.append(repr(exc))
                    return
                renders.append((time.perf_counter() - t0, len(body)))

        scraper = threading.Thread(target=scrape, name="scraper", daemon=True)
        scraper.start()
        time.sleep(0.5)  # the first render is under way
        r = load(s.url("/health"), conns, seconds, tool)
        stop.set()
        scraper.join(lifetime)
        gc_full, gc_max_ms = _full_collections(s.stop())
    if failures:
        raise BenchmarkError(f"/metrics failed while rendering: {failures[0]}")
    row = _row("/health while /metrics renders", "streammetrics", conns, r, tool)
    row["components"] = components
    row["renders"] = len(renders)
    row["render_s"] = max((t for t, _ in renders), default=None)
    row["metrics_mb"] = renders[-1][1] / 2**20 if renders else None
    row["gc_full"] = gc_full
    row["gc_max_ms"] = gc_max_ms
    return row


def run_case(
    *,
    connections: Sequence[int] = (10, 100, 500),
    seconds: float = 2.0,
    components: int = 100,
    routes: Sequence[str] = tuple(ROUTES),
    servers: Sequence[str] = ("streammetrics", "litestar", "prometheus-client"),
    many_connections: int | None = 1_000,
    render_components: int | None = 10_000,
    render_seconds: float = 5.0,
    render_connections: int = 10,
    fixed_rate: float | None = 1_000.0,
    tool: Tool | None = None,
    lifetime: float = 900.0,
) -> CaseResult:
    tool = tool or tool_available()
    result = CaseResult(
        "http",
        params={
            "connections": list(connections),
            "seconds": seconds,
            "components": components,
            "load_generator": tool,
            "many_connections": many_connections,
            "render_components": render_components,
            "fixed_rate": fixed_rate,
        },
    )
    why = "wrk not installed" if tool_available() == "asyncio" else "--load asyncio"
    result.notes.append(
        "load generator: "
        + ("wrk" if tool == "wrk" else f"benchmarks._loadgen (asyncio, {why})")
        + f"; a request unanswered after {REQUEST_TIMEOUT_S:g} s counts as a timeout"
    )
    progress(f"http: starting servers ({components:,} components), load by {tool}")
    sm_args = ["--components", str(components)]
    with started([("streammetrics", sm_args)], lifetime) as sm:
        s = sm["streammetrics"]
        prom_body = fetch(s.url("/metrics"))
        js_body = fetch(s.url("/metrics/json"))
        series = sum(1 for ln in prom_body.splitlines() if ln and not ln.startswith(b"#"))
        result.params.update(metrics_bytes=len(prom_body), json_bytes=len(js_body), series=series)
        others = [
            (k, a)
            for k, a in (
                (
                    "litestar",
                    ["--metrics-bytes", str(len(prom_body)), "--json-bytes", str(len(js_body))],
                ),
                ("prometheus-client", ["--components", str(components), "--series", str(series)]),
            )
            if k in servers
        ]
        with started(others, lifetime) as rest:
            all_servers = {**sm, **rest}
            if "prometheus-client" in rest:
                theirs = fetch(rest["prometheus-client"].url("/metrics"))
                got = sum(1 for ln in theirs.splitlines() if ln and not ln.startswith(b"#"))
                result.notes.append(
                    f"/metrics: streammetrics {series:,} samples ({len(prom_body) / 1024:.0f} KB), "
                    f"prometheus-client {got:,} samples ({len(theirs) / 1024:.0f} KB)"
                )
            for route in routes:
                for conns in connections:
                    for name in ROUTES[route]:
                        if name not in all_servers:
                            continue
                        r = load(all_servers[name].url(route), conns, seconds, tool)
                        row = _row(route, name, conns, r, tool)
                        result.rows.append(row)
                        progress(
                            f"http: {route} {name} c={conns}: {row['req_per_s']:,.0f} req/s, "
                            f"p99 {row['p99_ms'] or 0:.1f} ms, {_counts(row)}"
                        )
            if many_connections and "/health" in routes:
                for name in ("streammetrics", "litestar"):
                    if name in all_servers:
                        r = load(all_servers[name].url("/health"), many_connections, seconds, tool)
                        row = _row("/health", name, many_connections, r, tool)
                        result.rows.append(row)
                        progress(
                            f"http: /health {name} c={many_connections}: "
                            f"{row['req_per_s']:,.0f} req/s, {_counts(row)}"
                        )
            if fixed_rate and "/health" in routes:
                conns = 100 if 100 in connections else max(connections)
                for name in ("streammetrics", "litestar"):
                    if name in all_servers:
                        url = all_servers[name].url("/health")
                        r = load(url, conns, seconds, "asyncio", rate=fixed_rate)
                        row = _row(f"/health @ {fixed_rate:,.0f} req/s", name, conns, r, "asyncio")
                        result.rows.append(row)
                        progress(
                            f"http: /health {name} c={conns} at {fixed_rate:,.0f} req/s offered: "
                            f"p99 {row['p99_ms'] or 0:.1f} ms, {_counts(row)}"
                        )
    for row in result.rows:
        peer = {"/health": "litestar", "/metrics": "prometheus-client", "/metrics/json": "litestar"}
        ref = _find(result.rows, row["route"], peer.get(row["route"], "litestar"), row["conns"])
        if row["server"] == "streammetrics" and ref and ref["req_per_s"] > 0:
            row["vs_peer"] = row["req_per_s"] / ref["req_per_s"]
    render_row = None
    if render_components:
        progress(f"http: /health while a {render_components:,}-component /metrics renders")
        render_row = _under_render(
            render_components, render_connections, render_seconds, tool, lifetime
        )
        result.rows.append(render_row)
        progress(
            f"http: /health during render: p99 {render_row['p99_ms'] or 0:.1f} ms, "
            f"{render_row['renders']} renders, longest {render_row['render_s'] or 0:.1f} s, "
            f"{_counts(render_row)}"
        )
    result.targets = _targets(result.rows, render_row, many_connections, fixed_rate)
    return result


def _find(
    rows: Sequence[dict[str, Any]], route: str, server: str, conns: int
) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["route"] == route and r["server"] == server and r["conns"] == conns),
        None,
    )


def _render_note(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not measured"
    parts = [] if row["components"] == 10_000 else [f"{row['components']:,} components"]
    if row["conns"] != 10:
        parts.append(f"at {row['conns']} connections")
    return ", ".join(parts)


def _unanswered(*rows: dict[str, Any] | None) -> str:
    """What the rows behind a target left out of their latency figures, server by server
    (``prometheus-client: 37 timeouts (> 10 s)``); empty when every request was answered."""
    parts = []
    for row in rows:
        if row is None:
            continue
        counts = [
            f"{row[key]:,} {label}"
            for key, label in (
                ("timeouts", f"timeouts (> {REQUEST_TIMEOUT_S:g} s)"),
                ("errors", "socket errors"),
                ("non2xx", "non-2xx"),
            )
            if row.get(key)
        ]
        if counts:
            parts.append(f"{row['server']}: {', '.join(counts)}")
    return "; ".join(parts)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _p99(row: dict[str, Any] | None) -> float | None:
    """The row's p99 (ms) with its timed-out requests counted as slower than every answer.

    Both generators leave timed-out requests out of their percentiles; once more than 1 %
    of the requests timed out, the p99 of all of them is at least the timeout, so that
    lower bound is the figure judged (a target below it is MISSED, not met on the answers
    that did come)."""
    if row is None:
        return None
    timeouts: int = row["timeouts"]
    if timeouts and timeouts > 0.01 * (row["requests"] + timeouts):
        return max(float(row["p99_ms"] or 0.0), REQUEST_TIMEOUT_S * 1e3)
    p99: float | None = row["p99_ms"]
    return p99


def _ratio(ours: dict[str, Any] | None, peer: dict[str, Any] | None) -> float | None:
    """req/s ÷ the peer's; None when either was not measured or the peer answered nothing
    (no ratio to give; the target's note then counts the peer's timeouts and errors)."""
    if ours is None or peer is None or peer["req_per_s"] <= 0:
        return None
    ratio: float = ours["req_per_s"] / peer["req_per_s"]
    return ratio


def _silent(peer: dict[str, Any] | None) -> str:
    if peer is None or peer["req_per_s"] > 0:
        return ""
    return f"{peer['server']} answered no request, so no ratio"


def _targets(
    rows: Sequence[dict[str, Any]],
    render_row: dict[str, Any] | None,
    many: int | None,
    rate: float | None = None,
) -> list[Target]:
    c = 100 if _find(rows, "/health", "streammetrics", 100) else None
    conns = c or max((r["conns"] for r in rows if r["route"] == "/health"), default=0)
    h = _find(rows, "/health", "streammetrics", conns)
    hl = _find(rows, "/health", "litestar", conns)
    m = _find(rows, "/metrics", "streammetrics", conns)
    mp = _find(rows, "/metrics", "prometheus-client", conns)
    hm = _find(rows, "/health", "streammetrics", many) if many else None
    note = "" if c else f"at {conns} connections"
    fixed = next(
        (r for r in rows if r["route"].startswith("/health @") and r["server"] == "streammetrics"),
        None,
    )
    return [
        Target(
            "http: /health req/s / bare Litestar",
            _ratio(h, hl),
            ">=",
            0.90,
            "x",
            _join(note or "100 connections", _silent(hl), _unanswered(h, hl)),
        ),
        Target(
            "http: /health p99 at 100 connections",
            _p99(h),
            "<",
            10.0,
            "ms",
            _join(note, _unanswered(h)),
        ),
        Target(
            f"http: /health p99 at {conns} connections, {rate or 0:,.0f} req/s offered",
            _p99(fixed),
            "<",
            10.0,
            "ms",
            _join(
                "open loop (asyncio generator); not one of the issue's targets, its fixed-rate "
                "reading"
                if fixed
                else "not measured",
                _unanswered(fixed),
            ),
        ),
        Target(
            f"http: /health errors at {many or 1000:,} connections",
            float(hm["errors"] + hm["timeouts"] + hm["non2xx"]) if hm else None,
            "<",
            1.0,
            "",
            _unanswered(hm) if hm else "not measured",
        ),
        Target(
            "http: /metrics req/s / prometheus-client server",
            _ratio(m, mp),
            ">=",
            10.0,
            "x",
            _join(note or "100 connections", _silent(mp), _unanswered(m, mp)),
        ),
        Target(
            "http: /health p99 at 10 connections while a 10,000-component /metrics is "
            "scraped back to back",
            _p99(render_row),
            "<",
            10.0,
            "ms",
            _join(_render_note(render_row), _unanswered(render_row)),
        ),
    ]

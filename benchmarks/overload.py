"""``/health`` under overload: its p99 while (a) 1,000 clients hammer another route (into
429s at streammetrics' default rate limit), (b) 200 SSE clients are connected to
``/stream``, (c) 5,000 idle connections are open; streammetrics beside the bare-Litestar
floor, measured in the same run.

    python -m benchmarks --case overload --quick     # ~60 s
    python -m benchmarks.overload --quick            # the case alone, same figures

Processes, so that no side's work shows up as another's latency:

- the server: a MetricsEndpoint in code (``streammetrics.serve``, the defaults but for
  ``dashboard.max_clients`` 250, a rate limit of 250 requests/s per address so that the
  hammer meets it, and header/idle timeouts of 120 s, so that the idle connections of (c)
  stay open the whole phase: the worst case the timeouts do not clear),
  or the bare Litestar handlers of the HTTP case plus a one-frame-a-second ``/stream``, on
  the same ``streammetrics.http.server.serve`` with the same limits;
- the load: ``wrk -c 1000`` on ``/metrics/json`` (``benchmarks._loadgen`` without wrk),
  the SSE swarm of ``benchmarks.sse``, or ``--idle``: this module holding plain connected
  sockets that send nothing;
- this process: ``/health`` 50 times a second, open loop (each request timed from when it
  was due), **each on a new connection** (``Connection: close``), as a load balancer's
  probe is: the question is whether a newcomer still gets in.

The benchmark process raises its own file-descriptor soft limit (its children inherit it);
on a machine whose hard limit is below 5,000 the idle phase opens what fits and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from ._loadgen import _response
from ._proc import read_line
from ._report import BenchmarkError, CaseResult, Target, machine, progress, table, targets_table

__all__ = ("main", "run_case")

#: Generous timeouts for both servers: the idle connections of (c) must stay open.
_LIMITS = {"header_timeout_s": 120.0, "idle_timeout_s": 120.0}
_PROBE_RATE = 50.0
_PROBE_TIMEOUT_S = 10.0
_TARGET_MS = 100.0
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the server process ------------------------------------------------------------------


def _floor_app() -> Any:
    """The HTTP case's bare Litestar handlers, plus ``/stream``: one small frame a second."""
    from litestar import get
    from litestar.response import ServerSentEvent
    from litestar.response.sse import ServerSentEventMessage

    from ._servers import litestar_app

    async def frames() -> Any:
        while True:
            yield ServerSentEventMessage(data='{"status":"healthy"}', event="snapshot")
            await asyncio.sleep(1.0)

    @get("/stream", signature_namespace={"ServerSentEvent": ServerSentEvent})
    async def stream() -> ServerSentEvent:
        return ServerSentEvent(frames())

    app = litestar_app(1000, 1000)
    app.register(stream)
    return app


async def _serve(kind: str) -> None:
    import anyio

    from streammetrics.http.limits import ConnectionGuard, ConnectionLimits

    if kind == "streammetrics":
        import streammetrics

        ep = streammetrics.MetricsEndpoint(
            name="bench_overload",
            port=0,
            dashboard={"max_clients": 250},
            limits=_LIMITS,
            # The hammer comes from one address, as a runaway client does: most of it must
            # meet the limit (the 429s of the scenario), which the default 1000/s would not
            # on a machine that serves fewer than that; 250 lets the 200 SSE clients in.
            rate_limit={"requests": 250, "per": 1.0},
        )
        async with streammetrics.serve(ep):
            print(f"READY {ep.port}", flush=True)
            await _until_stdin_closes()
        return
    from functools import partial

    from streammetrics.http.server import serve

    guard = ConnectionGuard(ConnectionLimits(**_LIMITS))
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            partial(
                serve, _floor_app(), host="127.0.0.1", port=0, component="floor", connections=guard
            )
        )
        print(f"READY {port}", flush=True)
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


async def _until_stdin_closes() -> None:
    """Until the parent closes our stdin (or goes away): read it in a worker thread."""
    import anyio.to_thread

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(sys.stdin.fileno(), 1024):
                pass

    await anyio.to_thread.run_sync(drain, abandon_on_cancel=True)


# -- the idle-connections process --------------------------------------------------------


async def _idle(port: int, count: int, seconds: float, stop: asyncio.Event) -> dict[str, Any]:
    """``count`` connections that send nothing, held ``seconds`` (or until ``stop``); how
    many opened, and how many the server had closed by the end."""
    gate = asyncio.Semaphore(200)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with gate:
            try:
                conns.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10))
            except (OSError, TimeoutError):
                failed += 1

    await asyncio.gather(*(one() for _ in range(count)))
    print(f"open {len(conns)}", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    closed = sum(r.at_eof() for r, _w in conns)
    for _r, w in conns:
        w.close()
    return {"idle_failed": failed, "closed_by_server": closed}


# -- this process ------------------------------------------------------------------------


async def _probe(port: int, seconds: float, rate: float) -> dict[str, Any]:
    """``GET /health`` ``rate`` times a second for ``seconds``, each on a new connection,
    each timed from when it was due (open loop: a server that falls behind pays for it)."""
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    lat: list[float] = []
    counts = {"errors": 0, "timeouts": 0, "non2xx": 0}

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request.encode())
                    answer = await reader.read()
                finally:
                    writer.close()
        except TimeoutError:
            counts["timeouts"] += 1
            return
        except OSError:
            counts["errors"] += 1
            return
        if not answer.startswith(b"HTTP/1.1 "):
            counts["errors"] += 1
            return
        lat.append(time.perf_counter() - due)
        if answer[9:12] != b"200":
            counts["non2xx"] += 1

    t0 = time.perf_counter() + 0.05
    n = int(seconds * rate)
    await asyncio.gather(*(one(t0 + k / rate) for k in range(n)))
    lat.sort()

    def pct(q: float) -> float | None:
        return lat[min(int(q * len(lat)), len(lat) - 1)] * 1e3 if lat else None

    return {
        "health_n": n,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1e3 if lat else None,
        **counts,
    }


async def _probe_kept(sock: socket.socket, seconds: float, rate: float) -> dict[str, Any]:
    """``GET /health`` ``rate`` times a second on one keep-alive connection opened before
    the load began, each timed from when it was due."""
    reader, writer = await asyncio.open_connection(sock=sock)
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    lat: list[float] = []
    lost = 0
    t0 = time.perf_counter() + 0.05
    try:
        for k in range(int(seconds * rate)):
            due = t0 + k / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    writer.write(request)
                    await _response(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                lost += 1
                break
            lat.append(time.perf_counter() - due)
    finally:
        writer.close()
    lat.sort()
    return {
        "kept_p99_ms": lat[min(int(0.99 * len(lat)), len(lat) - 1)] * 1e3 if lat else None,
        "kept_lost": lost,
    }


def _kept_connection(port: int) -> socket.socket:
    """A connection the server has accepted (it answered once), for ``_probe_kept``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    length = next(
        int(line.split(b":")[1])
        for line in got.split(b"\r\n\r\n")[0].split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = got.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += sock.recv(65536)
    sock.setblocking(False)
    return sock


async def _probes(port: int, seconds: float, kept: socket.socket) -> dict[str, Any]:
    fresh, kept_stats = await asyncio.gather(
        _probe(port, seconds, _PROBE_RATE), _probe_kept(kept, seconds, _PROBE_RATE)
    )
    return {**fresh, **kept_stats}


def _spawn(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=_ROOT,
    )


def _stop(proc: subprocess.Popen[str], timeout: float = 15.0) -> str:
    """Close its stdin (the servers and the idle holder stop on it), wait, its output."""
    try:  # communicate() closes stdin first
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def _open_connections(port: int) -> float | None:
    """streammetrics' own count of its open connections (its ``/metrics``)."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith('streammetrics_http_connections_open{pool="main"}'):
            return float(line.split()[-1])
    return None


def _phase(
    kind: str, port: int, phase: str, seconds: float, wrk: str | None, sizes: dict[str, int]
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    row: dict[str, Any] = {"server": kind, "phase": phase}
    load: subprocess.Popen[str] | None = None
    extra: dict[str, Any] = {}
    kept = _kept_connection(port)
    try:
        if phase == "hammer":
            span = str(math.ceil(seconds + 2))  # whole seconds: wrk takes no fraction
            if wrk:
                cmd = [
                    wrk,
                    "-t1",
                    f"-c{sizes['hammer']}",
                    f"-d{span}s",
                    "--timeout",
                    "10s",
                    url + "/metrics/json",
                ]
                load = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            else:
                load = _spawn(
                    "benchmarks._loadgen", url + "/metrics/json",
                    "--connections", str(sizes["hammer"]), "--seconds", span,
                )  # fmt: skip
            time.sleep(1.0)
        elif phase == "sse":
            load = _spawn(
                "benchmarks.sse", "--swarm", url, "--clients", str(sizes["sse"]),
                "--seconds", f"{seconds + 3:g}",
            )  # fmt: skip
            if read_line(load.stdout, 60) != "connected":
                raise BenchmarkError("the SSE swarm did not start")
            time.sleep(1.5)  # every client connected and reading
        elif phase == "idle":
            load = _spawn(
                "benchmarks.overload", "--idle", str(port), "--count", str(sizes["idle"]),
                "--seconds", f"{seconds + 60:g}",
            )  # fmt: skip
            line = read_line(load.stdout, 60)
            extra["idle_open"] = int(line.split()[1]) if line.startswith("open ") else 0
        row.update(asyncio.run(_probes(port, seconds, kept)))
        if phase == "idle" and kind == "streammetrics":
            extra["server_open"] = _open_connections(port)
    finally:
        kept.close()
        if load is not None:
            if phase == "idle":
                out = _stop(load)
                with contextlib.suppress(ValueError, IndexError):
                    extra.update(json.loads(out.strip().splitlines()[-1]))
            else:
                if phase == "hammer" and not wrk:
                    load.terminate()
                out = _stop(load, timeout=seconds + 30)
                if phase == "sse":
                    with contextlib.suppress(ValueError, IndexError):
                        extra["sse_refused"] = json.loads(out.strip().splitlines()[-1])["refused"]
                elif phase == "hammer":
                    extra["hammer"] = _hammer_summary(out, bool(wrk))
    row.update(extra)
    return row


def _hammer_summary(out: str, wrk: bool) -> str:
    """The hammer's requests/s and how many were not 2xx (the 429s), in a few words."""
    if not wrk:
        with contextlib.suppress(ValueError, IndexError, KeyError):
            d = json.loads(out.strip().splitlines()[-1])
            return f"{d['requests_per_s']:.0f} req/s, {d['non2xx']} non-2xx"
        return "-"
    rps = next((ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec")), None)
    if rps is None:  # wrk failed: its own words
        return "wrk: " + (out.strip().splitlines() or ["no output"])[-1][:80]
    non2xx = next((ln.split(":")[1].strip() for ln in out.splitlines() if "Non-2xx" in ln), "0")
    return f"{rps} req/s, {non2xx} non-2xx"


def run_case(
    *, seconds: float = 10.0, hammer: int = 1_000, sse: int = 200, idle: int = 5_000
) -> CaseResult:
    """Both servers through the four phases (quiet, hammer, sse, idle), ``seconds`` each."""
    from streammetrics.http.limits import raise_fd_limit

    fds = raise_fd_limit()
    wanted_idle, idle = idle, min(idle, max(fds - 200, 0))
    wrk = shutil.which("wrk")
    res = CaseResult(
        "overload",
        params={
            "seconds_per_phase": seconds,
            "health_probe": f"{_PROBE_RATE:g}/s on new connections (p50/p99/max_ms), "
            f"{_PROBE_RATE:g}/s on one kept-alive connection (kept_p99_ms)",
            "hammer": f"{hammer} connections on /metrics/json, " + ("wrk" if wrk else "asyncio"),
            "sse_clients": sse,
            "idle_connections": idle,
            "fd_soft_limit": fds,
        },
    )
    for kind in ("streammetrics", "litestar"):
        server = _spawn("benchmarks.overload", "--serve", kind)
        try:
            line = read_line(server.stdout, 60)
            if not line.startswith("READY "):
                raise BenchmarkError(f"the {kind} server did not start: {line!r}")
            port = int(line.split()[1])
            for phase in ("quiet", "hammer", "sse", "idle"):
                progress(f"overload: {kind}, {phase}, {seconds:g}s")
                sizes = {"hammer": hammer, "sse": sse, "idle": idle}
                res.rows.append(_phase(kind, port, phase, seconds, wrk, sizes))
        finally:
            _stop(server)
    what = {
        "hammer": f"{hammer:,} clients hammering /metrics/json",
        "sse": f"{sse:,} SSE clients",
        "idle": f"{idle:,} idle connections",
    }
    rows = {(r["server"], r["phase"]): r for r in res.rows}
    for phase, label in what.items():
        ours, floor = rows[("streammetrics", phase)], rows[("litestar", phase)]
        lost = ours["errors"] + ours["timeouts"]
        note = (
            f"new connections; floor (bare Litestar) {_ms(floor['p99_ms'])}; on a kept-alive "
            f"connection {_ms(ours['kept_p99_ms'])} (floor {_ms(floor['kept_p99_ms'])})"
        )
        if lost:
            note += f"; {lost} probes unanswered"
        res.targets.append(
            Target(f"/health p99 with {label}", ours["p99_ms"], "<", _TARGET_MS, "ms", note)
        )
    if idle < wanted_idle:
        res.notes.append(f"only {idle} idle connections: the file-descriptor limit is {fds}")
    res.notes.append(
        "streammetrics answers the hammer with 429 past its rate limit (set to 250/s per "
        "client address here; /health has its own bucket, ten times that); the floor has "
        "no limit and answers 200"
    )
    return res


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="2 s phases instead of 10 s")
    p.add_argument("--seconds", type=float, default=None)
    # The helper processes (not for people):
    p.add_argument("--serve", choices=("streammetrics", "litestar"), help=argparse.SUPPRESS)
    p.add_argument("--idle", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=5_000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        import anyio

        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(_serve, args.serve, backend="asyncio", backend_options={"use_uvloop": True})
        return 0
    if args.idle:
        stats = asyncio.run(_idle_until_stdin(args.idle, args.count, args.seconds or 60.0))
        print(json.dumps(stats), flush=True)
        return 0
    res = run_case(seconds=args.seconds or (2.0 if args.quick else 10.0))
    m = machine()
    print(f"# /health under overload ({m['cpu']}, {m['nproc']} cpus, Python {m['python']})\n")
    print(table(res.rows))
    print()
    print(targets_table(res.targets))
    for note in res.notes:
        print(f"- {note}")
    return 0


async def _idle_until_stdin(port: int, count: int, seconds: float) -> dict[str, Any]:
    """``_idle``, ended early when the parent closes our stdin (watched by a daemon
    thread, so that a read still blocked cannot hold the interpreter at exit)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(sys.stdin.fileno(), 1024):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    return await _idle(port, count, seconds, stop)


if __name__ == "__main__":
    sys.exit(main())

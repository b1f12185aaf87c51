"""A response's head and first body piece go out in one write (``http.coalesce``).

Through real sockets: what a ``HeadHeld`` view of a loopback connection writes arrives
whole and in order however the writes come (a small piece joined, a large one after, a
head alone flushed on the next turn, a close right after the head); and a real
``streammetrics run`` answers each ``/health`` of a keep-alive connection with one write
system call (the kernel's own count, ``/proc/PID/io``), where it took two."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from streammetrics.http.coalesce import JOIN_MAX_BYTES, HeadHeld
from tests.support.paths import BLUEPRINTS
from tests.support.servers import Run, free_offset

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"

Writer = Callable[[HeadHeld, asyncio.Transport], Awaitable[None]]


async def _through(write: Writer) -> bytes:
    """Everything a server on loopback reads from a connection written by ``write``."""
    got = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got.extend(await reader.read())  # until EOF
        w.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    view = HeadHeld(transport, loop)  # type: ignore[arg-type]
    await write(view, transport)  # type: ignore[arg-type]
    if not transport.is_closing():
        await asyncio.sleep(0.05)
        transport.close()
    await asyncio.wait_for(done.wait(), 5)
    server.close()
    await server.wait_closed()
    return bytes(got)


async def _small(view: HeadHeld, _t: asyncio.Transport) -> None:
    view.write(HEAD)
    view.write(b"hello")


async def _large(view: HeadHeld, _t: asyncio.Transport) -> None:
    view.write(HEAD)
    view.write(b"x" * (JOIN_MAX_BYTES + 1))
    view.write(b"tail")


async def _head_alone(view: HeadHeld, _t: asyncio.Transport) -> None:
    view.write(HEAD)
    await asyncio.sleep(0.05)  # turns of the loop with nothing else: it went out
    view.write(b"later")


async def _closed_after_head(view: HeadHeld, _t: asyncio.Transport) -> None:
    view.write(HEAD)
    view.close()


async def _transport_closed_first(view: HeadHeld, t: asyncio.Transport) -> None:
    view.write(HEAD)
    t.close()  # closed under it (a timeout): the held head is dropped, nothing raises
    await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("write", "want"),
    [
        (_small, HEAD + b"hello"),
        (_large, HEAD + b"x" * (JOIN_MAX_BYTES + 1) + b"tail"),
        (_head_alone, HEAD + b"later"),
        (_closed_after_head, HEAD),
        (_transport_closed_first, b""),
    ],
)
def test_what_a_held_view_writes_arrives_whole_and_in_order(write: Writer, want: bytes) -> None:
    assert asyncio.run(_through(write)) == want


def _writes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/PID/io")


def _health_answers(port: int, n: int) -> None:
    """``n`` requests for ``/health`` on one keep-alive connection, each answer read whole."""
    request = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(n):
            s.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ") and body.startswith(b"{")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="no /proc/PID/io here")
def test_a_health_answer_is_one_write_system_call() -> None:
    offset = free_offset([8000, 9000])
    run = Run(BLUEPRINTS / "basic.yaml", "--port-offset", str(offset))
    try:
        urls = run.wait_listening(2)
        port = next(int(u.rsplit(":", 1)[1]) for n, u in urls.items() if "metrics" in n)
        _health_answers(port, 20)  # connections, snapshots and caches warmed
        n = 400
        fewest = None
        for _ in range(3):  # the fewest of three tries: the harness writes now and then too
            before = _writes(run.proc.pid)
            t0 = time.monotonic()
            _health_answers(port, n)
            spent = time.monotonic() - t0
            fewest = min(fewest or 10**9, _writes(run.proc.pid) - before)
        assert fewest is not None
        # one write per answer (two before: the head, then the body), and a few others
        assert n <= fewest < 1.3 * n, (fewest, spent)
    finally:
        run.stop()

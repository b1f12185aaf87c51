"""Embedding an endpoint in a program: ``serve()``, ``serve_forever()`` under anyio and
asyncio, and ``run_until_interrupted()`` stopped by a real signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from functools import partial

import anyio
import httpx
import pytest

import streammetrics
from streammetrics import MetricsEndpoint
from tests.support.process import Spawned
from tests.support.waiting import poll_counted

# -- serve() / run() in anyio and asyncio programs ------------------------------------


@pytest.mark.anyio
async def test_serve_yields_a_listening_endpoint_and_stops_it() -> None:
    async with streammetrics.serve(name="svc", port=0, tick_s=0.1) as ep:
        assert isinstance(ep, MetricsEndpoint)
        url = ep.url
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(url + "/health")).status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2.0) as client:
            await client.get(url + "/health")


@pytest.mark.anyio
async def test_serve_takes_an_endpoint_or_keywords_not_both() -> None:
    with pytest.raises(TypeError, match="not both"):
        async with streammetrics.serve(MetricsEndpoint(port=0), port=0):
            pass


@pytest.mark.anyio
async def test_run_under_an_anyio_task_group_returns_the_endpoint_once_listening() -> None:
    async with anyio.create_task_group() as tg:
        ep = await tg.start(partial(streammetrics.serve_forever, name="svc", port=0))
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(ep.url + "/")).json()["endpoints"]["/dashboard"]
        tg.cancel_scope.cancel()


def test_run_as_a_plain_asyncio_task() -> None:
    async def main() -> dict[str, object]:
        ep = MetricsEndpoint(name="svc", port=0, tick_s=0.1)
        probe = ep.probe("job")

        @probe.timed
        async def job(i: int) -> int:
            await asyncio.sleep(0)
            if i == 3:
                raise ValueError("three")
            return i

        task = asyncio.create_task(streammetrics.serve_forever(ep))
        try:
            async with asyncio.timeout(5):
                while ep.port is None:  # noqa: ASYNC110 - no "listening" event to wait on
                    await asyncio.sleep(0.01)
            for i in range(5):
                with contextlib.suppress(ValueError):
                    await job(i)
            return await poll_counted(ep.url + "/metrics/json", "job")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    body = asyncio.run(main())
    job = body["detailed_components"]["job"]  # type: ignore[index]
    assert (job["items_processed"], job["errors_encountered"]) == (4, 1)
    assert job["last_error"] == "ValueError: three"
    assert job["latency"]["count"] == 5


@pytest.mark.anyio
async def test_an_error_in_the_serve_block_leaves_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with streammetrics.serve(port=0):
            raise KeyError("mine")


# -- run_until_interrupted: a program's entry point, stopped by a real signal ------------

SERVING_PROGRAM = """
import asyncio, sys
import streammetrics

async def main(name: str) -> None:
    try:
        async with streammetrics.serve(name=name, port=0) as endpoint:
            endpoint.probe("worker").processed(3)
            print("metrics on", endpoint.url, flush=True)
            await asyncio.Event().wait()
    finally:
        print("left serve()", flush=True)  # the block ended and the program's cleanup ran

streammetrics.run_until_interrupted(main, "svc")
"""


class Program(Spawned):
    """``python -c PROGRAM`` with its stdout read line by line."""

    def __init__(self, program: str) -> None:
        super().__init__([sys.executable, "-c", program])

    def line(self, timeout: float = 20) -> str:
        line = self.next_line(time.monotonic() + timeout)
        if line is None:
            raise AssertionError(f"exited early: {self.finish()}")
        return line

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"still running after {timeout}s: {self.lines} {self.stderr}"
            ) from None
        return self.proc.returncode, self.collect(), self.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_program_quietly(sig: signal.Signals, code: int) -> None:
    prog = Program(SERVING_PROGRAM)
    try:
        url = prog.line().split()[-1]
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        prog.proc.send_signal(sig)
        rc, out, err = prog.finish()
    assert rc == code, err
    assert err == f"stopped by {sig.name}\n"  # one line, no traceback
    assert out == "left serve()\n"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


def test_a_second_signal_exits_at_once_while_the_first_is_still_stopping() -> None:
    prog = Program(
        """
import anyio, streammetrics

async def main() -> None:
    try:
        print("ready", flush=True)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):  # a shutdown that hangs
            print("stopping", flush=True)
            await anyio.sleep(60)

streammetrics.run_until_interrupted(main)
"""
    )
    assert prog.line() == "ready\n"
    prog.proc.send_signal(signal.SIGINT)
    assert prog.line() == "stopping\n"
    started = time.monotonic()
    prog.proc.send_signal(signal.SIGINT)
    rc, _out, err = prog.finish(timeout=10)
    assert time.monotonic() - started < 5
    assert rc == 130
    assert err == "SIGINT again: exiting at once\n"


def test_a_program_that_ends_by_itself_gets_main_s_result() -> None:
    async def main(a: int, b: int) -> int:
        async with streammetrics.serve(port=0) as ep, httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(ep.url + "/health")).status_code == 200
        return a + b

    assert streammetrics.run_until_interrupted(main, 2, 3) == 5


def test_an_error_of_main_leaves_unwrapped() -> None:
    async def main() -> None:
        async with streammetrics.serve(port=0):
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        streammetrics.run_until_interrupted(main)


def test_a_coroutine_instead_of_the_function_is_refused_with_the_fix() -> None:
    async def main() -> None:
        pass

    with pytest.raises(TypeError, match=r"run_until_interrupted\(main\), not"):
        streammetrics.run_until_interrupted(main())  # type: ignore[arg-type]

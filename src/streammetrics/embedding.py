"""Embedding: a metrics endpoint inside an existing anyio or asyncio program.

``async with serve(port=9000) as endpoint`` starts the endpoint in the background of the
block and stops it (gracefully) when the block ends; ``await serve_forever(port=9000)``
serves until cancelled, for ``asyncio.create_task`` or an anyio task group. Either way the
program's code reports through ``endpoint.probe("name")``: plain int counters that the
endpoint flushes into its own in-process event bus on a short tick.

The server is uvicorn on asyncio; under anyio that means the asyncio backend.

``run_until_interrupted(main)`` is the program's entry point when it has none of its own:
``asyncio.run`` with a quiet Ctrl-C (one line, exit 130) instead of a traceback.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from .components.metrics import MetricsEndpoint

__all__ = ("run_until_interrupted", "serve", "serve_forever")

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")


class _Block:
    """The block a task group runs for (``serve()``'s ``async with`` body, ``main``) beside
    tasks that only serve it (the endpoint, the signal watcher). When the block ends they
    are cancelled; the block's own error is kept and ``reraise()`` raises it as it is once
    the group has closed, not wrapped in the group's ExceptionGroup: ``except ValueError``
    around ``serve()`` or ``run_until_interrupted()`` must still work."""

    __slots__ = ("_raised",)

    def __init__(self) -> None:
        self._raised: BaseException | None = None

    @contextmanager
    def ending(self, tg: TaskGroup) -> Iterator[None]:
        """Run the block inside ``tg``; when it ends, cancel what runs beside it."""
        try:
            yield
        except BaseException as exc:
            self._raised = exc
        finally:
            tg.cancel_scope.cancel()

    def reraise(self) -> None:
        """Raise the block's own error, if it had one (call it after the group closed)."""
        if self._raised is not None:
            raise self._raised


def _endpoint(endpoint: MetricsEndpoint | None, kwargs: dict[str, Any]) -> MetricsEndpoint:
    if endpoint is None:
        kwargs.setdefault("port", 0)
        return MetricsEndpoint(**kwargs)
    if kwargs:
        raise TypeError(
            "serve()/serve_forever() take an endpoint or its keywords, not both "
            f"(got {sorted(kwargs)})"
        )
    return endpoint


@asynccontextmanager
async def serve(
    endpoint: MetricsEndpoint | None = None, /, **kwargs: Any
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``endpoint`` (or ``MetricsEndpoint(**kwargs)``; ``port`` defaults to 0, a
    free one) for the duration of the block; yields it listening (``endpoint.url``).

    Leaving the block stops accepting, ends the ``/stream`` clients, lets requests in
    flight finish within ``shutdown_timeout_s`` and flushes the probes a last time.
    """
    ep = _endpoint(endpoint, kwargs)
    block = _Block()
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        with block.ending(tg):
            yield ep
    block.reraise()


async def serve_forever(
    endpoint: MetricsEndpoint | None = None,
    /,
    *,
    task_status: TaskStatus[MetricsEndpoint] = anyio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve until cancelled: ``asyncio.create_task(serve_forever(ep))`` or ``await
    tg.start(serve_forever, ep)`` (which returns the endpoint once it listens).

    Named so, not ``run``, because ``streammetrics run`` is the command that runs a
    blueprint; this serves one endpoint."""
    ep = _endpoint(endpoint, kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        task_status.started(ep)


def run_until_interrupted(main: Callable[[Unpack[PosArgsT]], Awaitable[T]], *args: *PosArgsT) -> T:
    """Run ``main(*args)`` on asyncio as the program's entry point, stopping quietly on
    Ctrl-C or SIGTERM: ``streammetrics.run_until_interrupted(main)`` where a program would
    write ``asyncio.run(main())``.

    The first SIGINT or SIGTERM cancels ``main``, so its ``async with serve()`` blocks end
    as on any cancellation (gracefully: requests in flight finish, probes are flushed) and
    its ``finally`` clauses run. Then one line goes to stderr (``stopped by SIGINT``) and
    ``SystemExit(128 + signal)`` ends the program: 130 for SIGINT, 143 for SIGTERM, the
    codes a shell shows for a program a signal stopped. ``asyncio.run`` would instead end
    in a ``KeyboardInterrupt`` traceback chained through every block being cancelled. A
    second signal while ``main`` is still stopping exits at once, with the same code: whoever
    asks twice wants out now.

    Returns what ``main`` returns when it ends by itself; an error of ``main`` leaves as it
    is (not wrapped in an ExceptionGroup). Call it from the main thread (only that thread
    receives signals).

    Why a separate entry point and not signal handling inside ``serve()``: signals belong
    to the program, not to a library block. A program that handles them itself (a server
    framework, a test runner, a thread) keeps doing so, and ``serve()`` /
    ``serve_forever()`` stay plain cancellable async code.
    """
    if inspect.iscoroutine(main):
        main.close()  # never awaited: close it so Python does not warn about that too
        raise TypeError(
            "run_until_interrupted() takes the async function, not its coroutine: "
            "run_until_interrupted(main), not run_until_interrupted(main())"
        )
    outcome: T | _Stopped
    try:
        outcome = anyio.run(_until_signal, main, args, backend="asyncio")
    except KeyboardInterrupt:
        # A Ctrl-C in the moment before the signal receiver is installed or after it is
        # removed reaches Python's own handler; it is the same request to stop.
        outcome = _Stopped(signal.SIGINT)
    if not isinstance(outcome, _Stopped):
        return outcome
    print(f"stopped by {signal.Signals(outcome.signum).name}", file=sys.stderr, flush=True)
    raise SystemExit(128 + outcome.signum)


class _Stopped(msgspec.Struct, frozen=True):
    """``main`` was stopped by this signal (whatever it returned then)."""

    signum: int


async def _until_signal(
    main: Callable[[Unpack[PosArgsT]], Awaitable[T]], args: tuple[*PosArgsT]
) -> T | _Stopped:
    """``main(*args)``, cancelled by the first SIGINT/SIGTERM: its result, or the signal
    that stopped it."""
    signalled: int | None = None
    returned: list[T] = []
    block = _Block()
    main_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def watch() -> None:
                nonlocal signalled
                async for signum in signals:
                    if signalled is None:
                        signalled = signum
                        main_scope.cancel()
                        continue
                    name = signal.Signals(signum).name
                    print(f"{name} again: exiting at once", file=sys.stderr, flush=True)
                    sys.stdout.flush()
                    os._exit(128 + signum)

            tg.start_soon(watch)
            with block.ending(tg), main_scope:
                returned.append(await main(*args))
    block.reraise()
    if signalled is not None:
        return _Stopped(signalled)
    (value,) = returned  # only a signal cancels main_scope: without one, main returned
    return value

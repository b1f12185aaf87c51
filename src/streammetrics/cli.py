"""``streammetrics run | validate | demo``: the only place errors become exit codes."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import anyio
import anyio.abc

from . import __version__
from .blueprint import Blueprint, load_blueprint, parse_blueprint
from .errors import StreamMetricsError
from .harness import Harness

__all__ = ("main",)

EXIT_USAGE = 2
#: A drain that had to cancel components at its deadline (items may have been lost).
EXIT_UNCLEAN = 1
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0


def _add_shutdown_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long the drain may take before what is left is "
        f"cancelled (default {DEFAULT_SHUTDOWN_TIMEOUT_S:g})",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streammetrics",
        description="Run stream-system blueprints with a live metrics endpoint.",
    )
    p.add_argument("--version", action="version", version=f"streammetrics {__version__}")
    p.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a blueprint until Ctrl-C or SIGTERM")
    run.add_argument("blueprint", type=Path)
    run.add_argument(
        "--port-offset",
        type=int,
        default=None,
        help="add N to every configured port (also $STREAMMETRICS_PORT_OFFSET)",
    )
    _add_shutdown_timeout(run)
    val = sub.add_parser("validate", help="check a blueprint; exit 0, or 2 with the error")
    val.add_argument("blueprint", type=Path)
    demo = sub.add_parser("demo", help="run the bundled demo: live traffic and a metrics endpoint")
    demo.add_argument("--port-offset", type=int, default=None)
    _add_shutdown_timeout(demo)
    return p


def demo_blueprint(port_offset: int | None = None) -> Blueprint:
    """The bundled demo (also at ``blueprints/demo.yaml`` in the repository)."""
    text = files("streammetrics").joinpath("blueprints/demo.yaml").read_text(encoding="utf-8")
    return parse_blueprint(text, source="streammetrics:demo.yaml", port_offset=port_offset)


async def run_blueprint(
    bp: Blueprint, shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
) -> int:
    """Run until SIGINT/SIGTERM, then drain (``Harness.shutdown``) and return the exit code:
    0 when everything drained, 1 when the deadline cancelled something.

    A second signal during the drain ends the process at once with ``128 + signal``
    (130 for SIGINT, 143 for SIGTERM), as if the signal had killed it: an operator who
    asks twice wants out now, and whatever is hung (a server waiting on a request, a
    thread in a disk write) would not honour a cancellation quickly. Nothing is left
    half-written: a Store's rows are committed in whole transactions.
    """
    harness = Harness(bp)
    code = 0

    async def drain(tg: anyio.abc.TaskGroup) -> None:
        nonlocal code
        report = await harness.shutdown(shutdown_timeout_s)
        if report.clean:
            print(f"drained in {report.seconds:.2f}s", flush=True)
        else:
            code = EXIT_UNCLEAN
            left = sum(report.left_in_bindings.values())
            print(
                f"drain deadline of {shutdown_timeout_s:g}s passed: cancelled "
                f"{', '.join(report.cancelled)}; {left} items left in bindings",
                flush=True,
            )
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await tg.start(harness.run)
            # Everything built at start-up lives as long as the process: moving it out of
            # the collector's reach removes the 20-60 ms full collections seen under load.
            gc.freeze()
            print(f"streammetrics {__version__}: system {bp.name!r} running", flush=True)
            for where in harness.listening:
                print(
                    f"  {where.component} ({where.type}) listening on "
                    f"http://{where.host}:{where.port}",
                    flush=True,
                )
            print("  press Ctrl-C to stop", flush=True)
            async for signum in signals:
                name = signal.Signals(signum).name
                if harness.state == "running":
                    print(
                        f"{name}: stopping (draining for at most {shutdown_timeout_s:g}s; "
                        "signal again to exit at once)",
                        flush=True,
                    )
                    tg.start_soon(drain, tg)
                elif harness.state == "draining":
                    print(f"{name} again: exiting at once", flush=True)
                    sys.stderr.flush()
                    os._exit(128 + signum)
    print("stopped", flush=True)
    return code


def _loop_options() -> dict[str, bool]:
    """uvloop where it is installed (``uvicorn[standard]`` brings it on Linux and macOS):
    the servers answer about a fifth more requests on it than on asyncio's own loop."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


def _ours(group: BaseExceptionGroup[BaseException]) -> StreamMetricsError | None:
    """The error of ours that a task group wrapped, if that is what stopped it."""
    for exc in group.exceptions:
        if isinstance(exc, StreamMetricsError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _ours(exc)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "validate":
            bp = load_blueprint(args.blueprint)
            print(
                f"ok: system {bp.name!r}, {len(bp.components)} components, "
                f"{len(bp.bindings)} bindings"
            )
            return 0
        bp = (
            demo_blueprint(args.port_offset)
            if args.command == "demo"
            else load_blueprint(args.blueprint, port_offset=args.port_offset)
        )
        if args.shutdown_timeout < 0:
            raise StreamMetricsError(
                f"--shutdown-timeout must be >= 0 seconds, got {args.shutdown_timeout:g}"
            )
        return anyio.run(run_blueprint, bp, args.shutdown_timeout, backend_options=_loop_options())
    except StreamMetricsError as exc:
        print(f"streammetrics: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        ours = _ours(group)
        if ours is None:
            raise
        print(f"streammetrics: error: {ours}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

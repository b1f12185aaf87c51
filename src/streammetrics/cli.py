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

from .blueprint import (
    DEFAULT_MAX_COMPONENTS,
    PORT_OFFSET_ENV,
    Blueprint,
    load_blueprint,
    parse_blueprint,
)
from .errors import BlueprintError, StreamMetricsError
from .harness import Harness
from .version import __version__

__all__ = ("main",)

EXIT_USAGE = 2
#: A drain that had to cancel components at its deadline (items may have been lost).
EXIT_UNCLEAN = 1
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEMO_SOURCE = "streammetrics:demo.yaml"


def _add_shutdown_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long the drain may take before what is left is "
        f"cancelled (default {DEFAULT_SHUTDOWN_TIMEOUT_S:g})",
    )


def _add_port_offset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port-offset",
        type=int,
        default=None,
        metavar="N",
        help=f"add N to every non-zero configured port (default ${PORT_OFFSET_ENV}, else 0); "
        "every port must stay within 1-65535",
    )


def _add_blueprint(p: argparse.ArgumentParser) -> None:
    p.add_argument("blueprint", type=Path, help="the blueprint YAML file")
    p.add_argument(
        "--max-components",
        type=_positive,
        default=DEFAULT_MAX_COMPONENTS,
        metavar="N",
        help="refuse a blueprint declaring more than N components, as soon as the reader "
        f"reaches component N+1 (default {DEFAULT_MAX_COMPONENTS:,})",
    )


def _positive(text: str) -> int:
    """An argument that is a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streammetrics",
        description="Run stream-system blueprints with a live metrics endpoint.",
    )
    p.add_argument("--version", action="version", version=f"streammetrics {__version__}")
    p.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help=f"Python log level, one of {', '.join(LOG_LEVELS)} (any case; default WARNING)",
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        help="what to do (each takes --help for its own options)",
    )
    run = sub.add_parser(
        "run",
        help="run a blueprint until Ctrl-C or SIGTERM",
        description="Run a blueprint until Ctrl-C or SIGTERM, printing where each server "
        "listens; then drain it and stop.",
    )
    _add_blueprint(run)
    _add_port_offset(run)
    _add_shutdown_timeout(run)
    val = sub.add_parser(
        "validate",
        help="check a blueprint; exit 0, or 2 with the error",
        description="Check a blueprint as run would load it (with the same port offset); "
        "exit 0, or 2 with an error naming the file and the path of the bad value.",
    )
    _add_blueprint(val)
    _add_port_offset(val)
    demo = sub.add_parser(
        "demo",
        help="run the bundled demo: live traffic and a metrics endpoint",
        description="Run the bundled demo blueprint: live traffic through a pipeline and a "
        "metrics endpoint on port 9000 (plus the offset).",
    )
    _add_port_offset(demo)
    _add_shutdown_timeout(demo)
    return p


def demo_blueprint(port_offset: int) -> Blueprint:
    """The bundled demo (also at ``blueprints/demo.yaml`` in the repository)."""
    text = files("streammetrics").joinpath("blueprints/demo.yaml").read_text(encoding="utf-8")
    return parse_blueprint(text, source=DEMO_SOURCE, port_offset=port_offset)


def _port_offset(given: int | None) -> tuple[int, str]:
    """The offset to apply and how to name it in an error: the option, else the variable."""
    if given is not None:
        return given, f"--port-offset {given}"
    raw = os.environ.get(PORT_OFFSET_ENV, "0")
    try:
        return int(raw), f"${PORT_OFFSET_ENV}={raw}"
    except ValueError:
        raise StreamMetricsError(f"${PORT_OFFSET_ENV} must be an integer, got {raw!r}") from None


def _check_shifted_ports(bp: Blueprint, offset: int, named: str) -> None:
    """Refuse an offset that moves a configured port out of 1-65535.

    The blueprint's own validation would only see the shifted number and blame the file
    (``Expected int <= 65535``) or, for a port moved to exactly 0, silently pick a free
    port; the file is fine, the offset is what is wrong, so the message says so.
    """
    for c in bp.components:
        port = getattr(c.config, "port", None)
        if not isinstance(port, int) or isinstance(port, bool) or port <= 0:
            continue  # no port, or 0 (a free one): the offset leaves it alone
        if not 0 < port + offset < 65536:
            raise BlueprintError(
                f"{named} moves port {port} of component {c.name!r} to {port + offset}, "
                "outside 1-65535",
                path=f"system.components[{c.index}].config.port",
                value=port,
            )


def _load(args: argparse.Namespace) -> Blueprint:
    """The blueprint the command names (or the demo), with the port offset applied.

    It is validated unshifted first, so that an offset pushing a port out of range is
    reported as the offset's fault, then loaded again with the offset. A blueprint error
    comes out naming the file: ``blueprints/x.yaml: system.components[2].type: ...``.
    """
    where = DEMO_SOURCE if args.command == "demo" else str(args.blueprint)
    offset, named = _port_offset(args.port_offset)

    def load(port_offset: int) -> Blueprint:
        if args.command == "demo":
            return demo_blueprint(port_offset)
        return load_blueprint(
            args.blueprint, port_offset=port_offset, max_components=args.max_components
        )

    try:
        bp = load(0)
        if offset:
            _check_shifted_ports(bp, offset, named)
            bp = load(offset)
    except BlueprintError as exc:
        at = "" if exc.path in ("$", where) else f"{exc.path}: "
        raise StreamMetricsError(f"{where}: {at}{exc.reason}") from None
    return bp


async def run_blueprint(bp: Blueprint, shutdown_timeout_s: float) -> int:
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


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\x1b``, ``\\n``,
    ``\\u200b``): an error quotes the input it refuses, and a control character from a
    hostile file must neither reach the terminal nor split the error over lines."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        bp = _load(args)
        if args.command == "validate":
            print(
                f"ok: system {bp.name!r}, {len(bp.components)} components, "
                f"{len(bp.bindings)} bindings"
            )
            return 0
        if args.shutdown_timeout < 0:
            raise StreamMetricsError(
                f"--shutdown-timeout must be >= 0 seconds, got {args.shutdown_timeout:g}"
            )
        return anyio.run(run_blueprint, bp, args.shutdown_timeout, backend_options=_loop_options())
    except StreamMetricsError as exc:
        print(f"streammetrics: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        ours = _ours(group)
        if ours is None:
            raise
        print(f"streammetrics: error: {_one_line(str(ours))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Runs a blueprint: every component in one anyio task group, bindings as bounded
memory streams, probes flushed into the event bus on a short tick.

Lifecycle is reported as events like everything else (started, heartbeat, stopped),
so a MetricsEndpoint judges liveness from what it sees, not from harness internals.
A component that fails after it started is reported ``stopped: failed`` and the rest
keep running; one that fails while starting (a busy port) aborts the start, because
a half-started system would answer health checks about a system that is not there.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import TaskStatus

from .blueprint import Blueprint, ComponentDef
from .breaker import CircuitBreaker
from .buckets import DEFAULT_HISTOGRAM_BUCKETS, Ladder
from .bus import EventBus
from .components.base import FLUSH_INTERVAL_S, Component, Context, Input, Output, Peer
from .model.types import describe_exception
from .snapshot import BreakerState

__all__ = ("DrainReport", "Harness", "HarnessStatistics", "Listening")

log = logging.getLogger("streammetrics")

#: How often each running component reports a heartbeat (well inside the 30 s that
#: health allows by default before it calls a silent component down).
HEARTBEAT_INTERVAL_S: Final = 5.0


class Listening(msgspec.Struct, frozen=True):
    """Where a component's server accepts connections."""

    component: str
    type: str
    host: str
    port: int


class HarnessStatistics(msgspec.Struct, frozen=True):
    state: str
    components: int
    running: int
    failed: list[str]
    bindings: dict[str, tuple[int, int]]
    """Per binding key: (items waiting, capacity)."""


class DrainReport(msgspec.Struct, frozen=True):
    """How a ``Harness.shutdown`` went."""

    clean: bool
    """Every component finished before the deadline (nothing was cancelled)."""
    seconds: float
    """How long the drain took."""
    cancelled: list[str]
    """Components still running at the deadline, then cancelled."""
    left_in_bindings: dict[str, int]
    """Items still waiting in a binding at the deadline (lost), per binding key."""


def _report_transition(
    ctx: Context, old: BreakerState, new: BreakerState, breaker: CircuitBreaker
) -> None:
    """Every breaker transition is an event, like everything else the harness sees."""
    log.info("breaker of %r: %s -> %s", ctx.name, old, new)
    ctx.emit("breaker", detail=new)


class _Started:
    """Records whether a component reached ``task_status.started()``."""

    def __init__(self, inner: TaskStatus[Any]) -> None:
        self.inner = inner
        self.done = False
        self.value: Any = None

    def started(self, value: Any = None) -> None:
        self.done = True
        self.value = value
        self.inner.started(value)


class Harness:
    """Owns the components, bindings and bus of one running blueprint."""

    def __init__(self, blueprint: Blueprint, *, flush_interval: float = FLUSH_INTERVAL_S) -> None:
        """``flush_interval``: how often the probes' counts go to the bus (how stale a
        count may be); the tests shorten it to see counts sooner."""
        self.blueprint = blueprint
        # Probes bucket latencies once, for every endpoint: in a ladder that holds the
        # exported boundaries of each, so that each endpoint's buckets are exact.
        self.bus = EventBus(Ladder(histogram_buckets(blueprint)))
        self.flush_interval = flush_interval
        self.state = "created"
        self.listening: list[Listening] = []
        self.failed: list[str] = []
        self._running: set[str] = set()
        self._scope: anyio.CancelScope | None = None
        # Per component: its own cancel scope and a "finished" flag, so that shutdown can
        # stop producers first and wait for consumers to finish on their own.
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._finished: dict[str, anyio.Event] = {}
        self.outputs: dict[str, Output] = {}
        self.components: dict[str, Component] = self._build()

    def _build(self) -> dict[str, Component]:
        bp = self.blueprint
        inputs: dict[str, list[Input]] = {c.name: [] for c in bp.components}
        outputs: dict[str, list[Output]] = {c.name: [] for c in bp.components}
        for b in bp.bindings:
            send, recv = anyio.create_memory_object_stream[Any](b.buffer)
            out = Output(
                b.key, b.stream_name, b.to_component, send, self.bus.probe(b.from_component)
            )
            outputs[b.from_component].append(out)
            inputs[b.to_component].append(Input(b.key, b.stream_name, b.from_component, recv))
            self.outputs[b.key] = out
        kinds = {c.name: bp.breaker_kind(c.name) for c in bp.components}
        # What the observers list before any event: breakers as the harness builds them.
        peers = tuple(Peer(c.name, c.type, kinds[c.name] is not None) for c in bp.components)
        built: dict[str, Component] = {}
        for c in bp.components:
            ctx = Context(
                name=c.name,
                type=c.type,
                config=c.config,
                probe=self.bus.probe(c.name),
                bus=self.bus,
                peers=peers,
                inputs=inputs[c.name],
                outputs=outputs[c.name],
                system_outputs=self.outputs,
                system=bp.name,
            )
            kind = kinds[c.name]
            if kind is not None:
                ctx.breaker = CircuitBreaker(
                    c.breaker, on_transition=partial(_report_transition, ctx)
                )
            if kind == "intake":
                ctx.probe.breaker = ctx.breaker
            # "sends": an APIEndpoint reports its sends to the breaker itself, not through
            # the probe, whose errors include the clients' bad bodies.
            built[c.name] = c.cls(ctx)
        return built

    def _order(self) -> list[ComponentDef]:
        """Observers first, so they see every other component start."""
        return sorted(self.blueprint.components, key=lambda c: (not c.cls.observes_events, c.index))

    async def run(self, *, task_status: TaskStatus[Harness] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status`` fires once every component has started."""
        self.state = "starting"
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._flusher)
                tg.start_soon(self._heartbeats)
                for c in self._order():
                    value = await tg.start(self._run_component, c)
                    if isinstance(value, tuple) and len(value) == 2:
                        host, port = value
                        self.listening.append(Listening(c.name, c.type, host, port))
                self.state = "running"
                task_status.started(self)
        finally:
            self.state = "stopped"
            self.bus.flush()  # the last counts reach the aggregates

    def stop(self) -> None:
        """Cancel every component at once (``shutdown`` is the graceful way)."""
        if self._scope is not None:
            self._scope.cancel()

    async def shutdown(self, timeout_s: float = 10.0) -> DrainReport:
        """Stop in dependency order, so that every item a producer accepted is processed.

        1. Producers (components with no input from another component) are cancelled:
           a Source stops making items; a server stops accepting connections and lets the
           requests in flight finish, each one handing its items to its bindings.
        2. Every other component finishes on its own once its inputs close and drain
           (``EndOfStream`` after the last buffered item), closing its own outputs in
           turn, so the pipeline empties front to back and a Store commits what it got.
        3. The bus is flushed and the observers (MetricsEndpoints) stop last, so their
           aggregates hold the final counts.

        Past ``timeout_s`` everything still running is cancelled (a cycle of bindings, a
        consumer stuck on a hung call); the report says what was cancelled and how many
        items were left in bindings.
        """
        t0 = time.monotonic()
        self.state = "draining"
        bp = self.blueprint
        observers = {c.name for c in bp.components if c.cls.observes_events}
        workers = [c.name for c in bp.components if c.name not in observers]
        fed = {b.to_component for b in bp.bindings if b.from_component not in observers}
        with anyio.move_on_after(timeout_s):
            for name in workers:
                if name not in fed:
                    self._cancel(name)
            for name in workers:
                await self._wait_finished(name)
            self.bus.flush()
            for name in observers:
                self._cancel(name)
            for name in observers:
                await self._wait_finished(name)
        cancelled = [
            c.name
            for c in bp.components
            if c.name in self._finished and not self._finished[c.name].is_set()
        ]
        left = {k: n for k, o in self.outputs.items() if (n := o.buffer()[0])}
        if cancelled:
            log.warning(
                "shutdown: %s still running after %gs, cancelled (items left in bindings: %s)",
                ", ".join(cancelled),
                timeout_s,
                left or "none",
            )
        self.stop()
        return DrainReport(not cancelled, time.monotonic() - t0, cancelled, left)

    def _cancel(self, name: str) -> None:
        scope = self._scopes.get(name)
        if scope is not None:
            scope.cancel()

    async def _wait_finished(self, name: str) -> None:
        done = self._finished.get(name)
        if done is not None:
            await done.wait()

    async def _run_component(
        self, c: ComponentDef, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        comp = self.components[c.name]
        ctx = comp.ctx
        rec = _Started(task_status)
        scope = self._scopes[c.name] = anyio.CancelScope()
        finished = self._finished[c.name] = anyio.Event()
        ctx.emit("started")
        self._running.add(c.name)
        failed = False
        try:
            with scope:
                await comp.run(task_status=rec)
        except Exception as exc:
            if not rec.done:
                raise
            failed = True
            self.failed.append(c.name)
            log.exception("component %r failed", c.name)
            ctx.emit("stopped", detail="failed")
            ctx.probe.error(detail=describe_exception(exc))
        finally:
            self._running.discard(c.name)
            for out in ctx.outputs:
                out.stream.close()
            for inp in ctx.inputs:
                inp.stream.close()
            if not failed:  # here, not after: a cancelled component stopped too
                ctx.emit("stopped")
            finished.set()
        if not rec.done:
            rec.started()

    async def _flusher(self) -> None:
        while True:
            await anyio.sleep(self.flush_interval)
            await self.bus.flush_async()

    async def _heartbeats(self) -> None:
        while True:
            for name in list(self._running):
                self.components[name].ctx.emit("heartbeat")
            await anyio.sleep(HEARTBEAT_INTERVAL_S)

    def statistics(self) -> HarnessStatistics:
        return HarnessStatistics(
            state=self.state,
            components=len(self.components),
            running=len(self._running),
            failed=list(self.failed),
            bindings={k: o.buffer() for k, o in self.outputs.items()},
        )


def histogram_buckets(blueprint: Blueprint) -> list[tuple[float, ...]]:
    """The exported histogram boundaries of each metrics endpoint of ``blueprint``
    (the default ones when it has none, as an aggregator made without any exports)."""
    from .components.metrics import MetricsEndpointConfig

    return [
        c.config.histogram_buckets
        for c in blueprint.components
        if isinstance(c.config, MetricsEndpointConfig)
    ] or [DEFAULT_HISTOGRAM_BUCKETS]

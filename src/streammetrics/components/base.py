"""What every component is given and must provide.

A component gets a ``Context``: its validated config, its probe, the receiving ends of
the bindings into it and the sending ends of the bindings out of it, and the system's
components as ``Peer``s (what an observer lists before their first event). The context
carries what a component needs of the blueprint, so that components never depend on the
blueprint module that names them. It provides
``run()``, which the harness calls inside its task group and which must call
``task_status.started()`` once it is ready (a server bound, a file open), so that
``streammetrics run`` can say "listening" only when it is true.

Components that consume items subclass ``Processor`` and implement ``process()``:
the base reads the inputs, times each call, counts it processed or failed on the
probe, and sends what ``process()`` returns down every output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..model.events import Event, EventKind
from ..model.types import describe_exception

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ..breaker import CircuitBreaker
    from ..bus import EventBus
    from ..probe import Probe

__all__ = (
    "FAIL_MARK",
    "FLUSH_INTERVAL_S",
    "Component",
    "Context",
    "EmptyConfig",
    "Input",
    "ItemFailed",
    "Output",
    "Peer",
    "Processor",
    "marked_to_fail",
)

#: How often the probes' counts are flushed into the bus (by the harness, or by an
#: endpoint made in code that has no harness): the staleness of every count.
FLUSH_INTERVAL_S: Final = 0.1

#: The key of a dict item that a ``Source`` with an ``error_ratio`` sets to ``true``: every
#: consumer fails such an item, so synthetic load makes real errors flow downstream.
FAIL_MARK: Final = "fail"


def marked_to_fail(item: Any) -> bool:
    """Whether ``item`` was made to fail (``{"fail": true, ...}``)."""
    return isinstance(item, dict) and item.get(FAIL_MARK) is True


class EmptyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A component that takes no configuration."""


@dataclass(eq=False)
class Output:
    """The sending end of one binding; every send is counted as a stream message."""

    key: str
    """Unique stream key: ``from->to:stream_name``."""
    stream_name: str
    to_component: str
    stream: MemoryObjectSendStream[Any]
    probe: Probe

    async def send(self, item: Any) -> None:
        await self.stream.send(item)
        self.probe.message(self.key)

    def buffer(self) -> tuple[int, int]:
        """(items waiting, capacity) of the binding."""
        s = self.stream.statistics()
        return s.current_buffer_used, int(s.max_buffer_size)


@dataclass(eq=False)
class Input:
    """The receiving end of one binding."""

    key: str
    stream_name: str
    from_component: str
    stream: MemoryObjectReceiveStream[Any]


class Peer(msgspec.Struct, frozen=True):
    """A component of the system as the others may know it: what an observer lists
    before the component's first event."""

    name: str
    type: str
    """The name its blueprint gives the type (``FastAPIEndpoint`` stays so)."""
    breaker: bool = False
    """Whether it runs behind a circuit breaker (listed under ``circuit_breakers``)."""


@dataclass(eq=False)
class Context:
    """Everything the harness hands a component."""

    name: str
    type: str
    config: Any
    probe: Probe
    bus: EventBus
    peers: tuple[Peer, ...] = ()
    """Every component of the system, this one included, in blueprint order."""
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    breaker: CircuitBreaker | None = None
    """The breaker around this component's work (consumers only; set by the harness)."""
    system_outputs: dict[str, Output] = field(default_factory=dict)
    """Every binding of the system by key (a MetricsEndpoint watches their buffers)."""
    wall: Callable[[], float] = time.time
    system: str | None = None
    """The blueprint's system name (None for a component made in code, without one)."""

    def emit(self, kind: EventKind, detail: str | None = None, **fields: Any) -> None:
        """Report a lifecycle, breaker or span event straight to the bus."""
        self.bus.publish([Event(self.name, kind, timestamp=self.wall(), detail=detail, **fields)])

    async def admit(self) -> None:
        """Wait while the breaker is open: the next item stays in the binding meanwhile."""
        b = self.breaker
        if b is None:
            return
        # The breaker reopens by time (reset timeout), not by an event: sleep until then.
        while not b.allow():  # noqa: ASYNC110
            await anyio.sleep(max(b.wait_time(), 0.01))

    async def send(self, item: Any, outputs: Sequence[Output] | None = None) -> None:
        """Send ``item`` down every output (or the ones given)."""
        for out in self.outputs if outputs is None else outputs:
            await out.send(item)


class Component:
    """Base of every component type a blueprint can name."""

    type_name: ClassVar[str]
    """The name blueprints use in ``type:``."""
    Config: ClassVar[type[msgspec.Struct]] = EmptyConfig
    """The config struct; a blueprint's ``config:`` is validated against it."""
    serves_port: ClassVar[bool] = False
    """True when ``config.port`` is a listening port (checked for clashes)."""
    observes_events: ClassVar[bool] = False
    """True for a component that watches the others' events (a MetricsEndpoint): the
    harness starts it first, so it sees every other start, and stops it last, so it
    holds the final counts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def name(self) -> str:
        return self.ctx.name

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        """Do the component's work until cancelled or its inputs close."""
        task_status.started()


class ItemFailed(Exception):
    """An item that the component could not process (counted as an error)."""


class Processor(Component):
    """A component that consumes its inputs item by item."""

    async def process(self, item: Any) -> Any | None:
        """Handle one item; return what goes downstream (None: nothing).

        An item ``marked_to_fail`` fails before ``process`` is called: that is how a
        ``Source`` with an ``error_ratio`` makes real errors flow downstream.
        """
        return item

    async def handle(self, item: Any) -> None:
        """Time and count one item; a failing item is counted, not fatal."""
        probe = self.ctx.probe
        t0 = time.perf_counter()
        try:
            if marked_to_fail(item):
                raise ItemFailed("item marked to fail")
            out = await self.process(item)
        except Exception as exc:
            probe.error(detail=describe_exception(exc), latency=time.perf_counter() - t0)
            return
        probe.processed(latency=time.perf_counter() - t0)
        if out is not None:
            await self.ctx.send(out)

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        inputs = self.ctx.inputs
        if not inputs:
            await anyio.sleep_forever()
        async with anyio.create_task_group() as tg:
            for inp in inputs:
                tg.start_soon(self._consume, inp)

    async def _consume(self, inp: Input) -> None:
        admit = self.ctx.admit
        async with inp.stream:
            while True:
                await admit()  # before receiving: while open, items wait in the binding
                try:
                    item = await inp.stream.receive()
                except anyio.EndOfStream:
                    return
                await self.handle(item)

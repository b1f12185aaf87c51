"""The StreamProcessor component: the small, real transformations a pipeline needs.

``map`` tags each item with the processor's name, so what reaches a Store shows the
path it took; ``filter`` drops items whose field is falsy (a dropped item is still a
processed item: the processor did its job on it); ``windowing`` groups items into
windows of ``window_size`` items or ``window_seconds`` seconds, whichever closes first.

A window closes by count inside ``process()`` or by time in a timer task, so two
closes can race; both hand the window to one lock, in the order they closed, so
windows leave in order. On input close the partial window is flushed; on cancellation
it is not (downstream is being cancelled too), and ``statistics().pending`` says what
was left.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus
from msgspec import Meta

from .base import Context, Processor

__all__ = ("StreamProcessor", "StreamProcessorConfig", "StreamProcessorStatistics", "Variant")

Variant = Literal["map", "filter", "windowing"]


class StreamProcessorConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    variant: Variant = "map"
    """What the processor does to each item."""
    field: str = "keep"
    """``filter``: an item passes when this field of it is truthy (non-dicts never do)."""
    window_size: Annotated[int, Meta(ge=1, le=1_000_000)] | None = 10
    """``windowing``: a window closes when it holds this many items (null: by time only)."""
    window_seconds: Annotated[float, Meta(gt=0, le=86_400)] | None = None
    """``windowing``: a window closes this long after its first item (null: by count only)."""
    work_ms: Annotated[float, Meta(ge=0, le=60_000)] = 0.0
    """Simulated processing time per item, for demos of latency and backpressure."""

    def __post_init__(self) -> None:
        if self.variant == "windowing" and self.window_size is None and self.window_seconds is None:
            raise ValueError("a windowing processor needs window_size, window_seconds or both")


class StreamProcessorStatistics(msgspec.Struct, frozen=True):
    variant: Variant
    received: int
    """Items handed to ``process()`` (failed ones excluded: they never get there)."""
    emitted: int
    """Items (or, for ``windowing``, windows) sent downstream."""
    dropped: int
    """``filter``: items that did not pass."""
    pending: int
    """``windowing``: items in the window that has not closed yet."""


class StreamProcessor(Processor):
    """Maps, filters or windows the items of its inputs."""

    type_name = "StreamProcessor"
    Config = StreamProcessorConfig

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.config: StreamProcessorConfig = ctx.config
        self._received = 0
        self._emitted = 0
        self._dropped = 0
        self._window: list[Any] = []
        self._opened_at: float | None = None
        self._generation = 0
        self._opened = anyio.Event()
        self._send_lock = anyio.Lock()

    def statistics(self) -> StreamProcessorStatistics:
        return StreamProcessorStatistics(
            variant=self.config.variant,
            received=self._received,
            emitted=self._emitted,
            dropped=self._dropped,
            pending=len(self._window),
        )

    async def process(self, item: Any) -> Any | None:
        cfg = self.config
        self._received += 1
        if cfg.work_ms:
            await anyio.sleep(cfg.work_ms / 1000.0)
        if cfg.variant == "map":
            self._emitted += 1
            if isinstance(item, dict):
                return {**item, "processed_by": self.name}
            return {"value": item, "processed_by": self.name}
        if cfg.variant == "filter":
            if isinstance(item, dict) and item.get(cfg.field):
                self._emitted += 1
                return item
            self._dropped += 1
            return None
        if not self._window:
            self._opened_at = anyio.current_time()
            self._opened.set()
        self._window.append(item)
        if cfg.window_size is not None and len(self._window) >= cfg.window_size:
            await self._close_window()
        return None

    async def _close_window(self) -> None:
        """Take the open window (synchronously, so no item slips in) and send it."""
        items, self._window = self._window, []
        self._opened_at = None
        self._generation += 1
        self._opened = anyio.Event()
        if not items:
            return
        # Taking the window and queueing for the lock happen with no await between
        # them, and the lock is FIFO, so windows are sent in the order they closed.
        async with self._send_lock:
            await self.ctx.send({"count": len(items), "items": items})
            self._emitted += 1

    async def _timer(self, seconds: float) -> None:
        """Close each window ``seconds`` after its first item, unless its count did first."""
        while True:
            await self._opened.wait()
            generation = self._generation
            opened_at = self._opened_at
            if opened_at is None:  # closed by count before this wake-up
                continue
            await anyio.sleep_until(opened_at + seconds)
            if self._generation == generation:
                await self._close_window()

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        if cfg.variant != "windowing":
            await super().run(task_status=task_status)
            return
        async with anyio.create_task_group() as tg:
            if cfg.window_seconds is not None:
                tg.start_soon(self._timer, cfg.window_seconds)
            await super().run(task_status=task_status)
            # Every input closed: what is left is a partial window, and it is owed.
            await self._close_window()
            tg.cancel_scope.cancel()

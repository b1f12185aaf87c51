"""The lifecycle the batching senders share (``EventClient``, ``EventPublisher`` and
their async twins): closing flushes what is still batched, then releases the
connection the sender owns, even when that last flush fails; a closed sender refuses
new events (its batcher checks ``closed``)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

__all__ = ("AsyncSender", "Batcher", "Sender")

S_co = TypeVar("S_co", covariant=True)
S = TypeVar("S")


class Batcher(Protocol[S_co]):
    """What a sender batches into: knows whether it is closed, and counts."""

    closed: bool

    def statistics(self) -> S_co: ...


B = TypeVar("B", bound=Batcher[Any])


class Sender(Generic[B, S]):
    """Base of a synchronous sender; subclasses set ``_b`` and define ``flush``/``_release``."""

    _b: B

    def flush(self) -> Any:
        raise NotImplementedError

    def _release(self) -> None:
        """Close what the sender owns (not a connection it was handed)."""

    def close(self) -> None:
        """Flush, then release the connection (also when the flush fails)."""
        if self._b.closed:
            return
        try:
            self.flush()
        finally:
            self._b.closed = True
            self._release()

    def statistics(self) -> S:
        stats: S = self._b.statistics()
        return stats

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSender(Generic[B, S]):
    """``Sender`` for async code: ``aclose`` and ``async with``."""

    _b: B

    async def flush(self) -> Any:
        raise NotImplementedError

    async def _release(self) -> None:
        """Close what the sender owns (not a connection it was handed)."""

    async def aclose(self) -> None:
        """Flush, then release the connection (also when the flush fails)."""
        if self._b.closed:
            return
        try:
            await self.flush()
        finally:
            self._b.closed = True
            await self._release()

    def statistics(self) -> S:
        stats: S = self._b.statistics()
        return stats

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

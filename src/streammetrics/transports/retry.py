"""The one retry policy of every sender (the HTTP clients and the Redis publishers, sync
and async): they all resend a batch whose fate is unknown, and rely on event ids (and the
endpoint's dedup window) to make a batch that did arrive twice count once.

The policy is an iterator of delays, ``for delay in policy.delays(): ...``, so that the
one loop that uses it (``senders``) reads as what it does: try, and while the failure is
one another try may fix and there are delays left, wait and try again.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from typing import Annotated

import msgspec

__all__ = ("Failure", "RetryPolicy", "retry_after")


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """When and how long to wait before sending a failed batch again."""

    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    """Retries after the first attempt; then ``DeliveryError``."""
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.1
    """Wait before the first retry; doubled for each next one."""
    max_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Longest computed wait."""
    max_retry_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """A server's ``Retry-After`` is honoured up to this many seconds."""
    jitter: bool = True
    """Wait a random 50-100 % of the computed time, so that clients restarted together
    do not retry in lockstep."""

    def delays(self) -> Iterator[float]:
        """The wait before each retry, ``max_retries`` of them: ``backoff_s`` doubled per
        retry up to ``max_backoff_s`` (with jitter, a random 50-100 % of that)."""
        for attempt in range(self.max_retries):
            d = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
            yield random.uniform(d / 2, d) if self.jitter else d

    def wait(self, delay: float, failure: Failure) -> float:
        """How long to wait before the next try: what the peer asked for (``Retry-After``,
        up to ``max_retry_after_s``) when it did, else the policy's ``delay``."""
        if failure.retry_after is None:
            return delay
        return min(max(failure.retry_after, 0.0), self.max_retry_after_s)


class Failure(msgspec.Struct, frozen=True):
    """One attempt that did not deliver, as the sender's retry loop needs to know it."""

    why: str
    """What went wrong, for the ``DeliveryError`` and the logs (``ConnectError: ...``,
    ``HTTP 503``)."""
    status: int | None = None
    """The peer's HTTP status, when it answered."""
    retry_after: float | None = None
    """Seconds the peer asked to wait before the next try."""
    final: bool = False
    """Another try would fail alike (a 4xx, a Redis error reply): no retry."""
    exc: BaseException | None = None
    """The exception, kept as the ``DeliveryError``'s cause."""


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)

"""Retry with exponential backoff and jitter, shared by the HTTP client and the Redis
publisher: both resend a batch whose fate is unknown, and rely on event ids (and the
endpoint's dedup window) to make a batch that did arrive twice count once."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from typing import Annotated

import msgspec

__all__ = ("RetryPolicy", "retry_after")


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

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        d = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return random.uniform(d / 2, d) if self.jitter else d


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

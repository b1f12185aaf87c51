"""The one retry policy of every sender: an iterator of backoff delays with jitter, a wait that
honours Retry-After (seconds or an HTTP date) up to its bound."""

from __future__ import annotations

import pytest

from streammetrics.transports.retry import Failure, RetryPolicy, retry_after


def test_the_retry_policy_is_an_iterator_of_backoff_delays() -> None:
    plain = RetryPolicy(max_retries=6, backoff_s=0.1, max_backoff_s=1.0, jitter=False)
    full = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert list(plain.delays()) == pytest.approx(full)
    jittered = list(RetryPolicy(max_retries=6, backoff_s=0.1, max_backoff_s=1.0).delays())
    assert len(jittered) == 6
    assert all(d / 2 <= j <= d for j, d in zip(jittered, full, strict=True))
    assert list(RetryPolicy(max_retries=0).delays()) == []
    # what the peer asked for wins, up to max_retry_after_s
    assert plain.wait(0.1, Failure("HTTP 429", retry_after=5)) == 5
    assert plain.wait(0.1, Failure("HTTP 429", retry_after=600)) == 60
    assert plain.wait(0.1, Failure("HTTP 503")) == 0.1


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(" -2 ") == 0.0
    assert retry_after(None) is None
    assert retry_after("soon") is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"  # 1445412490 s after the epoch
    assert retry_after(date, now=lambda: 1445412480.0) == 10.0
    assert retry_after(date, now=lambda: 1445412500.0) == 0.0  # already past

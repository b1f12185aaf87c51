"""The configuration of the sources beyond the process: what is wrong is named."""

from __future__ import annotations

import pytest

from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.transports.config import RedisSourceConfig


def test_the_config_names_what_is_wrong() -> None:
    with pytest.raises(Exception, match=r"\{nodename\}"):
        MetricsEndpoint(name="m", port=0, source={"redis": {"consumer": "{nodename}"}})
    with pytest.raises(Exception, match="not a redis://"):
        MetricsEndpoint(name="m", port=0, source={"redis": {"url": "http://x"}})
    cfg = RedisSourceConfig(consumer="{host}-{name}-{port}-{pid}")
    assert cfg.consumer_name(host="h", name="n", port=9000, pid=7) == "h-n-9000-7"


def test_idle_consumers_cannot_be_removed_before_their_entries_can_be_claimed() -> None:
    with pytest.raises(Exception, match="consumer_idle_s 10 is below claim_idle_s 30"):
        MetricsEndpoint(name="m", port=0, source={"redis": {"consumer_idle_s": 10}})
    assert RedisSourceConfig(consumer_idle_s=None).consumer_idle_s is None
    assert RedisSourceConfig().consumer_idle_s == 3600.0

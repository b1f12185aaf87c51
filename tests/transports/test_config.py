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

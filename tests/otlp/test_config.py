"""The ``otlp`` section of a MetricsEndpoint: validated when the config is read, and a
clear error when the receiver's extra is not installed."""

from __future__ import annotations

import sys

import msgspec
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.metrics import MetricsEndpoint, MetricsEndpointConfig
from streammetrics.errors import BlueprintError, ConfigError
from streammetrics.intake.otlp_config import INSTALL_HINT, OtlpConfig

BLUEPRINT = """
system:
  name: traced
  components:
    - name: metrics
      type: MetricsEndpoint
      config: {port: 0, otlp: %s}
"""


def test_off_unless_configured_and_defaults_when_empty() -> None:
    assert MetricsEndpointConfig(port=0).otlp is None
    cfg = msgspec.convert({"port": 0, "otlp": {}}, MetricsEndpointConfig).otlp
    assert cfg == OtlpConfig()
    assert cfg is not None and cfg.path == "/v1/traces" and cfg.group_by == "service"
    assert cfg.item_kind_numbers == {2, 5}  # SERVER, CONSUMER


def test_a_blueprint_s_otlp_section_is_validated_where_it_stands() -> None:
    parse_blueprint(BLUEPRINT % "{group_by: service_and_span, item_kinds: [server]}")
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(BLUEPRINT % "{item_kinds: [server, sever]}")
    assert info.value.path == "system.components[0].config.otlp.item_kinds[1]"
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(BLUEPRINT % "{max_body_bytes: 10}")
    assert "otlp.max_body_bytes" in info.value.path
    with pytest.raises(ConfigError, match="has no setting 'sample'"):
        MetricsEndpoint(port=0, otlp={"sample": 0.5})


def test_without_the_extra_the_receiver_is_refused_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The extra's module made unimportable, as it is where the extra is not installed."""
    monkeypatch.setitem(
        sys.modules, "opentelemetry.proto.collector.trace.v1.trace_service_pb2", None
    )
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(port=0, otlp={})
    assert INSTALL_HINT in str(info.value) and info.value.path == "otlp"
    with pytest.raises(ConfigError, match=r"streammetrics\[otlp\]"):
        parse_blueprint(BLUEPRINT % "{}")
    MetricsEndpoint(port=0)  # off, the extra is not needed


def test_open_beyond_loopback_is_refused_as_open_ingest_is() -> None:
    with pytest.raises(ConfigError, match=r"POST /v1/traces takes spans from anyone"):
        MetricsEndpoint(port=0, host="0.0.0.0", otlp={}, ingest={"enabled": False})
    ep = MetricsEndpoint(port=0, host="0.0.0.0", otlp={}, ingest={"allow_unauthenticated": True})
    assert ep.config.otlp is not None

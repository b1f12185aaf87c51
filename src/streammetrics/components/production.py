"""ProductionMetricsEndpoint: a MetricsEndpoint with the production features on by default.

Beside the MetricsEndpoint it extends, so that a blueprint can name it as a type like any
other component, and so that the embedding functions can serve it without the component
package depending on them.
"""

from __future__ import annotations

from typing import Any

from ..http.settings import CorsSettings, RateLimitSettings
from .metrics import MetricsEndpoint, MetricsEndpointConfig

__all__ = ("ProductionMetricsEndpoint", "ProductionMetricsEndpointConfig")


class ProductionMetricsEndpointConfig(
    MetricsEndpointConfig, frozen=True, forbid_unknown_fields=True
):
    """A MetricsEndpoint's config with the production features on by default: CORS for
    browser dashboards (GET from any origin, never with credentials), a stricter per-client
    rate limit of 100 requests a second (the health routes ten times that; a plain
    MetricsEndpoint allows 1000); graceful shutdown (``shutdown_timeout_s``) is every
    endpoint's. Each can be set, or turned off with ``null``."""

    cors: CorsSettings | None = CorsSettings(allow_origins=["*"])
    """As MetricsEndpoint's, on by default: GET from every origin, no credentials.
    Name your dashboards' origins in production (``{allow_origins: [https://...]}``)."""
    rate_limit: RateLimitSettings | None = RateLimitSettings(requests=100)
    """As MetricsEndpoint's, stricter: 100 requests per second per client address."""


class ProductionMetricsEndpoint(MetricsEndpoint):
    """A MetricsEndpoint with CORS and a stricter rate limit on by default (graceful
    shutdown is every endpoint's).

    In code it also takes the switches of the original API: ``enable_cors=False`` and
    ``enable_rate_limit=False`` turn those features off (``True`` keeps the default or
    the ``cors=`` / ``rate_limit=`` given).
    """

    type_name = "ProductionMetricsEndpoint"
    Config = ProductionMetricsEndpointConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for switch, key in (("enable_cors", "cors"), ("enable_rate_limit", "rate_limit")):
            if switch in kwargs and not kwargs.pop(switch):
                kwargs[key] = None
        super().__init__(*args, **kwargs)

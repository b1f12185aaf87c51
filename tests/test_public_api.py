"""Every module of the package imports, and every name its ``__all__`` promises exists
(the check anyio runs over its own modules)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import streammetrics

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(streammetrics.__path__, prefix="streammetrics.")
)


def test_the_walk_finds_the_package() -> None:
    for name in ("streammetrics.windows", "streammetrics.model.events", "streammetrics.aggregator"):
        assert name in MODULES


@pytest.mark.parametrize("name", ["streammetrics", *MODULES])
def test_all_names_exist(name: str) -> None:
    mod: ModuleType = importlib.import_module(name)
    names = getattr(mod, "__all__", None)
    if names is None:
        return
    assert isinstance(names, tuple | list), f"{name}.__all__ is a {type(names).__name__}"
    assert all(isinstance(n, str) for n in names)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    dups = sorted({n for n in names if list(names).count(n) > 1})
    assert not dups, f"{name}.__all__ repeats {dups}"


def test_star_import_of_the_package() -> None:
    ns: dict[str, object] = {}
    exec("from streammetrics import *", ns)
    assert set(streammetrics.__all__) <= set(ns)
    assert ns["__version__"] == streammetrics.__version__


#: What a program imports from the package: what README uses, and nothing internal
#: (aggregation, windows, the bus, codecs, snapshot structs live in their modules).
PUBLIC = (
    "AlertRule",
    "AsyncEventClient",
    "AsyncEventPublisher",
    "AuthSettings",
    "BlueprintError",
    "ConfigError",
    "CorsSettings",
    "DedupConfig",
    "DeliveryError",
    "Event",
    "EventClient",
    "EventError",
    "EventPublisher",
    "EventSourceConfig",
    "HarnessUnavailableError",
    "HealthConfig",
    "IngestConfig",
    "LiveConfig",
    "MetricsEndpoint",
    "MetricsPlugin",
    "PortInUseError",
    "Probe",
    "ProductionMetricsEndpoint",
    "RateLimitSettings",
    "RedisSourceConfig",
    "RetryPolicy",
    "StreamMetricsError",
    "TransportError",
    "__version__",
    "run_until_interrupted",
    "serve",
    "serve_forever",
)


def test_the_public_api_is_exactly_this() -> None:
    assert streammetrics.__all__ == PUBLIC
    assert sorted(dir(streammetrics)) == sorted(PUBLIC)


@pytest.mark.parametrize("internal", ["Aggregator", "EventBus", "RollingWindow", "Snapshot", "run"])
def test_internals_are_not_served_from_the_package(internal: str) -> None:
    with pytest.raises(AttributeError, match=f"no attribute '{internal}'"):
        getattr(streammetrics, internal)


#: Packages a program that only counts or only sends must not pay for.
HEAVY = ("litestar", "uvicorn", "redis", "httpx", "prometheus_client", "yaml")


@pytest.mark.parametrize(
    ("uses", "not_loaded"),
    [
        ("", HEAVY),
        ("streammetrics.Probe, streammetrics.Event, streammetrics.HealthConfig", HEAVY),
        ("streammetrics.EventClient", ("litestar", "uvicorn", "redis", "prometheus_client")),
        ("streammetrics.EventPublisher", ("litestar", "uvicorn", "httpx", "prometheus_client")),
    ],
)
def test_a_name_loads_only_what_it_needs(uses: str, not_loaded: tuple[str, ...]) -> None:
    """In a fresh interpreter, as a program would import it."""
    code = (
        f"import sys, streammetrics\n{uses}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert not set(out.split()) & set(not_loaded), out


def test_a_public_name_is_the_object_its_module_defines() -> None:
    from streammetrics.components.metrics import MetricsEndpoint
    from streammetrics.embedding import serve_forever

    assert streammetrics.MetricsEndpoint is MetricsEndpoint
    assert streammetrics.serve_forever is serve_forever

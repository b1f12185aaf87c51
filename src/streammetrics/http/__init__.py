"""The HTTP face of a MetricsEndpoint: the Litestar app (``app``, ``routes``,
``responses``, ``dashboard``, ``ingest``), its guards (``settings``, ``hardening``,
``auth``, ``ratelimit``, ``headers``, ``guard_metrics``), the uvicorn runner (``server``)
and the bounds on its connections (``limits``).

Nothing is imported here: a caller that needs one piece (``headers`` for another app,
``settings`` for a config struct) does not load the whole stack. ``Service``, the type
a custom route handler annotates its ``service`` parameter with, is the one name served
from the package itself, imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ("Service",)


def __getattr__(name: str) -> Any:
    if name != "Service":
        raise AttributeError(f"module 'streammetrics.http' has no attribute {name!r}")
    from .routes import Service

    return Service


def __dir__() -> tuple[str, ...]:
    return __all__

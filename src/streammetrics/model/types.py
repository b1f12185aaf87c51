"""The small validated types that events, blueprints and configs share.

One definition each, so that a name a blueprint accepts is a name an event accepts, and a
port or a duration means the same in every config section.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

__all__ = (
    "MAX_NAME",
    "Count",
    "DeclaredName",
    "DurationError",
    "EnvName",
    "Name",
    "Port",
    "RoutePath",
    "Seconds",
    "describe_exception",
    "parse_duration",
)

#: Longest accepted name (component, stream, ids): longer ones would blow up label storage.
MAX_NAME: Final = 200
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
"""A component, stream or id name, as events report it."""
DeclaredName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
"""A name a blueprint declares (system, component, stream): also a word in logs, CLI
output and Redis consumer names, so letters, digits and ``_ . : -`` only."""
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
"""A TCP port; 0 asks the operating system for a free one."""
RoutePath = Annotated[str, msgspec.Meta(pattern=r"^(/[A-Za-z0-9_.~\-]+)+$", max_length=200)]
"""A route a config section adds (``/items``, ``/events``): ``/segment``s of URL-safe
characters only, so the path is served literally (no ``{parameter}``, query or trailing
slash for Litestar to read into it)."""
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
"""The name of an environment variable (where a config section reads its secrets from)."""
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=86_400.0)]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class DurationError(ValueError):
    """A value that is not a duration, or one outside the bounds its field allows."""


def parse_duration(
    value: str | float,
    *,
    field: str | None = None,
    allow_zero: bool = True,
    at_most: float | None = None,
) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``2m``, ``1h``.

    Config files write durations both ways (``per: 1s``, ``for: 2m``, ``window_s: 60``),
    so every section reads them through this one function; ``allow_zero`` and ``at_most``
    are the field's own bounds, and ``field`` names it in an error.
    """
    at = f"{field}: " if field else ""
    if isinstance(value, bool):
        raise DurationError(f"{at}not a duration: {value!r} (use e.g. 30s, 2m, 1h, 500ms)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(str(value))
        if m is None:
            raise DurationError(f"{at}not a duration: {value!r} (use e.g. 30s, 2m, 1h, 500ms)")
        seconds = float(m[1]) * _UNIT_S[m[2]]
    if not seconds >= 0 or (seconds == 0 and not allow_zero):  # NaN fails ">= 0" too
        least = "at least 0" if allow_zero else "more than 0"
        raise DurationError(f"{at}a duration must be {least}; got {value!r}")
    if at_most is not None and seconds > at_most:
        raise DurationError(f"{at}a duration must be at most {at_most:g} s; got {value!r}")
    return seconds


def describe_exception(exc: BaseException) -> str:
    """How an exception reads in a ``last_error`` or a log field: ``Type: message``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

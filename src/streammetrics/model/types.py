"""The small validated types that events, blueprints and configs share.

One definition each, so that a name a blueprint accepts is a name an event accepts, and a
port or a duration means the same in every config section.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Final

import msgspec

__all__ = (
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_NAME",
    "Count",
    "DeclaredName",
    "DurationError",
    "EnvName",
    "Name",
    "Port",
    "RoutePath",
    "Seconds",
    "Timestamp",
    "describe_exception",
    "name_problem",
    "parse_duration",
)

#: Longest accepted name (component, stream, ids): longer ones would blow up label storage.
MAX_NAME: Final = 200
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
"""A component, stream or id name, as events report it. Its length is checked when it is
decoded; that it is printable (``name_problem``) where it is first registered, because a
``pattern=`` here would triple the cost of decoding every event."""
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
#: Earliest and latest Unix time an event may carry: 2000-01-01 and 2200-01-01, 00:00 UTC.
#: Outside them a timestamp is a bug (milliseconds sent as seconds, a zeroed clock), and it
#: would be shown as a component's last activity.
EARLIEST_TIMESTAMP: Final = 946_684_800.0
LATEST_TIMESTAMP: Final = 7_258_118_400.0
Timestamp = Annotated[float, msgspec.Meta(ge=EARLIEST_TIMESTAMP, le=LATEST_TIMESTAMP)]
"""Unix seconds between ``EARLIEST_TIMESTAMP`` and ``LATEST_TIMESTAMP`` (so never NaN or
infinite)."""
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


#: How a message names a character of a category that has no character names.
_CATEGORIES: Final = {"Cc": "a control character", "Cs": "a surrogate", "Cn": "unassigned"}


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a component or stream, or None when it can.

    The one name rule, for every name that may become a label or a log word, whatever
    brought it (a blueprint, an event over HTTP or Redis): 1 to ``MAX_NAME`` characters,
    all printable (``str.isprintable``: no control characters such as NUL or ESC, no
    format characters such as a zero-width space or a bidirectional override, no line
    separators, no space but the ASCII one). The Prometheus text format escapes only
    backslash, quote and newline in a label, so anything else would reach ``/metrics``
    and a terminal raw. A blueprint's ``DeclaredName`` is a stricter subset of it.
    """
    if not name:
        return "a name must not be empty"
    if len(name) > MAX_NAME:
        return f"a name must be at most {MAX_NAME} characters; this one has {len(name)}"
    if name.isprintable():
        return None
    at, char = next((i, c) for i, c in enumerate(name) if not c.isprintable())
    category = unicodedata.category(char)
    label = _CATEGORIES.get(category) or unicodedata.name(char, category)
    return (
        f"a name must be printable characters only; character {at} is U+{ord(char):04X} ({label})"
    )


def describe_exception(exc: BaseException) -> str:
    """How an exception reads in a ``last_error`` or a log field: ``Type: message``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

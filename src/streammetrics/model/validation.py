"""Reading where msgspec says a value is wrong.

msgspec reports a bad value as ``Expected `int`, got `str` - at `$.count```. Every place
that turns such an error into one of ours (events, blueprints, component configs) splits
it here, so a path reads the same whichever input it came from.
"""

from __future__ import annotations

__all__ = ("located",)


def located(exc: BaseException, prefix: str) -> tuple[str, str]:
    """``(path, reason)`` of a msgspec error, its ``$`` replaced by ``prefix``:
    ``located(exc, "events[2]")`` gives ``("events[2].count", "Expected `int`, got `str`")``.
    A message that names no place is ``(prefix, message)``."""
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `")
    if not sep:
        return prefix, text
    return prefix + where.rstrip("`")[1:], reason

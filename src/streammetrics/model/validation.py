"""Reading where msgspec says a value is wrong.

msgspec reports a bad value as ``Expected `int`, got `str` - at `$.count```. Every place
that turns such an error into one of ours (events, blueprints, component configs) splits
it here, so a path reads the same whichever input it came from.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ("UNREADABLE", "located")

#: What a decoder raises for bytes that are not a valid value of its type: msgspec's
#: errors (``ValueError``s only in recent releases), ``UnicodeDecodeError`` (what older
#: releases raised for bad UTF-8, where newer ones raise ``DecodeError``), and
#: ``RecursionError``, msgspec's guard against nesting (``nesting.MAX_DEPTH`` is checked
#: first, so it fires only on a stack already near the interpreter's limit). Which of them
#: a release raises for which defect changes, so no decision may depend on the type.
UNREADABLE: Final = (msgspec.MsgspecError, ValueError, RecursionError)


def located(exc: BaseException, prefix: str) -> tuple[str, str]:
    """``(path, reason)`` of a msgspec error, its ``$`` replaced by ``prefix``:
    ``located(exc, "events[2]")`` gives ``("events[2].count", "Expected `int`, got `str`")``.
    A message that names no place is ``(prefix, message)``."""
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `")
    if not sep:
        return prefix, text
    return prefix + where.rstrip("`")[1:], reason

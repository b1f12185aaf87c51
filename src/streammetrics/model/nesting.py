"""How deeply input from outside may nest, and how deeply a JSON or MessagePack body does.

A decoder descends one level of the C stack for each array or map it reads or skips.
msgspec guards that descent only with the interpreter's recursion limit: a deeper body
raises ``RecursionError`` (a 500, a dead Redis consumer) or, in a process that raised
the limit past what its stack holds, crashes it. So every decoder of outside input holds
bodies to ``MAX_DEPTH`` before it decodes anything untyped or skips a value, and too deep
is one more ordinary way for a body to be malformed. (Typed decoding needs no such
check: msgspec stops at the first value that does not fit the type.)

Depth counts arrays and maps (YAML: sequences and mappings): ``1`` is 0 deep, ``[1]``
is 1, ``{"events": [{"component": "a"}]}`` is 3. The checks read the bytes without
decoding them; a body that is malformed in some other way may pass, and then fails in
the decoder before it gets deeper than it looked here.
"""

from __future__ import annotations

from typing import Final

__all__ = ("MAX_DEPTH", "json_too_deep", "msgpack_too_deep")

#: Deepest nesting of arrays and maps that any decoder of outside input reads: event
#: bodies (over HTTP and Redis), APIEndpoint items, YAML blueprints. An event body needs
#: 3 and a blueprint about 6; the limit leaves room for items and keeps the C stack safe.
MAX_DEPTH: Final = 64

_OPEN: Final = ord("[")
#: JSON: ``{`` and ``}`` read as ``[`` and ``]``; every byte but those and ``"`` dropped.
_JSON_MARKS: Final = bytes.maketrans(b"{}", b"[]")
_JSON_OTHER: Final = bytes(sorted(set(range(256)) - set(b'"[]{}')))


def json_too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``data`` nests arrays and objects deeper than ``limit``.

    Works on the bytes at C speed but for one loop over the brackets: escaped
    backslashes and quotes are removed (they never end a string), then everything but
    quotes and brackets, then what stands between quotes (brackets inside strings are
    text).
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # it cannot open more levels than it has brackets
    plain = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = plain.translate(_JSON_MARKS, _JSON_OTHER)
    depth = 0
    for c in b"".join(marks.split(b'"')[::2]):
        if c == _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


# MessagePack: for each first byte, what the value is and how its size is given.
_VALUE, _ARRAY, _MAP, _INVALID = range(4)


def _msgpack_table() -> tuple[tuple[int, int, int], ...]:
    """``(kind, fixed, width)`` per first byte: a ``width``-byte big-endian length (or
    count) follows the first byte; then a value skips ``fixed`` more bytes plus that
    length, and a container with no length field holds ``fixed`` items."""
    table = [(_INVALID, 0, 0)] * 256
    for b in range(0x00, 0x80):  # positive fixint
        table[b] = (_VALUE, 0, 0)
    for b in range(0xE0, 0x100):  # negative fixint
        table[b] = (_VALUE, 0, 0)
    for b in range(0x80, 0x90):
        table[b] = (_MAP, b & 0x0F, 0)
    for b in range(0x90, 0xA0):
        table[b] = (_ARRAY, b & 0x0F, 0)
    for b in range(0xA0, 0xC0):  # fixstr
        table[b] = (_VALUE, b & 0x1F, 0)
    for b in (0xC0, 0xC2, 0xC3):  # nil, false, true
        table[b] = (_VALUE, 0, 0)
    for b, width in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        table[b] = (_VALUE, 0, width)  # bin and str: length, then the bytes
    for b, width in ((0xC7, 1), (0xC8, 2), (0xC9, 4)):
        table[b] = (_VALUE, 1, width)  # ext: length, type, then the bytes
    fixed = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2}
    fixed |= {0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
    for b, size in fixed.items():  # floats, ints, fixext (type byte included)
        table[b] = (_VALUE, size, 0)
    for b, width in ((0xDC, 2), (0xDD, 4)):
        table[b] = (_ARRAY, 0, width)
    for b, width in ((0xDE, 2), (0xDF, 4)):
        table[b] = (_MAP, 0, width)
    return tuple(table)


_MSGPACK: Final = _msgpack_table()
#: Total size per first byte of the values that have no length field (most of a body:
#: fixints, fixstrs, floats, nil, bools), 0 for the others.
_MSGPACK_PLAIN: Final = tuple(
    1 + fixed if kind == _VALUE and not width else 0 for kind, fixed, width in _MSGPACK
)


def msgpack_too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the MessagePack ``data`` nests arrays and maps deeper than ``limit``.

    Walks the headers and skips every payload by its length, keeping only the count of
    items still to come at each open level (a list as long as the depth).
    """
    table, plain = _MSGPACK, _MSGPACK_PLAIN
    outer: list[int] = []  # items still to come at each enclosing level
    left = 1  # items still to come at the innermost level; the body is one item
    i, end = 0, len(data)
    while i < end:
        b = data[i]
        size = plain[b]
        if size:
            i += size
        else:
            kind, fixed, width = table[b]
            if kind == _INVALID:
                return False  # the decoder stops at this byte, no deeper than here
            size = int.from_bytes(data[i + 1 : i + 1 + width], "big") if width else 0
            i += 1 + width
            if kind == _VALUE:
                i += fixed + size
            else:
                if len(outer) >= limit:
                    return True  # a container at depth len(outer) + 1
                items = size if width else fixed
                if items:
                    outer.append(left - 1)
                    left = 2 * items if kind == _MAP else items
                    continue
        left -= 1
        while left == 0:
            if not outer:
                return False  # the body is complete
            left = outer.pop()
    return False

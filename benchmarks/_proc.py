"""Reading a child process's ready line with a deadline.

``readline()`` blocks until the child prints or exits; a child that hangs silently would
hang the whole benchmark run. The read happens in a thread that is given ``timeout``
seconds; past it the caller gets ``""`` and reports the child as not started.
"""

from __future__ import annotations

import threading
from typing import IO, AnyStr


def read_line(pipe: IO[AnyStr] | None, timeout: float) -> str:
    """The child's next line (stripped), or ``""`` if none came within ``timeout``."""
    if pipe is None:
        return ""
    box: list[str] = []

    def read() -> None:
        line = pipe.readline()
        box.append(line.decode() if isinstance(line, bytes) else line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""

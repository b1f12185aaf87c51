"""A sync sender in its own process, for a test to interrupt with a real Ctrl-C (SIGINT).

    python tests/support/interrupted.py http URL N BATCH
    python tests/support/interrupted.py redis URL STREAM N BATCH

Buffers N events (ids ``k0``..) into an ``EventClient`` or ``EventPublisher``, prints
``sending`` and sends them (N >= BATCH, so the send flushes; the test's server stalls).
On ``KeyboardInterrupt`` it prints ``interrupted buffered=<events still buffered>``, then
closes the sender, which flushes what is buffered, and prints ``closed <statistics as
JSON>``.
"""

from __future__ import annotations

import signal
import sys

import msgspec

from streammetrics import Event
from streammetrics.transports.http_client import EventClient
from streammetrics.transports.redis_publisher import EventPublisher


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the parent ignored
    kind, url, *rest = sys.argv[1:]
    sender: EventClient | EventPublisher
    if kind == "http":
        n, batch = int(rest[0]), int(rest[1])
        sender = EventClient(url, batch_size=batch, flush_interval_s=60, timeout_s=60)
    else:
        stream, n, batch = rest[0], int(rest[1]), int(rest[2])
        sender = EventPublisher(url, stream, batch_size=batch, flush_interval_s=60, maxlen=None)
    events = [Event("worker", "processed", id=f"k{i}") for i in range(n)]
    print("sending", flush=True)
    try:
        if isinstance(sender, EventClient):
            sender.send_many(events)
        else:
            sender.publish_many(events)
    except KeyboardInterrupt:
        print(f"interrupted buffered={sender.statistics().buffered}", flush=True)
    sender.close()
    print(f"closed {msgspec.json.encode(sender.statistics()).decode()}", flush=True)


if __name__ == "__main__":
    main()

"""A component in another process: publishes numbered events to a Redis stream.

    python tests/support/publisher.py URL STREAM --events N [--batch B] [--pace-s S]
                                      [--components K] [--repeat-last R] [--errors-every E]

Event ``i`` is ``svc{i % K}``, processed (or an error every E-th), id ``ev-{i}``, latency
``(i % 100 + 1) ms``: the tests know exactly what was sent. ``--repeat-last R`` then
publishes the last R events once more with the same ids, as a producer's retry would.
Prints ``published N`` when done.
"""

from __future__ import annotations

import argparse
import time

from streammetrics import Event
from streammetrics.transports.redis_publisher import EventPublisher


def event(i: int, components: int, errors_every: int) -> Event:
    kind = "error" if errors_every and i % errors_every == errors_every - 1 else "processed"
    return Event(f"svc{i % components}", kind, latency=(i % 100 + 1) / 1000, id=f"ev-{i}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("stream")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--pace-s", type=float, default=0.0)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--repeat-last", type=int, default=0)
    p.add_argument("--errors-every", type=int, default=0)
    a = p.parse_args()
    events = [event(i, a.components, a.errors_every) for i in range(a.events)]
    with EventPublisher(a.url, a.stream, batch_size=a.batch, maxlen=None) as pub:
        for k in range(0, a.events, a.batch):
            pub.publish_many(events[k : k + a.batch])
            pub.flush()
            if a.pace_s:
                time.sleep(a.pace_s)
        if a.repeat_last:
            pub.publish_many(events[-a.repeat_last :])
    print(f"published {a.events}", flush=True)


if __name__ == "__main__":
    main()

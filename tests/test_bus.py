"""EventBus: fan-out of events and probe deltas to every sink."""

from __future__ import annotations

from streammetrics.bus import BusStatistics, EventBus
from streammetrics.model.events import Event, Rejection
from tests.support.sinks import Recorder


def test_publish_fans_out_and_returns_first_sinks_rejections() -> None:
    bus = EventBus()
    a, b = Recorder(reject=True), Recorder()
    bus.subscribe(a)
    bus.subscribe(b)
    evs = [Event("x", "processed"), Event("y", "error")]
    assert bus.publish(evs) == [Rejection(0, "events[0]", "no")]
    assert a.events == evs
    assert b.events == evs
    bus.unsubscribe(a)
    bus.unsubscribe(a)  # twice is harmless
    assert bus.publish([Event("z", "heartbeat")]) == []
    assert len(a.events) == 2
    assert len(b.events) == 3


def test_publish_without_sinks() -> None:
    assert EventBus().publish([Event("x", "processed")]) == []


def test_probe_is_one_per_name_and_flush_pulls_all() -> None:
    bus = EventBus()
    r = Recorder()
    bus.subscribe(r)
    p = bus.probe("api")
    assert bus.probe("api") is p
    p.processed(3)
    bus.probe("db").error(detail="down")
    bus.probe("idle")
    bus.flush()
    assert sorted((d.component, d.processed, d.errors) for d in r.deltas) == [
        ("api", 3, 0),
        ("db", 0, 1),
    ]
    bus.flush()  # nothing new: no deltas published
    assert len(r.deltas) == 2
    assert bus.statistics() == BusStatistics(
        probes=3, sinks=1, flushes=2, events_published=0, deltas_published=2
    )

"""The dedup window and the intake in front of the aggregator."""

from __future__ import annotations

import pytest

from streammetrics import Event, EventError
from streammetrics.aggregator import Aggregator
from streammetrics.intake.config import DedupConfig
from streammetrics.intake.dedup import DedupWindow
from streammetrics.intake.intake import Intake
from streammetrics.model.events import encode_events
from tests.support.http_app import FakeClock


def _ev(i: int | None, component: str = "c") -> Event:
    return Event(component, "processed", id=None if i is None else f"e{i}")


def test_a_repeated_id_passes_once_also_within_one_batch() -> None:
    w = DedupWindow()
    fresh, dups = w.filter([_ev(1), _ev(2), _ev(1), _ev(None), _ev(None)])
    assert [e.id for e in fresh] == ["e1", "e2", None, None]
    assert dups == [2]
    fresh, dups = w.filter([_ev(2), _ev(3)])
    assert [e.id for e in fresh] == ["e3"]
    assert dups == [0]
    st = w.statistics()
    assert (st.ids, st.checked, st.duplicates) == (3, 5, 2)


def test_ids_are_forgotten_by_count_oldest_first() -> None:
    w = DedupWindow(DedupConfig(max_ids=3))
    w.filter([_ev(1), _ev(2)])
    w.filter([_ev(3), _ev(4)])  # e1 falls out
    assert w.statistics().ids == 3
    fresh, dups = w.filter([_ev(1), _ev(2), _ev(4)])
    assert [e.id for e in fresh] == ["e1"]  # forgotten: folds again, remembered anew
    assert dups == [1, 2]  # e2 and e4 are still known
    assert w.statistics().ids == 3
    fresh, dups = w.filter([_ev(2)])  # e1 coming back pushed e2 out
    assert [e.id for e in fresh] == ["e2"]


def test_ids_are_forgotten_by_age() -> None:
    clock = FakeClock()
    w = DedupWindow(DedupConfig(max_age_s=10), clock=clock.monotonic)
    w.filter([_ev(1)])
    clock.advance(6)
    w.filter([_ev(2)])
    clock.advance(5)  # e1 is 11 s old, e2 5 s
    fresh, dups = w.filter([_ev(1), _ev(2)])
    assert [e.id for e in fresh] == ["e1"]
    assert dups == [1]


def test_max_ids_zero_turns_dedup_off() -> None:
    w = DedupWindow(DedupConfig(max_ids=0))
    fresh, dups = w.filter([_ev(1), _ev(1)])
    assert len(fresh) == 2 and dups == []
    assert not w.enabled


def test_intake_counts_duplicates_malformed_and_cardinality_with_body_indices() -> None:
    agg = Aggregator(max_components=2)
    intake = Intake(agg, DedupWindow())
    body = (
        b'[{"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "a", "kind": "processed", "count": -1},'
        b' {"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "b", "kind": "processed"},'
        b' {"component": "c", "kind": "processed"}]'
    )
    r = intake.fold_body(body, "json")
    assert (r.accepted, r.rejected, r.duplicates, r.malformed) == (2, 2, 1, 1)
    assert [(x.index, x.path) for x in r.rejections] == [
        (1, "events[1].count"),
        (4, "events[4].component"),  # index in the body, past the bad one and the duplicate
    ]
    assert agg.statistics().rejected == {"malformed": 1, "duplicate": 1, "cardinality": 1}
    snap = agg.figures()
    assert snap.detailed_components["a"].items_processed == 1
    assert "c" not in snap.detailed_components


def test_intake_raises_for_an_unreadable_body_and_counts_it() -> None:
    agg = Aggregator()
    intake = Intake(agg)
    with pytest.raises(EventError) as info:
        intake.fold_body(b'{"events": 5}', "json")
    assert info.value.path.startswith("events")
    assert agg.statistics().rejected == {"malformed": 1}
    assert intake.statistics().unreadable == 1
    r = intake.fold_body(encode_events([_ev(1), _ev(1)], "msgpack"), "msgpack")
    assert (r.accepted, r.duplicates) == (2, 0)  # no dedup window: both fold


def test_intake_counts_a_body_refused_whole_and_bodies_lost_as_rejections() -> None:
    """What a transport could not even hand over (a stream entry with no events field,
    entries trimmed away) is counted where every other rejection is."""
    agg = Aggregator()
    intake = Intake(agg)
    err = intake.refuse_body("no msgpack or json field", value=["other"])
    assert isinstance(err, EventError)
    assert (err.path, err.value) == ("$", ["other"])
    intake.lost(2)
    intake.lost(0)
    st = intake.statistics()
    assert (st.bodies, st.unreadable, st.trimmed, st.rejected, st.accepted) == (3, 1, 2, 3, 0)
    assert agg.statistics().rejected == {"malformed": 1, "trimmed": 2}

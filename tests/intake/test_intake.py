"""The intake in front of the aggregator: decode, dedup, fold, and every rejection counted
with the index of its event in its body."""

from __future__ import annotations

import pytest

from streammetrics import Event, EventError
from streammetrics.aggregator import Aggregator
from streammetrics.intake.dedup import DedupWindow
from streammetrics.intake.intake import MAX_CHECKED_NAMES, Intake
from streammetrics.model.events import encode_events


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


def test_refused_lifecycle_events_keep_every_other_index_right() -> None:
    agg = Aggregator(max_components=2)
    intake = Intake(agg, DedupWindow())
    body = (
        b'[{"component": "ghost", "kind": "stopped", "id": "s"},'
        b' {"component": "a", "kind": "processed", "count": -1},'
        b' {"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "a", "kind": "started"},'
        b' {"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "b", "kind": "processed"},'
        b' {"component": "c", "kind": "processed"}]'
    )
    r = intake.fold_body(body, "json", lifecycle="refuse", setting="ingest.lifecycle")
    assert (r.accepted, r.rejected, r.duplicates, r.malformed) == (2, 4, 1, 1)
    assert [(x.index, x.path) for x in r.rejections] == [
        (0, "events[0].kind"),
        (1, "events[1].count"),
        (3, "events[3].kind"),
        (6, "events[6].component"),  # past the bad, the refused and the duplicate
    ]
    assert "'stopped' events" in r.rejections[0].reason
    assert "ingest.lifecycle: refuse" in r.rejections[0].reason
    assert agg.statistics().rejected == {
        "malformed": 1,
        "lifecycle": 2,
        "duplicate": 1,
        "cardinality": 1,
    }
    assert set(agg.figures().detailed_components) == {"a", "b"}
    st = intake.statistics()
    assert (st.lifecycle, st.rejected, st.accepted) == (2, 4, 2)
    # a refused event's id is not remembered: sent again, it is refused again, not a dup
    again = intake.fold_body(
        b'{"component": "ghost", "kind": "stopped", "id": "s"}', "json", lifecycle="refuse"
    )
    assert (again.rejected, again.duplicates, again.malformed) == (1, 0, 0)
    # accepted, the same event folds
    ok = intake.fold_body(b'{"component": "a", "kind": "stopped", "id": "s"}', "json")
    assert ok.accepted == 1 and agg.figures().detailed_components["a"].status == "stopped"


def test_intake_raises_for_an_unreadable_body_and_counts_it() -> None:
    agg = Aggregator()
    intake = Intake(agg)
    with pytest.raises(EventError) as info:
        intake.fold_body(b'{"events": 5}', "json")
    assert info.value.path.startswith("events")
    assert agg.statistics().rejected == {"malformed": 1}
    assert intake.statistics().unreadable == 1
    r = intake.fold_body(
        encode_events([Event("c", "processed", id="e1")] * 2, "msgpack"), "msgpack"
    )
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


# -- the name rule, at the intake ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_names_with_control_characters_are_rejected_per_event_and_the_rest_fold(fmt: str) -> None:
    agg = Aggregator()
    intake = Intake(agg)
    evs = [
        Event("api", "processed"),
        Event("a\x00pi", "processed"),
        Event("api", "processed", stream="in\x1b[2J"),
        Event("\x1b]0;owned\x07", "error"),
        Event("api", "processed", count=4, stream="orders"),
        Event("zero\u200bwidth", "processed"),
    ]
    r = intake.fold_body(encode_events(evs, fmt), fmt)  # type: ignore[arg-type]
    assert (r.accepted, r.rejected, r.malformed) == (2, 4, 4)
    assert [(x.index, x.path) for x in r.rejections] == [
        (1, "events[1].component"),
        (2, "events[2].stream"),
        (3, "events[3].component"),
        (5, "events[5].component"),
    ]
    assert "U+0000 (a control character)" in r.rejections[0].reason
    assert "U+001B (a control character)" in r.rejections[1].reason
    assert "U+200B (ZERO WIDTH SPACE)" in r.rejections[3].reason
    assert agg.statistics().rejected == {"malformed": 4}
    snap = agg.figures()
    assert set(snap.detailed_components) == {"api"}
    assert snap.detailed_components["api"].items_processed == 5
    assert set(snap.streaming.streams) == {"orders"}
    # a refused name stays refused: nothing remembers it as checked
    again = intake.fold_body(encode_events(evs[1:2], fmt), fmt)  # type: ignore[arg-type]
    assert (again.accepted, again.rejected) == (0, 1)


def test_rejected_names_keep_body_indices_past_other_rejections_and_duplicates() -> None:
    agg = Aggregator()
    intake = Intake(agg, DedupWindow())
    body = (
        b'[{"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "a", "kind": "processed", "count": -1},'
        b' {"component": "a\\u0000", "kind": "processed"},'
        b' {"component": "a", "kind": "processed", "id": "x"},'
        b' {"component": "b\\u001b", "kind": "processed", "id": "y"}]'
    )
    r = intake.fold_body(body, "json")
    assert (r.accepted, r.rejected, r.duplicates, r.malformed) == (1, 3, 1, 3)
    assert [(x.index, x.path) for x in r.rejections] == [
        (1, "events[1].count"),
        (2, "events[2].component"),
        (4, "events[4].component"),
    ]
    assert agg.statistics().rejected == {"malformed": 3, "duplicate": 1}
    assert intake.statistics().rejected == 3


def test_the_names_an_intake_remembers_are_bounded() -> None:
    """A producer sending ever new names cannot grow the intake without bound; names past
    the bound are checked again on every body (and the aggregator's own limit rejects
    their events as ``cardinality``)."""
    agg = Aggregator(max_components=MAX_CHECKED_NAMES + 1000)
    intake = Intake(agg)
    n = MAX_CHECKED_NAMES + 500
    evs = [Event(f"c{i}", "processed") for i in range(n)]
    assert intake.fold_body(encode_events(evs, "msgpack"), "msgpack").accepted == n
    assert len(intake._names) == MAX_CHECKED_NAMES
    bad = intake.fold_body(encode_events([Event("e\x00", "processed")]), "json")
    assert (bad.rejected, bad.malformed) == (1, 1)
    again = intake.fold_body(encode_events(evs[-3:], "msgpack"), "msgpack")
    assert again.accepted == 3

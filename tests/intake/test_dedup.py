"""The dedup window: an event id passes once while it is remembered, forgotten by count and
by age."""

from __future__ import annotations

from streammetrics import Event
from streammetrics.intake.config import DedupConfig
from streammetrics.intake.dedup import DedupWindow
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

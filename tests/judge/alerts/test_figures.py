"""The named figures an alert rule reads: the tables of names, their help and what the reader
gives for each scope agree."""

from __future__ import annotations

from streammetrics.judge.alerts.figures import (
    COMPONENT_FIGURES,
    FIGURE_HELP,
    STREAM_FIGURES,
    SYSTEM_FIGURES,
    FigureReader,
)
from streammetrics.model.events import Event
from tests.support.alerts import System


def test_figure_tables_agree() -> None:
    assert set(FIGURE_HELP["system"]) == SYSTEM_FIGURES
    assert set(FIGURE_HELP["component"]) == COMPONENT_FIGURES
    assert set(FIGURE_HELP["stream"]) == STREAM_FIGURES
    s = System()
    s.agg.register_stream("a->b:input", from_component="a", to_component="b", buffer=lambda: (1, 2))
    s.fold(Event("a", "processed"))
    figs = FigureReader().read(s.judge.judge(s.agg.figures()))
    assert set(figs["system"]["system"]) == SYSTEM_FIGURES
    assert set(figs["component"]["a"]) == COMPONENT_FIGURES
    assert set(figs["stream"]["a->b:input"]) == STREAM_FIGURES

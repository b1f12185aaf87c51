"""An alert engine and the health judgement that consults it, on a hand-driven clock; the
rule the lifecycle tests put through it."""

from __future__ import annotations

from collections.abc import Sequence

from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthConfig, HealthJudge
from streammetrics.model.events import Event
from streammetrics.snapshot import ProcessStats, Snapshot
from tests.support.http_app import FakeClock


class System:
    """An aggregator, an alert engine and the health judgement that consults it, on one
    hand-driven clock."""

    def __init__(
        self,
        rules: Sequence[AlertRule] = (),
        *,
        builtin: bool = False,
        health: HealthConfig | None = None,
        retention: float = 300.0,
    ) -> None:
        self.clock = FakeClock()
        self.agg = Aggregator(clock=self.clock.monotonic, wall=self.clock.wall)
        self.engine = AlertEngine(
            rules, builtin=builtin, health=health, resolved_retention_s=retention
        )
        self.judge = HealthJudge(health, alerts=self.engine)
        self.process: ProcessStats | None = None

    def fold(self, *events: Event) -> None:
        assert self.agg.fold_events(list(events)) == []

    def at(self, seconds: float) -> Snapshot:
        """Advance the clock by ``seconds``, then build and evaluate one snapshot."""
        self.clock.advance(seconds)
        return self.judge.judge(self.agg.figures(process=self.process))

    @property
    def wall(self) -> float:
        return self.clock.wall()


HIGH = AlertRule(
    "HighErr",
    "error_rate > 0.1",
    for_="2m",
    level="critical",
    message="{component} fails {value:.0%}",
)


def half_failing(s: System, component: str = "db") -> None:
    s.fold(Event(component, "processed"), Event(component, "error"))

"""The alert lifecycle: rules evaluated against successive snapshots.

Like a Prometheus alerting rule, an instance goes pending (condition true, ``for`` not
yet elapsed) → firing → resolved, and a resolved alert is kept for
``resolved_retention_s`` with its ``resolved_at`` so a person who looks late still sees
what happened. A condition that turns false while pending is forgotten, as Prometheus
forgets it. A rule is evaluated once per instance of its scope: the system, each
component, or each stream (binding), as a PromQL rule is per series; an instance that
disappears resolves.

Durations (``for``, retention, breaker flaps) are measured on the snapshot's monotonic
clock (``uptime_seconds``), so a wall-clock step cannot fire or hold an alert; the
times an alert shows (``since``, ``timestamp``, ``resolved_at``) are unix seconds.

Evaluation is built for thousands of instances per tick: each rule is compiled once,
each instance's figures are read only for the figures some rule names and only when what
they are made of moved (``FigureReader``), a rule tests again only the instances whose
figures it reads moved (``FigureReader.changed_for``; all of them in one pass when most
did), a ``figure > number`` rule is tested inline in a comprehension, and an instance
whose condition is false and that has no alert state costs nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Literal

from ...snapshot import NO_ALERTS, Alert, AlertReport, Recommendation, Snapshot
from ...steps import NEVER, Pace, Steps, finish
from ..health import Changes, HealthConfig
from .expressions import NamedFigures, simple_comparison
from .figures import PROCESS_FIGURES, FigureReader, with_process
from .rules import AlertRule, advice, builtin_rules

__all__ = ("AlertEngine",)

AlertState = Literal["pending", "firing", "resolved"]


class _State:
    """One instance's place in the lifecycle: ``*_m`` monotonic, the rest unix seconds."""

    __slots__ = (
        "alert",
        "fired_at",
        "resolved_at",
        "resolved_m",
        "since",
        "since_m",
        "state",
        "value",
    )

    def __init__(self, since: float, since_m: float, value: float | None) -> None:
        self.state: AlertState = "pending"
        self.since = since
        self.since_m = since_m
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.resolved_m = 0.0
        self.value = value
        #: What it reports, built again when its state or value moves (None: to build).
        self.alert: Alert | None = None


class _Rule:
    """A rule as the engine runs it: compiled once, with its instances' states."""

    __slots__ = ("active", "fn", "hold", "incremental", "rule", "scope", "simple", "states", "used")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.scope = rule.resolved_scope()
        self.fn, self.used = rule.compile()
        self.simple = simple_comparison(rule.expr)
        self.hold = rule.for_seconds
        self.states: dict[str, _State] = {}
        #: The instances whose condition held at the last evaluation, with their figures.
        self.active: dict[str, NamedFigures] | None = None
        #: Whether only the instances whose figures changed need testing again: not for a
        #: rule that reads the process's figures, which every instance shares.
        self.incremental = not set(self.used) & PROCESS_FIGURES


#: Instances tested between two looks at the pace's clock, in a rule's pass over all.
_SLICE = 1024


def _slices(
    table: Mapping[str, NamedFigures], pace: Pace
) -> Iterator[Iterable[tuple[str, NamedFigures]]]:
    """``table``'s items, in slices of ``_SLICE`` when ``pace`` may yield between them
    (at once otherwise). Slices of one iterator, not of a list of its items: 10,000
    pairs made per rule per tick were most of what set the garbage collector going in a
    tick (a table is a read's own, never changed once read, so iterating it across the
    yields is safe)."""
    if not pace.active or len(table) <= _SLICE:
        yield table.items()
        return
    items = iter(table.items())
    for _ in range(0, len(table), _SLICE):
        yield islice(items, _SLICE)


def _in_order(names: list[str], table: Mapping[str, NamedFigures], pace: Pace) -> Steps[None]:
    """Put ``names`` (some of ``table``'s keys) in ``table``'s order, in place."""
    among = set(names)
    names.clear()
    for piece in _slices(table, pace):
        names += [inst for inst, _f in piece if inst in among]
        if pace.spent():
            yield


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


class AlertEngine:
    """Evaluates rules against successive snapshots; keeps each instance's lifecycle."""

    def __init__(
        self,
        rules: Sequence[AlertRule] = (),
        *,
        health: HealthConfig | None = None,
        builtin: bool = True,
        resolved_retention_s: float = 300.0,
    ) -> None:
        h = health or HealthConfig()
        self._rules = [_Rule(r) for r in (*(builtin_rules(h) if builtin else ()), *rules)]
        self._advice = [(a, _Rule(a.rule)) for a in advice(h)]
        self._retention = resolved_retention_s
        # The reader reads only the component figures a rule or a recommendation names:
        # a changed instance's figures are then a few values, not twenty.
        read = {u for r in self._rules if r.scope == "component" for u in r.used}
        for a, r in self._advice:
            if r.scope == "component":
                read |= {*r.used, a.figure}
        self._reader = FigureReader(h, figures=read - PROCESS_FIGURES)
        self._last = NO_ALERTS

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, snap: Snapshot) -> AlertReport:
        """Steps every lifecycle on ``snap`` and reports the alerts and recommendations.
        Call once per snapshot of the default view, with its health scored (the rules
        read the scores); what the alerts do to the status is the health judgement's."""
        return finish(self.evaluate_steps(snap, chunk=0))

    def evaluate_steps(
        self,
        snap: Snapshot,
        *,
        chunk: int = 256,
        pace: Pace | None = None,
        changes: Changes | None = None,
    ) -> Steps[AlertReport]:
        """``evaluate()``, yielding every ``chunk`` components read and after each rule
        (never when 0), as the judgement that calls it does; ``pace``: the judgement's,
        which then decides instead (a rule over many instances yields inside too).
        ``changes``: the judgement's word on which components' statuses are new against
        the snapshot it judged before, so that only those are read again."""
        if pace is None:
            pace = Pace(chunk) if chunk else NEVER
        now_m = snap.uptime_seconds
        wall = snap.timestamp
        reader = self._reader
        figs = yield from reader.lean_steps(snap, pace, changes)
        merged: dict[str, NamedFigures] | None = None  # with the process's, if a rule needs
        firing: list[Alert] = []
        pending: list[Alert] = []
        resolved: list[Alert] = []
        by_state = {"firing": firing, "pending": pending, "resolved": resolved}
        for r in self._rules:
            table = figs[r.scope]
            if r.scope == "component" and not r.incremental:
                merged = table = merged or with_process(table, snap)
            yield from self._step(
                r,
                table,
                now_m,
                wall,
                pace,
                reader.changed_for(r.used) if r.scope == "component" else None,
            )
            if pace.active:
                yield
            rule = r.rule
            for due, part in pace.parts(list(r.states.items())):
                if due:
                    yield
                for inst, st in part:
                    a = st.alert
                    if a is None:  # a new state or value: the last one's alert otherwise
                        a = st.alert = Alert(
                            level=rule.level,
                            message=self._text(
                                rule.message or f"{rule.name}: {rule.expr}", rule, inst, st.value
                            ),
                            component=None if r.scope == "system" else inst,
                            timestamp=st.fired_at if st.fired_at is not None else st.since,
                            name=rule.name,
                            state=st.state,
                            since=st.since,
                            value=st.value,
                            resolved_at=st.resolved_at,
                        )
                    by_state[st.state].append(a)
        recs: list[Recommendation] = []
        for adv, r in self._advice:
            table = figs[r.scope]
            if r.scope == "component" and not r.incremental:
                merged = table = merged or with_process(table, snap)
            yield from self._step(
                r,
                table,
                now_m,
                wall,
                pace,
                reader.changed_for(r.used) if r.scope == "component" else None,
            )
            for inst, st in list(r.states.items()):
                if st.state == "resolved":
                    del r.states[inst]  # advice is for now; it keeps no history
                elif st.state == "firing":
                    f = table.get(inst, {})
                    recs.append(
                        Recommendation(
                            type=adv.type,
                            message=self._text(adv.text, adv.rule, inst, st.value),
                            component=None if r.scope == "system" else inst,
                            figure=adv.figure,
                            value=_num(f.get(adv.figure)),
                        )
                    )
        self._last = AlertReport(firing, pending, resolved, recs)
        return self._last

    def rules(self) -> list[AlertRule]:
        """The rules evaluated, built-in ones first: what an alert's ``name`` names."""
        return [r.rule for r in self._rules]

    def current(self) -> AlertReport:
        """The last evaluation's report, stepping no lifecycle (for the views other than
        the one that drives the rules)."""
        return self._last

    def _step(
        self,
        r: _Rule,
        table: Mapping[str, NamedFigures],
        now_m: float,
        wall: float,
        pace: Pace,
        changed: set[str] | None = None,
    ) -> Steps[None]:
        """Move every instance of ``r`` one evaluation on, yielding where ``pace`` says
        (between slices of ``_SLICE`` instances, where a test is inline). ``changed``: the
        only instances whose figures differ from the last evaluation's (None: any may), so
        the others' conditions hold as they did (what keeps a tick of 10,000 quiet
        components cheap)."""
        fn, used, hold, states = r.fn, r.used, r.hold, r.states
        only = r.rule.component
        if (
            only is None
            and changed is not None
            and r.active is not None
            and r.incremental
            and 4 * len(changed) < len(table)  # most changed: one pass over all is cheaper
        ):
            active = r.active
            simple = r.simple
            started: list[str] = []  # true now and not before
            for due, part in pace.parts(list(changed)):
                if due:
                    yield
                for inst in part:
                    f = table.get(inst)
                    if f is None:
                        active.pop(inst, None)
                        continue
                    if simple is not None:
                        v = f.get(simple[0])
                        holds = v is not None and simple[1](v, simple[2])
                    else:
                        holds = bool(fn(f))
                    if not holds:
                        active.pop(inst, None)
                    elif inst in active:
                        active[inst] = f
                    else:
                        started.append(inst)
            if len(started) > 1:
                # In the table's order, as a pass over all would find them: the order their
                # alerts start in is the order they are listed in (and critical ones are
                # reasons of the status, whose order is part of the snapshot).
                yield from _in_order(started, table, pace)
            for inst in started:
                active[inst] = table[inst]
        elif only is None and r.simple is not None:
            # ``figure > 0.05``, tested inline: no call per instance but the comparison.
            name, cmp, const = r.simple
            active = {}
            for piece in _slices(table, pace):
                active.update(
                    {
                        inst: f
                        for inst, f in piece
                        if (v := f.get(name)) is not None and cmp(v, const)
                    }
                )
                if pace.spent():
                    yield
        elif only is None:
            # One closure call per instance; everything else is per active instance.
            active = {}
            for piece in _slices(table, pace):
                active.update({inst: f for inst, f in piece if fn(f)})
                if pace.spent():
                    yield
        else:
            f1 = table.get(only)
            active = {only: f1} if f1 is not None and fn(f1) else {}
        r.active = active
        for due, hits in pace.parts(list(active.items())):
            if due:
                yield
            for inst, f in hits:
                value = next((float(v) for u in used if (v := f.get(u)) is not None), None)
                st = states.get(inst)
                if st is None or st.state == "resolved":
                    st = states[inst] = _State(wall, now_m, value)
                if value != st.value:
                    st.value, st.alert = value, None
                if st.state == "pending" and now_m - st.since_m >= hold:
                    st.state = "firing"
                    st.fired_at, st.alert = wall, None
        if len(states) == len(active):
            return  # every state is an active instance: nothing to resolve or expire
        for due, held in pace.parts(list(states.items())):
            if due:
                yield
            for inst, st in held:
                if inst in active:
                    continue
                if st.state == "pending":  # false again (or gone) before it fired: forgotten
                    del states[inst]
                    continue
                if st.state == "firing":  # false again, or the instance went away
                    st.state = "resolved"
                    st.resolved_at, st.resolved_m, st.alert = wall, now_m, None
                if now_m - st.resolved_m > self._retention:
                    del states[inst]

    @staticmethod
    def _text(template: str, rule: AlertRule, inst: str, value: float | None) -> str:
        v = value if value is not None else float("nan")
        try:
            return template.format(component=inst, name=rule.name, value=v)
        except (KeyError, ValueError, IndexError, AttributeError):
            return template

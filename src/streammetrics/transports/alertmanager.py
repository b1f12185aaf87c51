"""Alerts delivered to Alertmanager (``AlertmanagerNotifier``), the way Prometheus
delivers its own.

The endpoint hands the notifier the alert engine's report after every tick
(``observe``); that call only compares the report with what the notifier tracks and
wakes the senders, so a tick never waits on the network. One sender task per
Alertmanager posts, to ``/api/v2/alerts``, every alert it is due:

- an alert that started firing, or that resolved, at once (the next turn of its sender);
- a firing alert again every ``resend_s``, with ``endsAt`` four resends (or ticks, if
  longer) ahead: Alertmanager then never times it out while this endpoint runs, and does
  if the endpoint dies;
- a resolved alert with its ``endsAt``, again every ``resend_s`` while ``/alerts`` still
  lists it, and until each Alertmanager has had it at least once.

What is tracked is the state to deliver, not a queue of posts: an Alertmanager that was
down gets the current state when it is back, never a replay of stale posts. The state is
bounded by the engine's alert instances, plus at most ``MAX_UNDELIVERED_RESOLVED``
resolved alerts still owed to an unreachable Alertmanager (beyond that the oldest are
dropped and counted).

A failed POST (connection error, timeout, 5xx, 429) is retried after a backoff (the
shared ``RetryPolicy``: doubling, with jitter, up to ``max_backoff_s``; a ``Retry-After``
is honoured). A 4xx other than 408 and 429 means Alertmanager refused the alerts: they
are counted ``rejected`` and not posted again until they change or their resend is due.
Every alert posted is counted by its result
(``streammetrics_alertmanager_notifications_total{alertmanager, result}``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain, repeat
from typing import Final, Literal
from urllib.parse import urlsplit

import anyio
import httpx
import msgspec
from anyio.abc import TaskStatus

from ..judge.alerts.rules import AlertRule
from ..model.types import describe_exception
from ..snapshot import Alert, AlertReport
from .alertmanager_config import AlertmanagerConfig
from .config import redact_url
from .retry import Failure, RetryPolicy, retry_after

__all__ = (
    "MAX_UNDELIVERED_RESOLVED",
    "AlertmanagerNotifier",
    "AlertmanagerStatistics",
    "AlertmanagerTargetStatistics",
    "PostableAlert",
    "rfc3339",
)

_log = logging.getLogger("streammetrics.alertmanager")

#: Resolved alerts kept for an Alertmanager that has not had them yet; past this the
#: oldest are dropped (counted ``dropped``), so an Alertmanager away for days cannot make
#: the endpoint hold every alert that ever resolved.
MAX_UNDELIVERED_RESOLVED: Final = 10_000
#: Alerts per POST: a large alert storm goes out in several posts, each of bounded size.
BATCH_SIZE: Final = 256
#: Statuses worth another try: Alertmanager is busy, restarting or behind a proxy failing.
_RETRY_STATUSES: Final = frozenset((408, 425, 429, 500, 502, 503, 504))
#: Bytes of an error answer kept for the log; the rest of it is not read.
_MAX_ERROR_BODY: Final = 1024

Result = Literal["sent", "failed", "rejected", "dropped"]
RESULTS: Final[tuple[Result, ...]] = ("sent", "failed", "rejected", "dropped")

_Fingerprint = tuple[str, str | None]
"""An alert instance: its rule's name and its component (None for a system alert)."""


def rfc3339(unix: float) -> str:
    """``2026-12-01T10:31:35.123Z``: the time format of Alertmanager's API."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class PostableAlert(msgspec.Struct, frozen=True, rename="camel"):
    """One alert as ``POST /api/v2/alerts`` takes it."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str = msgspec.field(name="generatorURL")


_encode = msgspec.json.Encoder().encode


class AlertmanagerTargetStatistics(msgspec.Struct, frozen=True):
    """One Alertmanager as its sender sees it."""

    url: str
    """Its base URL, without a password."""
    sent: int
    """Alerts it accepted (each resend counts)."""
    failed: int
    """Alerts of posts that did not get through (retried)."""
    rejected: int
    """Alerts it refused with a 4xx (not retried until they change)."""
    dropped: int
    """Resolved alerts given up on before it had them (``MAX_UNDELIVERED_RESOLVED``)."""
    due: int
    """Alerts it is owed now (new, changed, or due for their resend)."""
    consecutive_failures: int
    """Failed posts since the last that got through; 0 while it is reachable."""
    last_error: str | None
    """Why the last failed post failed."""
    last_success: float | None
    """Unix time of the last post it accepted."""


class AlertmanagerStatistics(msgspec.Struct, frozen=True):
    tracked: int
    """Alerts kept for delivery: firing ones, and resolved ones not yet delivered
    everywhere or still listed in ``/alerts``."""
    targets: list[AlertmanagerTargetStatistics]


class _Tracked:
    """One alert instance being delivered: the engine's latest view of it, and a version
    that moves when what Alertmanager must learn changes (fired, resolved, fired again)."""

    __slots__ = ("alert", "ends_at", "gone", "version")

    def __init__(self, alert: Alert, version: int) -> None:
        self.alert = alert
        self.version = version
        self.ends_at: float | None = alert.resolved_at if alert.state == "resolved" else None
        self.gone = False
        """No longer in the engine's report: delivered once more where owed, then dropped."""


class _Target:
    """One Alertmanager: where to post, what it has had, and its sender's counters."""

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        self.post_url = AlertmanagerConfig.alerts_url(url)
        #: fingerprint -> (version it has, monotonic time it got it)
        self.has: dict[_Fingerprint, tuple[int, float]] = {}
        self.wake = anyio.Event()
        self.counts: dict[Result, int] = dict.fromkeys(RESULTS, 0)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None


class AlertmanagerNotifier:
    """Delivers an endpoint's alerts to Alertmanagers; ``observe`` after every tick,
    ``run`` in the endpoint's task group.

    ``system`` and ``endpoint`` are labels of every alert (the blueprint's system name
    and the endpoint's component name), and ``instance``, the ``host:port`` of the
    generator URL ``run`` is given (so that the processes of a fleet running one
    blueprint each have their own alerts, as their scraped series do); ``rules`` are
    the rules the engine evaluates, for the annotations (the expression, the figure an
    alert's value is of); ``transport`` is httpx's (its default when None);
    ``max_undelivered`` bounds the resolved alerts kept for an Alertmanager that has not
    had them.
    """

    def __init__(
        self,
        config: AlertmanagerConfig,
        *,
        system: str,
        endpoint: str,
        rules: Sequence[AlertRule] = (),
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        max_undelivered: int = MAX_UNDELIVERED_RESOLVED,
    ) -> None:
        self.config = config
        self.system = system
        self.endpoint = endpoint
        self._rules = {r.name: r for r in rules}
        self._figure = {r.name: r.compile()[1][0] for r in rules if r.compile()[1]}
        self._valid_for = 4 * max(config.resend_s, tick_s)
        self._clock = clock
        self._wall = wall
        self._transport = transport
        self._max_undelivered = max_undelivered
        self._targets = [_Target(u) for u in config.urls]
        self._alerts: dict[_Fingerprint, _Tracked] = {}
        self._generator_url = ""
        self._instance = ""
        self._observed: AlertReport | None = None
        self._policy = RetryPolicy(
            max_retries=64, backoff_s=config.backoff_s, max_backoff_s=config.max_backoff_s
        )

    # -- the tick's side: no I/O, no await ------------------------------------------------

    def observe(self, report: AlertReport) -> None:
        """Take the alert engine's latest report; wakes the senders when an alert started
        firing or resolved. Costs one pass over the report's firing and resolved alerts
        (about 0.3 ms for 1,000 firing), none when it is the report already taken (no
        evaluation since)."""
        if report is self._observed:
            return
        self._observed = report
        alerts = self._alerts
        seen: set[_Fingerprint] = set()
        changed = False
        for a in report.alerts:
            fp = (a.name, a.component)
            seen.add(fp)
            t = alerts.get(fp)
            if t is None or t.ends_at is not None or t.alert.timestamp != a.timestamp:
                alerts[fp] = _Tracked(a, 1 if t is None else t.version + 1)
                changed = True
            else:
                t.alert = a  # the value moves; Alertmanager sees it with the next resend
                t.gone = False
        for a in report.resolved_alerts:
            fp = (a.name, a.component)
            seen.add(fp)
            t = alerts.get(fp)
            if t is None or t.ends_at is None or t.alert.timestamp != a.timestamp:
                # Resolved now, or fired and resolved between two ticks: either way
                # Alertmanager learns it fired and when it ended.
                alerts[fp] = _Tracked(a, 1 if t is None else t.version + 1)
                changed = True
            else:
                t.gone = False
        if len(seen) != len(alerts):
            now = self._wall()
            for fp, t in list(alerts.items()):
                if fp in seen:
                    continue
                if t.ends_at is None:  # firing, then gone from the report: it ended
                    t.ends_at = now
                    t.version += 1
                    changed = True
                t.gone = True
                if self._delivered(fp, t):
                    self._forget(fp)
            self._bound()
        if changed:
            for target in self._targets:
                target.wake.set()

    def _delivered(self, fp: _Fingerprint, t: _Tracked) -> bool:
        return all(target.has.get(fp, (0, 0.0))[0] == t.version for target in self._targets)

    def _forget(self, fp: _Fingerprint) -> None:
        del self._alerts[fp]
        for target in self._targets:
            target.has.pop(fp, None)

    def _bound(self) -> None:
        """Keep at most ``max_undelivered`` resolved alerts nobody lists any more; the
        oldest beyond that are dropped, counted for each Alertmanager that had not had
        them."""
        gone = [(t.ends_at or 0.0, fp) for fp, t in self._alerts.items() if t.gone]
        if len(gone) <= self._max_undelivered:
            return
        gone.sort(key=lambda e: e[0])
        for _ends, fp in gone[: len(gone) - self._max_undelivered]:
            version = self._alerts[fp].version
            for target in self._targets:
                if target.has.get(fp, (0, 0.0))[0] != version:
                    target.counts["dropped"] += 1
            self._forget(fp)

    # -- the senders ----------------------------------------------------------------------

    async def run(
        self, generator_url: str, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver until cancelled, one sender per Alertmanager. ``generator_url`` is what
        each alert links to (this endpoint's ``/alerts``)."""
        self._generator_url = generator_url
        # Which process of a fleet: instances of one blueprint share every other label.
        self._instance = urlsplit(generator_url).netloc.rpartition("@")[2]
        timeout = httpx.Timeout(self.config.timeout_s)
        client = httpx.AsyncClient(timeout=timeout, transport=self._transport)
        try:
            async with anyio.create_task_group() as tg:
                for target in self._targets:
                    tg.start_soon(self._send_loop, client, target)
                task_status.started()
        finally:
            # Cancelled with the endpoint: close the connections all the same, shielded
            # (and bounded), or their sockets would be left to the garbage collector.
            with anyio.move_on_after(1, shield=True):
                await client.aclose()

    async def _send_loop(self, client: httpx.AsyncClient, target: _Target) -> None:
        delays: Iterator[float] | None = None
        while True:
            due, next_due = self._due(target)
            if not due:
                with anyio.move_on_after(max(next_due - self._clock(), 0.0)):
                    await target.wake.wait()
                target.wake = anyio.Event()
                continue
            failure = await self._deliver(client, target, due)
            if failure is None:
                delays = None
                continue
            if delays is None:
                delays = chain(self._policy.delays(), repeat(self.config.max_backoff_s))
            await anyio.sleep(self._policy.wait(next(delays), failure))

    def _due(self, target: _Target) -> tuple[list[_Fingerprint], float]:
        """What ``target`` is owed now, and when the next resend falls due."""
        now = self._clock()
        resend = self.config.resend_s
        due: list[_Fingerprint] = []
        next_due = now + resend
        for fp, t in self._alerts.items():
            has = target.has.get(fp)
            if has is None or has[0] != t.version:
                due.append(fp)
            elif not t.gone:
                at = has[1] + resend
                if at <= now:
                    due.append(fp)
                else:
                    next_due = min(next_due, at)
        return due, next_due

    async def _deliver(
        self, client: httpx.AsyncClient, target: _Target, due: list[_Fingerprint]
    ) -> Failure | None:
        """Post ``due`` in batches; the failure that stopped it, if one did."""
        for i in range(0, len(due), BATCH_SIZE):
            batch = [fp for fp in due[i : i + BATCH_SIZE] if fp in self._alerts]
            versions = [self._alerts[fp].version for fp in batch]
            body = _encode([self._postable(self._alerts[fp]) for fp in batch])
            failure = await self._post(client, target, body)
            now = self._clock()
            if failure is None or failure.final:
                result: Result = "sent" if failure is None else "rejected"
                target.counts[result] += len(batch)
                for fp, version in zip(batch, versions, strict=True):
                    target.has[fp] = (version, now)
                    t = self._alerts.get(fp)
                    if t is not None and t.gone and self._delivered(fp, t):
                        self._forget(fp)
            if failure is None:
                if target.consecutive_failures:
                    _log.info("alertmanager %s: delivering again", target.url)
                target.consecutive_failures = 0
                target.last_success = self._wall()
                continue
            target.last_error = failure.why
            if failure.final:
                _log.warning(
                    "alertmanager %s refused %d alerts: %s", target.url, len(batch), failure.why
                )
                continue
            target.counts["failed"] += len(batch)
            if not target.consecutive_failures:
                _log.warning("alertmanager %s: %s; retrying with backoff", target.url, failure.why)
            target.consecutive_failures += 1
            return failure
        return None

    async def _post(
        self, client: httpx.AsyncClient, target: _Target, body: bytes
    ) -> Failure | None:
        """One POST, bounded in time (connecting included) and in what is read back."""
        headers = {"Content-Type": "application/json"}
        try:
            with anyio.fail_after(self.config.timeout_s):
                async with client.stream(
                    "POST", target.post_url, content=body, headers=headers
                ) as resp:
                    if resp.status_code // 100 == 2:
                        return None
                    text = await _head(resp)
        except TimeoutError:
            return Failure(f"no answer within {self.config.timeout_s:g}s")
        except (httpx.HTTPError, OSError) as exc:
            return Failure(describe_exception(exc), exc=exc)
        status = resp.status_code
        why = f"HTTP {status}" + (f": {text}" if text else "")
        return Failure(
            why,
            status=status,
            retry_after=retry_after(resp.headers.get("Retry-After")),
            final=400 <= status < 500 and status not in _RETRY_STATUSES,
        )

    def _postable(self, t: _Tracked) -> PostableAlert:
        a = t.alert
        labels = {
            **self.config.labels,
            "alertname": a.name,
            "severity": a.level,
            "system": self.system,
            "endpoint": self.endpoint,
        }
        if self._instance:  # known once the endpoint listens
            labels["instance"] = self._instance
        if a.component is not None:
            labels["component"] = a.component
        rule = self._rules.get(a.name)
        figure = self._figure.get(a.name)
        value = "" if a.value is None else f"{a.value:.6g}"
        where = f"component {a.component}" if a.component is not None else "the system"
        description = f"{a.name} ({a.level}) on {where} of {self.system}"
        if rule is not None:
            description += f": {rule.expr}"
            if rule.for_seconds:
                description += f" for {rule.for_seconds:g}s"
        if figure is not None and value:
            description += f"; {figure} = {value}"
        annotations = {"summary": a.message, "description": description}
        if figure is not None:
            annotations["figure"] = figure
        if value:
            annotations["value"] = value
        ends = t.ends_at if t.ends_at is not None else self._wall() + self._valid_for
        return PostableAlert(
            labels=labels,
            annotations=annotations,
            starts_at=rfc3339(a.timestamp),
            ends_at=rfc3339(ends),
            generator_url=self._generator_url,
        )

    # -- figures --------------------------------------------------------------------------

    def statistics(self) -> AlertmanagerStatistics:
        return AlertmanagerStatistics(
            tracked=len(self._alerts),
            targets=[
                AlertmanagerTargetStatistics(
                    url=t.url,
                    sent=t.counts["sent"],
                    failed=t.counts["failed"],
                    rejected=t.counts["rejected"],
                    dropped=t.counts["dropped"],
                    due=len(self._due(t)[0]),
                    consecutive_failures=t.consecutive_failures,
                    last_error=t.last_error,
                    last_success=t.last_success,
                )
                for t in self._targets
            ],
        )


async def _head(resp: httpx.Response) -> str:
    """The start of an error answer, for the log; never more than ``_MAX_ERROR_BODY``."""
    got = b""
    async for chunk in resp.aiter_bytes():
        got += chunk
        if len(got) >= _MAX_ERROR_BODY:
            break
    return got[:_MAX_ERROR_BODY].decode("utf-8", "replace").strip()

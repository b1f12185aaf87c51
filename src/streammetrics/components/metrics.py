"""The MetricsEndpoint component: a binding consumer that folds the system's events
into its own aggregates and serves them over HTTP.

Each MetricsEndpoint has its own ``Aggregator`` subscribed to the bus, so several
endpoints in one blueprint (the seed's multi-environment example) each observe their
own subset (``config.components``) and serve their own port. When it is the
``to_component`` of a binding it also consumes that stream, counting each message as
an item it processed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..aggregator import Aggregator
from ..buckets import DEFAULT_HISTOGRAM_BUCKETS, Ladder, check_histogram_buckets
from ..bus import EventBus
from ..collector_policy import CollectorConfig, CollectorPolicy
from ..errors import ConfigError, HarnessUnavailableError
from ..http.limits import ConnectionGuard, ConnectionLimits
from ..http.settings import (
    AuthSettings,
    CorsSettings,
    ProxyAddress,
    RateLimitSettings,
    check_trusted_proxies,
)
from ..intake.config import DedupConfig, IngestConfig, open_ingest_problem
from ..intake.otlp_config import OtlpConfig
from ..judge.alerts.engine import AlertEngine
from ..judge.alerts.rules import AlertRule
from ..judge.health import HealthConfig, HealthJudge
from ..model.events import Event
from ..model.types import DeclaredName, Port
from ..model.validation import located
from ..transports.alertmanager_config import AlertmanagerConfig
from ..transports.config import EventSourceConfig
from ..views.live import LiveConfig, LiveFeed
from .base import FLUSH_INTERVAL_S, Component, Context, Input

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from ..http.app import MetricsApp
    from ..http.ingest import IngestGuard
    from ..intake.otlp import OtlpIntake
    from ..plugins import MetricsPlugin
    from ..probe import Probe
    from ..transports.alertmanager import AlertmanagerNotifier
    from ..transports.redis_source import RedisSource

__all__ = ("MetricsEndpoint", "MetricsEndpointConfig")

_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.+)`")


class MetricsEndpointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    port: Port
    """Port of the metrics API (required; 0 picks a free one)."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback unless the blueprint says otherwise."""
    components: list[str] | None = None
    """Observe only these components; all of the system's (and external ones) when null."""
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    """How often snapshots (and the Prometheus text) may be rebuilt."""
    window: Literal[10, 60, 300] = 60
    """The default rate window in seconds (a request may ask for another)."""
    max_components: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    """Components beyond this many are rejected (label-cardinality guard)."""
    component_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    """A component (or stream) that only events made known, not the blueprint or code,
    is evicted with its series and alerts after this long without a report, and counted
    in ``streammetrics_components_evicted_total``; 0 keeps every one forever."""
    health: HealthConfig = HealthConfig()
    """Thresholds of the health judgement."""
    alerts: list[AlertRule] = []
    """Alert rules beside the built-in set: ``{name, expr, for, level, component}``."""
    builtin_alerts: bool = True
    """Evaluate the built-in rules (ComponentDown, HighErrorRate, CircuitBreakerOpen…)."""
    alert_retention_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    """How long a resolved alert stays visible in ``/alerts``."""
    ingest: IngestConfig = IngestConfig()
    """``POST /events`` for producers in other processes: ``{enabled, path,
    max_body_bytes, auth, allow_unauthenticated, lifecycle}``. Never writable with a read
    token; bound beyond loopback it needs ``auth`` or ``allow_unauthenticated``."""
    otlp: OtlpConfig | None = None
    """``POST /v1/traces``, the OTLP/HTTP trace receiver, off when absent: ``{path,
    group_by, item_kinds, max_body_bytes, retry_after_s}`` (needs the ``otlp`` extra)."""
    source: EventSourceConfig = EventSourceConfig()
    """Events from beyond the process: ``{redis: {url, stream, group, consumer}}``."""
    dedup: DedupConfig = DedupConfig()
    """Event ids remembered so that a re-delivered event folds once:
    ``{max_ids, max_age_s}``."""
    span_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """A span with no ``span_end`` after this long is given up on and counted in
    ``traces.expired_spans``."""
    cors: CorsSettings | None = None
    """Cross-origin reads for web dashboards, off when absent: ``{allow_origins: [...]}``."""
    rate_limit: RateLimitSettings | None = RateLimitSettings()
    """Per-client token bucket, on by default: 1000 requests per second per client address,
    the health routes 10000 (``{requests: 1000, per: 1s}``; 429 past it); null turns it
    off."""
    auth: AuthSettings | None = None
    """Bearer tokens read from the environment, off when absent:
    ``{bearer_tokens_env: STREAMMETRICS_TOKENS}`` (401 without one)."""
    trusted_proxies: list[ProxyAddress] = []
    """Reverse proxies (addresses or networks) whose ``X-Forwarded-For`` names the
    client, for the rate limit and the logs; none by default, so the connection's peer
    is the client and no header can pick another rate-limit bucket."""
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """On shutdown, how long requests in flight may take before they are cut off."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 30)] = 1_048_576
    """Request bodies larger than this are refused with 413 before they are read."""
    dashboard: LiveConfig = LiveConfig()
    """``GET /dashboard`` and its Server-Sent Events feed ``GET /stream``:
    ``{enabled, max_clients, heartbeat_s}``."""
    limits: ConnectionLimits = ConnectionLimits()
    """Bounds on every connection: ``{max_connections, health_reserve, max_header_bytes,
    header_timeout_s, idle_timeout_s, retry_after_s, max_concurrent_requests}``."""
    alertmanager: AlertmanagerConfig | None = None
    """Post firing and resolved alerts to Alertmanager, off when absent: ``{urls: [...],
    resend_s: 60, timeout_s: 10}``."""
    histogram_buckets: tuple[float, ...] = DEFAULT_HISTOGRAM_BUCKETS
    """Upper bounds in seconds of ``component_latency_seconds``' buckets in ``/metrics``
    (``+Inf`` is added): 1 to 30 increasing boundaries, prometheus-client's defaults
    unless set. Each is exact: a latency lands in the bucket a prometheus-client
    ``Histogram`` with these boundaries would put it in. Quantiles are read from a finer
    ladder whatever these are."""
    gc: CollectorConfig = CollectorConfig()
    """The process's garbage collector: frozen after every tick, so that full collections
    skip the long-lived figures, and thawed with one full collection every ``thaw_s``:
    ``{freeze: true, thaw_s: 300}``; ``freeze: false`` leaves it alone."""

    def __post_init__(self) -> None:
        check_histogram_buckets(self.histogram_buckets)
        check_trusted_proxies(self.trusted_proxies)
        problem = open_ingest_problem(self.host, self.ingest, read_auth=self.auth is not None)
        if problem is not None:
            raise ValueError(problem)
        if self.otlp is not None and open_ingest_problem(
            self.host,
            msgspec.structs.replace(self.ingest, enabled=True),
            read_auth=self.auth is not None,
        ):  # the trace receiver writes as ingest does, behind the same guard
            raise ValueError(
                f"host {self.host!r} is reachable beyond this machine and POST {self.otlp.path} "
                "takes spans from anyone: give ingest its own tokens, which the trace receiver "
                "shares (ingest.auth: {bearer_tokens_env: STREAMMETRICS_INGEST_TOKENS}), leave "
                "otlp out, or say that anyone who reaches the port may post "
                "(ingest.allow_unauthenticated: true)"
            )


class MetricsEndpoint(Component):
    """Serves `/`, `/health` (and its `/health/live`, `/health/ready` probes), `/metrics`,
    `/metrics/json`, `/alerts`, `/components`."""

    type_name = "MetricsEndpoint"
    Config = MetricsEndpointConfig
    serves_port = True
    observes_events = True

    def __init__(
        self,
        ctx: Context | None = None,
        /,
        *,
        name: str | None = None,
        plugins: Sequence[MetricsPlugin] = (),
        **config: Any,
    ) -> None:
        """From a harness ``Context``, or in code: ``MetricsEndpoint(name=..., port=...,
        **config)`` with the blueprint's config keys as keywords and no blueprint.

        In code the endpoint owns an event bus of its own and flushes its probes into it
        every ``FLUSH_INTERVAL_S``. ``plugins`` bring routes, collectors and figures, as
        the hooks of a subclass (``setup_routes()``, ``collectors()``, ``figures()``) do.
        """
        from ..process_sampler import ProcessSampler
        from ..views.tick_cache import TickCache

        self._standalone = ctx is None
        if ctx is None:
            ctx = _standalone_context(type(self), name, config)
        elif name is not None or config:
            raise TypeError(
                f"{type(self).__name__}(ctx) takes its settings from the blueprint; "
                "name= and config keywords are for use without one"
            )
        super().__init__(ctx)
        cfg: MetricsEndpointConfig = ctx.config
        self.config = cfg
        self.plugins: list[MetricsPlugin] = list(plugins)
        self._app: MetricsApp | None = None
        self._guard: IngestGuard | None = None
        ladder = ctx.bus.ladder
        if not ladder.covers(cfg.histogram_buckets):
            raise ConfigError(
                f"the event bus counts latencies in a ladder without every boundary of "
                f"{ctx.name!r}'s histogram_buckets; make the bus with "
                "EventBus(Ladder([histogram_buckets, ...])), as the harness does",
                path="config.histogram_buckets",
                value=list(cfg.histogram_buckets),
            )
        self.aggregator = Aggregator(
            observe=cfg.components,
            max_components=cfg.max_components,
            view=cfg.window,
            span_timeout_s=cfg.span_timeout_s,
            component_ttl_s=cfg.component_ttl_s,
            ladder=ladder,
            histogram_buckets=cfg.histogram_buckets,
        )
        for peer in ctx.peers:
            if self.aggregator.observes(peer.name):
                self.aggregator.register_component(peer.name, peer.type, breaker=peer.breaker)
        if self._standalone:
            self.aggregator.register_component(ctx.name, self.type_name)
        for key, out in ctx.system_outputs.items():
            src = key.split("->", 1)[0]
            if self.aggregator.observes(src) or self.aggregator.observes(out.to_component):
                self.aggregator.register_stream(
                    key,
                    from_component=src,
                    to_component=out.to_component,
                    stream_name=out.stream_name,
                    buffer=out.buffer,
                )
        self.alerts = AlertEngine(
            cfg.alerts,
            health=cfg.health,
            builtin=cfg.builtin_alerts,
            resolved_retention_s=cfg.alert_retention_s,
        )
        self.judge = HealthJudge(cfg.health, alerts=self.alerts)
        self.service = TickCache(
            self.aggregator,
            tick_s=cfg.tick_s,
            sampler=ProcessSampler(),
            name=ctx.name,
            judge=self.judge,
            live=LiveFeed(cfg.dashboard, name=ctx.name, tick_s=cfg.tick_s),
        )
        self.port: int | None = None
        self.connections = ConnectionGuard(cfg.limits)
        #: The process's garbage collector, as this endpoint's ticks manage it.
        self.collector = CollectorPolicy(cfg.gc)
        self._init_transports(cfg)

    @property
    def app(self) -> MetricsApp:
        """The Litestar app, built on first use (so a subclass's hooks run once its own
        ``__init__`` is done); ``setup_routes()`` adds routes to it."""
        if self._app is None:
            self._build_app()
        assert self._app is not None
        return self._app

    def _build_app(self) -> None:
        from ..http.app import create_app
        from ..http.dashboard import LIVE_ENDPOINTS, LIVE_ROUTES
        from ..http.hardening import hardening
        from ..http.limits import ConnectionCollector
        from ..prometheus.gc_policy import GCPolicyCollector

        for c in [*self._transport_collectors, *self.collectors()]:
            self.service.add_collector(c)
        for p in self.plugins:
            self.service.add_figures(p.name, p.figures)
        if type(self).figures is not MetricsEndpoint.figures:
            self.service.add_figures(self.name, self.figures)
        cfg = self.config
        live = LIVE_ROUTES if cfg.dashboard.enabled else ()
        self._app = create_app(
            self.service,
            extra_route_handlers=[*live, *(h for p in self.plugins for h in p.route_handlers())],
            max_body_bytes=cfg.max_body_bytes,
            **hardening(
                cors=cfg.cors,
                rate_limit=cfg.rate_limit,
                auth=cfg.auth,
                component=self.name,
                service=self.service,
                ingest_path=cfg.ingest.path if cfg.ingest.enabled else None,
                write_paths=(cfg.otlp.path,) if cfg.otlp is not None else (),
            ),
        )
        self.service.add_builtin_collector(ConnectionCollector(self.connections))
        self.service.add_builtin_collector(GCPolicyCollector(self.collector))
        if live:
            self._app.endpoints.update(LIVE_ENDPOINTS)
        self._register_ingest()
        self._register_otlp()
        self.setup_routes()

    # -- extension hooks: a subclass overrides them; a MetricsPlugin brings the same ------

    def setup_routes(self) -> None:
        """Add routes, called once when the app is built: ``@self.app.get("/path")``
        over a function (``post``, ``put``, ``patch``, ``delete`` too, with Litestar's
        decorator options); a handler parameter ``service`` gets the endpoint's
        ``TickCache``. Added routes are listed in ``GET /``. An override calls
        ``super().setup_routes()``.

        ``_setup_routes()`` is this hook under the name the original API documented: the
        default calls it, so a subclass written for either name works."""
        self._setup_routes()

    def _setup_routes(self) -> None:
        """``setup_routes()`` under the name the original API documented, so that endpoint
        subclasses written against it (overriding ``_setup_routes``) run unchanged."""

    def collectors(self) -> Sequence[Collector]:
        """prometheus-client collectors (the ``collect()`` protocol: metric objects made
        with ``registry=None``, an exporter's collector), called once per tick in a worker
        thread and served in ``/metrics`` and ``/metrics/json``'s ``custom``; the plugins'
        by default. One that fails is listed in ``errors``, the rest still served."""
        return [c for p in self.plugins for c in p.collectors()]

    async def figures(self) -> Mapping[str, Any]:
        """Free-form figures for ``/metrics/json``'s ``extra.<endpoint name>``, once per
        tick (a subclass overrides it; an error is listed, the rest still served)."""
        return {}

    def _init_transports(self, cfg: MetricsEndpointConfig) -> None:
        """HTTP ingest and the Redis consumer fold through one intake, so they share
        its dedup window."""
        from ..intake.dedup import DedupWindow
        from ..intake.intake import Intake

        self.intake = Intake(self.aggregator, DedupWindow(cfg.dedup))
        self.otlp: OtlpIntake | None = None
        if cfg.otlp is not None:
            from ..intake.otlp import OtlpIntake

            self.otlp = OtlpIntake(self.aggregator, cfg.otlp)
        self.redis: RedisSource | None = None
        self._transport_collectors: list[Collector] = []
        if cfg.source.redis is not None:
            from ..transports.redis_metrics import RedisCollector
            from ..transports.redis_source import RedisSource

            self.redis = RedisSource(cfg.source.redis, self.intake, name=self.name)
            self._transport_collectors.append(RedisCollector(self.redis))
            self.judge.sources.append(self.redis)  # cannot read: degraded, EventSourceDown
        self.alertmanager: AlertmanagerNotifier | None = None
        if cfg.alertmanager is not None:
            from ..transports.alertmanager import AlertmanagerNotifier
            from ..transports.alertmanager_metrics import AlertmanagerCollector

            # Without a blueprint there is no system name: the endpoint's stands for it.
            self.alertmanager = AlertmanagerNotifier(
                cfg.alertmanager,
                system=self.ctx.system or self.name,
                endpoint=self.name,
                rules=self.alerts.rules(),
                tick_s=cfg.tick_s,
            )
            self._transport_collectors.append(AlertmanagerCollector(self.alertmanager))

    def _write_guard(self) -> IngestGuard:
        """The one guard of the routes that write (``POST /events``, ``POST /v1/traces``),
        made on first use: both take the ingest tokens, and count refusals together."""
        if self._guard is None:
            from ..http.guard_metrics import IngestAuthCollector
            from ..http.ingest import IngestGuard

            read_auth = self.config.auth is not None
            guard = IngestGuard(self.config.ingest, component=self.name, read_auth=read_auth)
            if guard.access != "open":
                self.service.add_builtin_collector(IngestAuthCollector(guard.counts))
            self._guard = guard
        return self._guard

    def _register_ingest(self) -> None:
        from ..http.ingest import ingest_route

        ingest = self.config.ingest
        if self._app is None or not ingest.enabled:
            return
        self._app.register(ingest_route(self.intake, ingest, self._write_guard()))
        self._app.endpoints[ingest.path] = (
            "Report events (POST): one, a list or {events}; JSON or msgpack"
        )

    def _register_otlp(self) -> None:
        otlp = self.config.otlp
        if self._app is None or otlp is None or self.otlp is None:
            return
        from ..http.otlp import otlp_route

        self._app.register(otlp_route(self.otlp, otlp, self._write_guard()))
        self._app.endpoints[otlp.path] = "Export spans (POST): OTLP/HTTP, protobuf or JSON"

    async def collect_custom_metrics(self) -> Mapping[str, Any]:
        """The endpoint's custom figures of the current tick, as ``/metrics/json`` has
        them: ``custom`` (its collectors' families by name), ``extra`` (plugins' and
        ``figures()``' results by source), ``errors`` (collectors or sources that failed)
        and the snapshot's ``timestamp``. What a custom route (``return await
        self.collect_custom_metrics()``) serves unless a subclass overrides it; 503 while
        no harness feeds the endpoint."""
        snap = await self.service.snapshot()  # the tick's collection comes with it
        custom = self.service.custom()
        return {
            "custom": custom.json,
            "extra": custom.extra,
            "errors": custom.errors,
            "timestamp": snap.timestamp,
        }

    def probe(self, component: str) -> Probe:
        """The probe through which code in this process reports as ``component``
        (registered at once, so it is listed before its first count)."""
        if self.aggregator.observes(component):
            self.aggregator.register_component(component)
        return self.ctx.bus.probe(component)

    @property
    def url(self) -> str:
        """``http://host:port`` once listening."""
        if self.port is None:
            raise RuntimeError(f"metrics endpoint {self.name!r} is not listening yet")
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        from ..http.server import serve

        cfg = self.config
        bus = self.ctx.bus
        bus.subscribe(self.aggregator)
        self.service.set_available()
        self.service.live.open()
        # Its own "started" went out before it listened: fold it here.
        self.aggregator.fold_events([Event(self.name, "started", timestamp=self.ctx.wall())])
        try:
            async with anyio.create_task_group() as tg:
                for inp in self.ctx.inputs:
                    tg.start_soon(self._consume, inp)
                self.port = await tg.start(
                    partial(
                        serve,
                        self.app,
                        host=cfg.host,
                        port=cfg.port,
                        component=self.name,
                        shutdown_timeout_s=cfg.shutdown_timeout_s,
                        connections=self.connections,
                        trusted_proxies=cfg.trusted_proxies,
                    )
                )
                if self.alertmanager is not None:
                    await tg.start(self.alertmanager.run, self._generator_url())
                if self.redis is not None:  # unreachable Redis stops the start
                    await tg.start(partial(self.redis.run, port=self.port))
                # Ticks (and so the rules) begin once the sources read: a first tick
                # before the Redis source connected judged it down and fired
                # EventSourceDown at every start.
                tg.start_soon(self._tick)
                if self._standalone:  # no harness flushes the probes: the endpoint does
                    tg.start_soon(self._flush)
                task_status.started((cfg.host, self.port))
        finally:
            bus.flush()
            bus.unsubscribe(self.aggregator)
            self.collector.close()
            # The app may outlive this run (served elsewhere): it must say so, not serve
            # figures that no longer move.
            self.service.set_unavailable(f"metrics endpoint {self.name!r} is stopped")

    async def _tick(self) -> None:
        """Build a snapshot every tick even when nobody asks, so that alert rules' ``for``
        durations run on time, as Prometheus evaluates rules without a reader."""
        try:
            while True:
                # Unavailable: the routes say so; rules resume when the harness is back.
                with suppress(HarnessUnavailableError):
                    # Fresh, never the previous one a request may still be answered from.
                    await self.service.snapshot(fresh=True)
                    if self.alertmanager is not None:  # hands the report over; no I/O
                        self.alertmanager.observe(self.alerts.current())
                    self.collector.after_tick()
                await anyio.sleep(self.config.tick_s)
        finally:
            # Cancelled with the server: end the live streams now, or the server's
            # graceful shutdown would wait its whole deadline for them.
            self.service.live.close()

    def _generator_url(self) -> str:
        """Where an alert sent to Alertmanager links to: this endpoint's ``/alerts``."""
        assert self.config.alertmanager is not None
        base = self.config.alertmanager.external_url
        if base is None and self.config.host in ("0.0.0.0", "::", ""):
            base = f"http://{socket.gethostname()}:{self.port}"  # reachable from elsewhere
        return f"{(base or self.url).rstrip('/')}/alerts"

    async def _flush(self) -> None:
        while True:
            await anyio.sleep(FLUSH_INTERVAL_S)
            await self.ctx.bus.flush_async()

    async def _consume(self, inp: Input) -> None:
        probe = self.ctx.probe
        async with inp.stream:
            async for _item in inp.stream:
                probe.processed()


def _standalone_context(
    cls: type[MetricsEndpoint], name: str | None, config: dict[str, Any]
) -> Context:
    """The context a harness would give, for an endpoint made in code (its own bus; no
    other component known in advance: probes register theirs as they are made)."""
    name = "metrics_endpoint" if name is None else name
    try:
        name = msgspec.convert(name, DeclaredName)
    except msgspec.ValidationError as exc:
        raise ConfigError(located(exc, "name")[1], path="name", value=name) from None
    try:
        cfg = msgspec.convert(config, cls.Config)
    except msgspec.ValidationError as exc:
        path, reason = located(exc, "config")
        unknown = _UNKNOWN_FIELD.fullmatch(reason)
        if unknown:  # name the keyword itself, as a typo is what this usually is
            path = f"{path}.{unknown[1]}"
            reason = f"{cls.__name__} has no setting {unknown[1]!r}"
        key = path.split(".")[1].split("[")[0] if "." in path else None
        raise ConfigError(reason, path=path, value=config.get(key) if key else None) from None
    bus = EventBus(Ladder([cfg.histogram_buckets]))
    return Context(name=name, type=cls.type_name, config=cfg, probe=bus.probe(name), bus=bus)

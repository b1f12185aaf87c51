"""Configuration of the event sources beyond the process (``MetricsEndpoint`` config
``source``). Kept apart from the transports themselves so that validating a blueprint
does not import a Redis client."""

from __future__ import annotations

import string
from typing import Annotated, Final, Literal

import msgspec

from ..intake.config import Lifecycle

__all__ = (
    "CONSUMER_FIELDS",
    "EventSourceConfig",
    "RedisSourceConfig",
    "redact_url",
)

#: Placeholders a consumer name may use.
CONSUMER_FIELDS: Final = frozenset(("host", "name", "port", "pid"))
_SCHEMES: Final = ("redis://", "rediss://", "unix://")

StreamKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    creds, _at, host = rest.partition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"


class RedisSourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Consume events from a Redis stream with a consumer group.

    Several endpoints in one group share the stream's entries (each folds its share);
    entries are acknowledged only once folded, so a crash re-delivers them.
    """

    url: str = "redis://127.0.0.1:6379/0"
    """``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or ``unix://path``."""
    stream: StreamKey = "streammetrics:events"
    """The stream key the publishers ``XADD`` to."""
    group: StreamKey = "streammetrics"
    """Consumer group; created (with the stream) when missing."""
    consumer: StreamKey = "{host}-{name}-{port}"
    """This consumer's name in the group; ``{host}``, ``{name}`` (the component),
    ``{port}`` (its HTTP port) and ``{pid}`` are filled in. Keep it stable across
    restarts: a restarted consumer takes back its own unacknowledged entries."""
    start_id: Literal["0", "$"] = "0"
    """Where a new group starts: ``0`` the whole stream, ``$`` only new entries."""
    count: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    """Entries per read (each entry is a batch of events)."""
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000
    """How long one read waits for new entries."""
    claim_idle_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 30.0
    """Entries another consumer read but has not acknowledged for this long are taken
    over (``XAUTOCLAIM``): that consumer is presumed dead."""
    claim_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """How often to look for such entries."""
    lag_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    """How often the group's lag and pending count are read (``XINFO GROUPS``)."""
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """The endpoint does not start when Redis cannot be reached within this time; once
    running, it reconnects on its own."""
    reconnect_max_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """Longest wait between reconnection attempts (backoff doubles up to it)."""
    lifecycle: Lifecycle = "refuse"
    """As ``ingest.lifecycle``: ``refuse`` (default) rejects each ``started`` and
    ``stopped`` event of an entry (``reason="lifecycle"``, acknowledged) while the rest
    fold, so that a producer with write access to the stream cannot mark a component
    stopped; ``accept`` folds them."""
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """How long a reply may take beyond a read's own ``block_ms`` before the connection
    counts as lost (a hung or stopped server): the source then says it cannot read and
    reconnects, rather than waiting for ever."""
    dead_letter_maxlen: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 10_000
    """An entry that cannot be decoded (no ``msgpack``/``json`` field, a body that does
    not decode) is acknowledged, counted, and copied with its reason to the stream
    ``<stream>:dead``, trimmed to about this many entries (``MAXLEN ~``)."""
    consumer_idle_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] | None = 3600.0
    """Other consumers of the group idle this long are removed (``XGROUP DELCONSUMER``)
    once they hold no pending entry (idle entries are claimed first, after
    ``claim_idle_s``); at least ``claim_idle_s``. None: never remove consumers."""

    def __post_init__(self) -> None:
        if self.consumer_idle_s is not None and self.consumer_idle_s < self.claim_idle_s:
            raise ValueError(
                f"consumer_idle_s {self.consumer_idle_s:g} is below claim_idle_s "
                f"{self.claim_idle_s:g}: a consumer would be removed before its entries "
                "could be claimed"
            )
        if not self.url.startswith(_SCHEMES):
            raise ValueError(
                f"url {redact_url(self.url)!r} is not a redis://, rediss:// or unix:// URL"
            )
        for _text, field, _spec, _conv in string.Formatter().parse(self.consumer):
            if field is not None and field not in CONSUMER_FIELDS:
                raise ValueError(
                    f"consumer {self.consumer!r} uses {{{field}}}; "
                    f"known: {', '.join('{' + f + '}' for f in sorted(CONSUMER_FIELDS))}"
                )

    def consumer_name(self, *, host: str, name: str, port: int | None, pid: int) -> str:
        return self.consumer.format(host=host, name=name, port=port or 0, pid=pid)


class EventSourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where a MetricsEndpoint takes events from beyond its own process (config
    ``source``). Not ``SourceConfig``: that is the ``Source`` component's config."""

    redis: RedisSourceConfig | None = None
    """A Redis stream read with a consumer group."""

"""Configuration of alert delivery to Alertmanager (``MetricsEndpoint`` config
``alertmanager``). Kept apart from the notifier so that validating a blueprint does not
import an HTTP client."""

from __future__ import annotations

import re
from typing import Annotated, Final
from urllib.parse import urlsplit

import msgspec

__all__ = ("ALERT_LABELS", "AlertmanagerConfig")

#: The labels every alert carries; ``labels`` may add others, never replace these.
ALERT_LABELS: Final = ("alertname", "severity", "component", "system", "endpoint", "instance")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelValue = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


def _check_url(what: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{what} {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} {url!r} has a query or fragment; give the base URL only")


class AlertmanagerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Post every firing and resolved alert to Alertmanagers, as Prometheus does.

    Each alert that starts firing is posted to every ``urls`` entry's ``/api/v2/alerts``,
    re-sent every ``resend_s`` while it fires with an ``endsAt`` four resends ahead (so an
    Alertmanager times it out only if this endpoint stops sending), and posted once more
    with its ``endsAt`` when it resolves.
    """

    urls: Annotated[list[str], msgspec.Meta(min_length=1, max_length=16)]
    """Alertmanager base URLs (``http://alertmanager:9093``); each gets every alert, as
    Prometheus sends to every member of an Alertmanager cluster."""
    resend_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    """A firing alert (and a resolved one still listed in ``/alerts``) is sent again this
    often: Prometheus' ``--rules.alert.resend-delay``."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """The longest one POST may take, connecting included."""
    backoff_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 0.5
    """Wait after a failed POST before the next; doubled (with jitter) per further failure."""
    max_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Longest wait between tries while an Alertmanager keeps failing."""
    external_url: str | None = None
    """This endpoint as people reach it; each alert's ``generatorURL`` is this plus
    ``/alerts``. Default ``http://<host>:<port>`` of the endpoint (the machine's host name
    when it listens on every interface)."""
    labels: dict[Annotated[str, msgspec.Meta(max_length=200)], LabelValue] = {}
    """Labels added to every alert (``{env: prod}``), as Prometheus' ``external_labels``;
    they may not be one of the alert's own (``alertname``, ``severity``, ``component``,
    ``system``, ``endpoint``, ``instance``)."""

    def __post_init__(self) -> None:
        for i, url in enumerate(self.urls):
            _check_url(f"urls[{i}]", url)
        if len({u.rstrip("/") for u in self.urls}) != len(self.urls):
            raise ValueError(f"urls {self.urls!r} name one Alertmanager twice")
        if self.external_url is not None:
            _check_url("external_url", self.external_url)
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(
                f"max_backoff_s {self.max_backoff_s:g} is below backoff_s {self.backoff_s:g}"
            )
        for name in self.labels:
            if not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"labels: {name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            if name in ALERT_LABELS:
                raise ValueError(f"labels: {name!r} is one of the alert's own labels")

    @staticmethod
    def alerts_url(url: str) -> str:
        """Where alerts are posted: the base URL's ``/api/v2/alerts``."""
        return url.rstrip("/") + "/api/v2/alerts"

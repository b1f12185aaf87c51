"""Untrusted ingest, through a real MetricsEndpoint on a loopback port: ingest takes its
own tokens and never the read ones, is closed beside a read auth that has no ingest
counterpart, refuses to be opened beyond loopback by default, refuses lifecycle events
from outside (HTTP and a real redis-server) while the rest of their batch folds, and
the rate limiter believes ``X-Forwarded-For`` only from a listed proxy. Every refusal is
answered clearly, counted in ``/metrics``, and leaves ``/health`` answering."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import pytest
import redis

from streammetrics import Event
from streammetrics.blueprint import parse_blueprint
from streammetrics.cli import main
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import BlueprintError, ConfigError
from streammetrics.intake.config import is_loopback_host
from streammetrics.transports.redis_publisher import EventPublisher
from tests.support.endpoints import redis_source, serving
from tests.support.exposition import by_label, families
from tests.support.guards import BLUEPRINT, bearer
from tests.support.servers import RedisServer
from tests.support.waiting import poll_response, until

pytestmark = pytest.mark.anyio

READ_TOKEN: Final = "read-Aa0123456789-token"
INGEST_TOKEN: Final = "ingest-Bb0123456789-token"
READ_ENV: Final = "STREAMMETRICS_TEST_READ_TOKENS"
INGEST_ENV: Final = "STREAMMETRICS_TEST_INGEST_TOKENS"
ONE: Final = {"component": "billing", "kind": "processed"}


@pytest.fixture
def token_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(READ_ENV, READ_TOKEN)
    monkeypatch.setenv(INGEST_ENV, INGEST_TOKEN)


def endpoint(
    **config: Any,
) -> AbstractAsyncContextManager[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    return serving(tick_s=0.05, **config)


def _components(ep: MetricsEndpoint) -> set[str]:
    return set(ep.aggregator.figures().detailed_components) - {"metrics"}


async def _exposition(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    await anyio.sleep(0.1)  # the next tick's render
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200
    return families(r.text)


# -- ingest's own credential ----------------------------------------------------------------


@pytest.mark.usefixtures("token_envs")
async def test_ingest_needs_an_ingest_token_and_a_read_token_is_refused() -> None:
    config = {
        "auth": {"bearer_tokens_env": READ_ENV},
        "ingest": {"auth": {"bearer_tokens_env": INGEST_ENV}},
    }
    async with endpoint(**config) as (ep, client):
        r = await client.post("/events", json=ONE)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="streammetrics"'
        assert r.json()["status_code"] == 401
        r = await client.post("/events", json=ONE, headers=bearer(READ_TOKEN))
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        r = await client.post("/events", json=ONE, headers={"Authorization": "Basic eA=="})
        assert r.status_code == 401
        assert 'error="invalid_request"' in r.headers["www-authenticate"]
        # refused before the body is read: a body over the limit is a 401, not a 413
        big = b"[" + b'{"component": "x", "kind": "processed"},' * 200_000 + b"{}]"
        r = await client.post("/events", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert _components(ep) == set()  # nothing refused was folded
        r = await client.post("/events", json=ONE, headers=bearer(INGEST_TOKEN))
        assert (r.status_code, r.json()["accepted"]) == (200, 1)
        assert _components(ep) == {"billing"}
        # and an ingest token does not read
        assert (await client.get("/components", headers=bearer(INGEST_TOKEN))).status_code == 401
        assert (await client.get("/health")).status_code == 200
        fams = await _exposition(client, **bearer(READ_TOKEN))
    ingest = by_label(fams["streammetrics_http_ingest_auth_refused"], "reason", "_total")
    assert ingest == {"missing": 2, "invalid_request": 1, "invalid_token": 1, "closed": 0}
    # the read auth counted only the ingest token's read attempt
    read = by_label(fams["streammetrics_http_auth_refused"], "reason", "_total")
    assert read["invalid_token"] == 1 and read["missing"] == 0


@pytest.mark.usefixtures("token_envs")
async def test_ingest_auth_alone_leaves_reads_open() -> None:
    async with endpoint(ingest={"auth": {"bearer_tokens_env": INGEST_ENV}}) as (ep, client):
        assert (await client.post("/events", json=ONE)).status_code == 401
        assert (await client.get("/components")).status_code == 200
        r = await client.post("/events", json=[ONE, ONE], headers=bearer(INGEST_TOKEN))
        assert r.json()["accepted"] == 2
        assert ep.aggregator.figures().detailed_components["billing"].items_processed == 2


@pytest.mark.usefixtures("token_envs")
async def test_a_read_auth_without_ingest_auth_closes_ingest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with endpoint(auth={"bearer_tokens_env": READ_ENV}) as (ep, client):
        assert any(
            "POST /events is closed" in rec.getMessage() and rec.levelname == "WARNING"
            for rec in caplog.records
        )
        for headers in ({}, bearer(READ_TOKEN), bearer(INGEST_TOKEN)):
            r = await client.post("/events", json=ONE, headers=headers)
            assert r.status_code == 403, headers
            assert "ingest.auth" in r.json()["detail"]
            assert "www-authenticate" not in r.headers  # no token would help
        assert _components(ep) == set()
        assert (await client.get("/components", headers=bearer(READ_TOKEN))).status_code == 200
        fams = await _exposition(client, **bearer(READ_TOKEN))
    ingest = by_label(fams["streammetrics_http_ingest_auth_refused"], "reason", "_total")
    assert ingest["closed"] == 3


@pytest.mark.usefixtures("token_envs")
async def test_the_read_tokens_write_only_when_ingest_auth_names_them() -> None:
    config = {
        "auth": {"bearer_tokens_env": READ_ENV},
        "ingest": {"auth": {"bearer_tokens_env": READ_ENV}},
    }
    async with endpoint(**config) as (_ep, client):
        r = await client.post("/events", json=ONE, headers=bearer(READ_TOKEN))
        assert r.status_code == 200


async def test_an_unset_ingest_token_variable_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(INGEST_ENV, raising=False)
    ep = MetricsEndpoint(name="m", port=0, ingest={"auth": {"bearer_tokens_env": INGEST_ENV}})
    with pytest.raises(ConfigError) as info:
        ep.app  # noqa: B018 - built (and its tokens read) on first use, as at the start
    assert info.value.path == "m.config.ingest.auth.bearer_tokens_env"
    assert INGEST_ENV in str(info.value)


async def test_disabled_ingest_is_not_served(token_envs: None) -> None:
    async with endpoint(ingest={"enabled": False}) as (_ep, client):
        assert (await client.post("/events", json=ONE)).status_code in (404, 405)
    async with endpoint(auth={"bearer_tokens_env": READ_ENV}, ingest={"enabled": False}) as (
        ep,
        client,
    ):
        r = await client.post("/events", json=ONE, headers=bearer(READ_TOKEN))
        assert r.status_code in (404, 405)
        assert _components(ep) == set()


# -- binding beyond loopback ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("metrics.example.com", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_open_ingest_beyond_loopback_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=0, host="0.0.0.0")
    message = str(info.value)
    assert "ingest.auth" in message and "ingest.allow_unauthenticated: true" in message
    assert info.value.path == "config"
    with pytest.raises(ConfigError):
        MetricsEndpoint(name="m", port=0, host="::", ingest={"path": "/in"})


@pytest.mark.parametrize(
    "extra",
    [
        {"ingest": {"auth": {}}},
        {"ingest": {"allow_unauthenticated": True}},
        {"ingest": {"enabled": False}},
        {"auth": {}},  # a read auth closes ingest: not open
    ],
)
def test_beyond_loopback_ingest_must_be_guarded_off_or_explicitly_open(
    extra: dict[str, Any],
) -> None:
    ep = MetricsEndpoint(name="m", port=0, host="0.0.0.0", **extra)
    assert ep.config.host == "0.0.0.0"


def test_a_blueprint_with_open_ingest_beyond_loopback_does_not_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BLUEPRINT.format(extra="host: 0.0.0.0")
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(text)
    assert info.value.path == "system.components[0].config"
    assert "ingest.allow_unauthenticated: true" in info.value.reason
    path = tmp_path / "open.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert "ingest.auth" in capsys.readouterr().err
    path.write_text(BLUEPRINT.format(extra="host: 0.0.0.0\n        ingest: {enabled: false}"))
    assert main(["validate", str(path)]) == 0


def test_allow_unauthenticated_beside_ingest_auth_is_a_contradiction() -> None:
    with pytest.raises(ConfigError, match="contradicts"):
        MetricsEndpoint(name="m", port=0, ingest={"auth": {}, "allow_unauthenticated": True})


# -- lifecycle events from outside -----------------------------------------------------------


async def test_lifecycle_events_are_refused_one_by_one_and_the_rest_folds() -> None:
    body = [
        {"component": "billing", "kind": "processed"},
        {"component": "ghost", "kind": "stopped"},  # would be 503 for ever
        {"component": "billing", "kind": "started"},
        {"component": "billing", "kind": "processed", "count": 2},
    ]
    async with endpoint() as (ep, client):
        r = await client.post("/events", json=body)
        assert r.status_code == 200
        answer = r.json()
        assert (answer["accepted"], answer["rejected"], answer["malformed"]) == (2, 2, 0)
        assert [(x["index"], x["path"]) for x in answer["rejections"]] == [
            (1, "events[1].kind"),
            (2, "events[2].kind"),
        ]
        assert "ingest.lifecycle: refuse" in answer["rejections"][0]["reason"]
        # a body of nothing but lifecycle events is read, not malformed: 200, not 400
        r = await client.post("/events", json={"component": "ghost", "kind": "stopped"})
        assert (r.status_code, r.json()["rejected"]) == (200, 1)
        assert _components(ep) == {"billing"}
        assert ep.aggregator.figures().detailed_components["billing"].items_processed == 3
        assert ep.intake.statistics().lifecycle == 3
        health = await client.get("/health")
        assert health.status_code == 200, health.text
        fams = await _exposition(client)
    rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
    assert rejected["lifecycle"] == 3


async def test_lifecycle_accept_folds_them() -> None:
    async with endpoint(ingest={"lifecycle": "accept"}) as (ep, client):
        r = await client.post("/events", json={"component": "ghost", "kind": "stopped"})
        assert r.json()["accepted"] == 1
        assert ep.aggregator.figures().detailed_components["ghost"].status == "stopped"
        # the very fault the default refuses: one event from outside and /health is 503
        await poll_response(client, "/health", lambda r: r.status_code == 503)


async def test_redis_entries_have_their_lifecycle_events_refused(
    server: RedisServer, stream: str, r: redis.Redis
) -> None:
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish(Event("billing", "processed"))
        pub.publish(Event("ghost", "stopped"))
        pub.publish(Event("billing", "started"))
    source = redis_source(server.url, stream)
    async with endpoint(source=source) as (ep, client):
        await until(lambda: ep.intake.statistics().bodies == 1)
        assert _components(ep) == {"billing"}
        assert ep.intake.statistics().lifecycle == 2
        assert (await client.get("/health")).status_code == 200
        fams = await _exposition(client)
    rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
    assert rejected["lifecycle"] == 2
    # refused, yet acknowledged: not re-delivered for ever
    assert r.xpending(stream, "g")["pending"] == 0
    with EventPublisher(server.url, stream, batch_size=10) as pub:
        pub.publish(Event("ghost", "stopped"))
    source["redis"]["lifecycle"] = "accept"
    async with endpoint(source=source) as (ep, _client):
        await until(lambda: "ghost" in _components(ep))
        assert ep.aggregator.figures().detailed_components["ghost"].status == "stopped"


# -- X-Forwarded-For and the rate limit ------------------------------------------------------


async def _statuses(client: httpx.AsyncClient, forwarded: list[str]) -> list[int]:
    return [
        (await client.get("/components", headers={"X-Forwarded-For": f})).status_code
        for f in forwarded
    ]


@pytest.mark.parametrize("trusted", [[], ["10.9.9.9"]])
async def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(trusted: list[str]) -> None:
    limit = {"requests": 2, "per": "1m"}
    async with endpoint(rate_limit=limit, trusted_proxies=trusted) as (_ep, client):
        # three "clients" from one peer: one bucket, the peer's
        statuses = await _statuses(client, ["1.1.1.1", "2.2.2.2", "3.3.3.3"])
    assert statuses == [200, 200, 429]


async def test_a_forwarded_header_from_a_listed_proxy_names_the_client() -> None:
    limit = {"requests": 2, "per": "1m"}
    async with endpoint(rate_limit=limit, trusted_proxies=["127.0.0.1"]) as (_ep, client):
        statuses = await _statuses(client, ["1.1.1.1", "2.2.2.2", "3.3.3.3", "1.1.1.1"])
        assert statuses == [200, 200, 200, 200]
        assert await _statuses(client, ["1.1.1.1"]) == [429]  # its third
        # the proxy's own requests (no header) are its own bucket
        assert (await client.get("/components")).status_code == 200


@pytest.mark.parametrize("bad", ["*", "proxy.example.com", "10.0.0.1/8"])
def test_trusted_proxies_are_addresses_or_networks(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"trusted_proxies\[1\]"):
        MetricsEndpoint(name="m", port=0, trusted_proxies=["10.0.0.0/8", bad])

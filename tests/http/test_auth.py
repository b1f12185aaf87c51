"""Bearer-token authentication through a real server: 401 without a valid token, the health
probes open unless protected, secrets that never show, and clear errors for a missing or
bad token variable."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from streammetrics import Event
from streammetrics.errors import ConfigError
from streammetrics.http.app import create_app
from streammetrics.http.auth import BearerTokens
from streammetrics.http.hardening import hardening
from streammetrics.http.settings import AuthSettings
from tests.support.guards import BLUEPRINT, TOKEN, TOKEN2, bearer, served
from tests.support.http_app import FakeClock, running, seed, service_for
from tests.support.process import cli

pytestmark = pytest.mark.anyio


async def test_401_without_a_valid_token(clock: FakeClock, tokens_env: str) -> None:
    async with served(clock, auth=AuthSettings(tokens_env)) as c:
        missing = await c.get("/metrics")
        wrong = await c.get("/metrics", headers=bearer(TOKEN[:-1] + "X"))
        basic = await c.get("/metrics", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        ok1 = await c.get("/metrics", headers=bearer(TOKEN))
        ok2 = await c.get("/metrics/json", headers={"authorization": f"bearer {TOKEN2}"})
        schema = await c.get("/schema/openapi.json")
        health = await c.get("/health")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="streammetrics"'
    assert missing.json() == {
        "error": "unauthorized",
        "detail": "this endpoint needs an 'Authorization: Bearer <token>' header",
        "status_code": 401,
    }
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert basic.status_code == 401
    assert 'error="invalid_request"' in basic.headers["www-authenticate"]
    assert (ok1.status_code, ok2.status_code) == (200, 200)
    assert schema.status_code == 401
    assert health.status_code == 200  # load balancers carry no token


async def test_protect_health(clock: FakeClock, tokens_env: str) -> None:
    async with served(clock, auth=AuthSettings(tokens_env, protect_health=True)) as c:
        assert (await c.get("/health")).status_code == 401
        assert (await c.get("/health", headers=bearer(TOKEN))).status_code == 200


async def test_secrets_never_appear_in_logs_errors_or_metrics(
    clock: FakeClock, tokens_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    near_miss = TOKEN[:-1] + "Z"  # a real token mistyped is a secret too
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    service = service_for(seed(clock), clock)
    # a producer that puts the token where a careless one might: in an event's detail
    service._aggregator.fold_events(  # type: ignore[union-attr]
        [Event("task_api", "error", detail=f"auth failed for {near_miss}")]
    )
    settings = AuthSettings(tokens_env)
    app = create_app(service, **hardening(cors=None, rate_limit=None, auth=settings, component="m"))
    async with running(app) as c:
        for headers in ({}, bearer(near_miss), bearer(TOKEN), {"Authorization": near_miss}):
            for path in ("/", "/metrics", "/metrics/json", "/components", "/alerts", "/nope"):
                r = await c.get(path, headers=headers)
                seen.append(r.text)
                seen.extend(f"{k}: {v}" for k, v in r.headers.items())
    seen.append(caplog.text)
    seen.append(repr(BearerTokens.from_env(tokens_env, component="m")))
    seen.append(repr(app))
    text = "\n".join(seen)
    assert "refused GET /metrics from 127.0.0.1" in caplog.text  # the attempt is logged...
    for secret in (TOKEN, TOKEN2):
        assert secret not in text  # ...the accepted tokens never
    assert near_miss not in caplog.text
    # the presented token shows only where the test itself put it: the event's detail
    assert all(f"auth failed for {near_miss}" in t for t in seen if near_miss in t)


def test_missing_or_bad_token_env_is_a_clear_error() -> None:
    env = "STREAMMETRICS_TEST_UNSET_TOKENS"
    os.environ.pop(env, None)
    with pytest.raises(ConfigError) as info:
        hardening(cors=None, rate_limit=None, auth=AuthSettings(env), component="metrics_a")
    assert env in str(info.value)
    assert "metrics_a" in str(info.value)
    assert "not set" in str(info.value)
    for value, expect in [("", "empty"), (" , ", "empty"), ("short-secret", "12 characters")]:
        os.environ[env] = value
        try:
            with pytest.raises(ConfigError, match=expect) as info:
                BearerTokens.from_env(env, component="m")
        finally:
            del os.environ[env]
        if value.strip(" ,"):
            assert value not in str(info.value)  # a bad token is still someone's secret


def test_run_with_auth_and_no_token_variable_exits_2(tmp_path: Any) -> None:
    bp = tmp_path / "auth.yaml"
    bp.write_text(BLUEPRINT.format(extra="auth: {bearer_tokens_env: SM_TEST_NO_SUCH_VAR}"))
    env = {k: v for k, v in os.environ.items() if k != "SM_TEST_NO_SUCH_VAR"}
    r = cli("run", str(bp), env=env)
    assert r.returncode == 2
    assert "SM_TEST_NO_SUCH_VAR" in r.stderr
    assert "'m'" in r.stderr
    assert "Traceback" not in r.stderr

"""Schemathesis against the app's own OpenAPI schema, served for real by
``streammetrics run`` with CORS, a rate limit and bearer auth on: positive and negative
cases for every documented operation, and not one 5xx.

The specification's routes must also pass every other default check (documented status
codes, content types and response schemas; bad input refused, good input accepted);
routes added by extensions (ingest, dashboard) are held to "no 5xx"."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.support.servers import Run

BLUEPRINT = """
system:
  name: fuzzed
  components:
    - {name: src, type: Source, config: {rate: 200}}
    - {name: store, type: Store}
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        tick_s: 0.2
        max_body_bytes: 65536
        cors: {allow_origins: ["https://dash.example"]}
        rate_limit: {requests: 100000, per: 1s}
        auth: {bearer_tokens_env: SM_FUZZ_TOKENS}
  bindings:
    - {from_component: src, to_component: store}
"""
TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC_ROUTES = frozenset(("/", "/health", "/metrics", "/metrics/json", "/alerts", "/components"))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "bp.yaml"
    path.write_text(BLUEPRINT)
    run = Run(path, env={"SM_FUZZ_TOKENS": TOKEN})
    try:
        (url,) = run.wait_listening(1).values()
        yield url
        code, _out, err = run.stop(signal.SIGTERM, timeout=20)
        assert code == 0, err
        assert "Traceback" not in err  # nothing blew up while it was being fuzzed
    finally:
        run.kill()


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> Any:
    # the hardening really is on: no token, no figures
    assert httpx.get(f"{base_url}/metrics", timeout=5).status_code == 401
    assert httpx.get(f"{base_url}/metrics", headers=AUTH, timeout=5).status_code == 200
    schema = schemathesis.openapi.from_url(
        f"{base_url}/schema/openapi.json", timeout=10, headers=AUTH
    )
    schema.config.update(base_url=base_url)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    if case.path in SPEC_ROUTES:
        case.call_and_validate(headers=AUTH, timeout=10)  # every default check
    else:
        case.call_and_validate(headers=AUTH, checks=[not_a_server_error], timeout=10)

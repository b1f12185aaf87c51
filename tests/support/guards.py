"""The seeded app behind the HTTP guards (CORS, rate limits, bearer auth) on a real server,
and what the guard tests send it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import httpx

from streammetrics.http.app import create_app
from streammetrics.http.hardening import hardening
from streammetrics.http.settings import AuthSettings, CorsSettings, RateLimitSettings
from tests.support.http_app import FakeClock, running, seed, service_for

ORIGIN: Final = "https://dash.example"
TOKEN: Final = "tok-Aa0123456789-first"
TOKEN2: Final = "tok-Bb9876543210-second"
#: the variable the ``tokens_env`` fixture puts TOKEN and TOKEN2 in
ENV: Final = "STREAMMETRICS_TEST_TOKENS"
#: one MetricsEndpoint; ``{extra}`` is more of its config (its ``rate_limit``, ``auth``, ...)
BLUEPRINT = """
system:
  name: s
  components:
    - name: m
      type: MetricsEndpoint
      config:
        port: 0
        {extra}
"""


@asynccontextmanager
async def served(
    clock: FakeClock,
    *,
    cors: CorsSettings | None = None,
    rate_limit: RateLimitSettings | None = None,
    auth: AuthSettings | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        service_for(seed(clock), clock),
        **hardening(
            cors=cors, rate_limit=rate_limit, auth=auth, component="m", clock=clock.monotonic
        ),
    )
    async with running(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

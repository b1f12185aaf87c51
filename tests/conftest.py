"""The fixtures the tests share (the helpers are in ``tests/support/``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from streammetrics.views.tick_cache import TickCache
from tests.support.guards import ENV, TOKEN, TOKEN2
from tests.support.http_app import FakeClock, seed, service_for
from tests.support.servers import RedisServer, redis_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    """Monotonic and wall time that move only when the test says so."""
    return FakeClock()


@pytest.fixture
def service(clock: FakeClock) -> TickCache:
    """The seeded system's tick cache on ``clock`` (what ``http_app.seed`` folds)."""
    return service_for(seed(clock), clock)


@pytest.fixture
def tokens_env() -> Iterator[str]:
    """The name of an environment variable holding two bearer tokens, for the test's time."""
    os.environ[ENV] = f"{TOKEN}, {TOKEN2}"
    try:
        yield ENV
    finally:
        del os.environ[ENV]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server, shared by the tests of one module."""
    with redis_server(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture
def stream() -> str:
    """A stream name of the test's own: the tests of a module share their redis-server."""
    return f"events-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    """A client of ``server``."""
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()

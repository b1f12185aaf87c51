"""``GET /dashboard``: one self-contained page (nothing fetched from elsewhere), switched off
with its feed, and open under auth while its feed needs the token."""

from __future__ import annotations

import re

import httpx
import pytest

import streammetrics
from streammetrics import MetricsEndpoint

pytestmark = pytest.mark.anyio


async def test_dashboard_page_is_self_contained() -> None:
    async with (
        streammetrics.serve(name="m", port=0) as ep,
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/dashboard")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["content-type"] == "text/html; charset=utf-8"  # charset once
        assert r.headers.get_list("content-type") == ["text/html; charset=utf-8"]
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert "'sha256-" in csp and "unsafe-inline" not in csp
        html = r.text
        # Nothing from elsewhere: no absolute URL to load, no external script or style.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
        assert "<script src" not in html and "@import" not in html
        listed = (await client.get("/")).json()["endpoints"]
        assert "/dashboard" in listed and "/stream" in listed


async def test_dashboard_can_be_turned_off() -> None:
    ep = MetricsEndpoint(name="m", port=0, dashboard={"enabled": False})
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        assert (await client.get("/dashboard")).status_code == 404
        assert (await client.get("/stream")).status_code == 404
        assert "/dashboard" not in (await client.get("/")).json()["endpoints"]


async def test_with_auth_the_page_is_open_and_the_stream_needs_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SM_TEST_TOKENS", "s3cret-token-0123456789")
    ep = MetricsEndpoint(name="m", port=0, auth={"bearer_tokens_env": "SM_TEST_TOKENS"})
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        assert (await client.get("/dashboard")).status_code == 200  # no figures in it
        r = await client.get("/stream")
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
        async with client.stream(
            "GET", "/stream", headers={"authorization": "Bearer s3cret-token-0123456789"}
        ) as ok:
            assert ok.status_code == 200

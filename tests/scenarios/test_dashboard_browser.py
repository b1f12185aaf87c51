"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``) against a running ``streammetrics demo`` and a hundred-
component example: it renders, its numbers move, it logs no errors, it fetches nothing
from elsewhere, it says so when the endpoint goes away, and it reconnects."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import playwright.sync_api as playwright_sync
import pytest

from tests.support.paths import ROOT
from tests.support.process import Spawned
from tests.support.servers import free_offset
from tests.support.tools import need

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_COMPONENTS = {
    "source",
    "public_api",
    "enrich",
    "router",
    "windows",
    "orders_store",
    "window_store",
    "system_metrics",
}


class Proc(Spawned):
    """A subprocess printing ``... listening on URL`` / ``metrics on URL``; stopped with
    SIGTERM (then killed) however the test ends."""

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, *args], cwd=ROOT)

    def url(self, pattern: str, timeout: float = 20) -> str:
        """The first group of the first stdout line matching ``pattern``."""
        return self.wait_for(pattern, timeout)[1]

    def end(self) -> int:
        """SIGTERM, then the exit code (killed past 20 s)."""
        return self.stop(signal.SIGTERM, 20)[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = need("chromium")  # Debian's build: a browser download is not to be had here
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page with its console errors, page errors and every URL it asked for."""

    def __init__(self, browser: Any, origin: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.origin = origin

    def foreign(self) -> list[str]:
        return [u for u in self.urls if not u.startswith(self.origin + "/")]

    def close(self) -> None:
        self.context.close()


def _cell(page: Any, component: str, cls: str) -> str:
    text: str = page.locator(f"tr[data-component='{component}'] td.{cls}").inner_text()
    return text


def test_dashboard_renders_the_demo_live_and_survives_a_restart(
    browser: Any, tmp_path: Path
) -> None:
    offset = free_offset([8000, 9000])
    args = ("-m", "streammetrics.cli", "demo", "--port-offset", str(offset))
    demo = Proc(*args)
    restarted: Proc | None = None
    try:
        url = demo.url(r"system_metrics \(MetricsEndpoint\) listening on (\S+)")
        w = Watched(browser, url)
        page = w.page
        page.goto(url + "/dashboard")
        # Every component of the demo gets a row.
        page.wait_for_function(
            "n => document.querySelectorAll('#comps tr[data-component]').length >= n",
            arg=len(DEMO_COMPONENTS),
            timeout=10_000,
        )
        rows = set(page.eval_on_selector_all("#comps tr", "rs => rs.map(r => r.dataset.component)"))
        assert rows == DEMO_COMPONENTS
        assert page.locator("#conn").inner_text().startswith("live")
        assert page.locator("#status").inner_text().lower() in {"healthy", "degraded", "unhealthy"}
        assert page.locator("#name").inner_text() == "system_metrics"
        # Numbers move between two reads (one snapshot a second).
        first = _cell(page, "enrich", "processed")
        page.wait_for_function(
            "v => document.querySelector(\"tr[data-component='enrich'] td.processed\")"
            ".textContent !== v",
            arg=first,
            timeout=5_000,
        )
        second = _cell(page, "enrich", "processed")
        assert int(second.replace(",", "")) > int(first.replace(",", ""))
        # Sparklines were drawn: the canvas holds non-transparent pixels (a line grows
        # with each snapshot, so on a loaded machine the first ones may still be short).
        drawn_pixels = """() => { const c = document.querySelector(
                   "tr[data-component='enrich'] canvas");
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"""
        page.wait_for_function(f"() => ({drawn_pixels})() > 10", timeout=10_000)
        drawn = page.evaluate(drawn_pixels)
        assert drawn > 10
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert w.errors == [], w.errors
        assert w.foreign() == [], w.foreign()

        # The endpoint goes away: the page says so, prominently, and dims the figures.
        assert demo.end() == 0
        page.wait_for_selector("#banner.show", timeout=10_000)
        banner = page.locator("#banner").inner_text()
        assert "shutting down" in banner or "unreachable" in banner, banner
        page.wait_for_function(
            "() => /unreachable/.test(document.querySelector('#banner').textContent)",
            timeout=10_000,
        )
        assert page.evaluate("document.body.classList.contains('stale')")
        page.screenshot(path=str(tmp_path / "dashboard-unreachable.png"), full_page=True)

        # It comes back on the same port: the page reconnects by itself.
        restarted = Proc(*args)
        restarted.url(r"system_metrics \(MetricsEndpoint\) listening on (\S+)")
        page.wait_for_function(
            "() => !document.querySelector('#banner').classList.contains('show')",
            timeout=20_000,
        )
        assert page.locator("#conn").inner_text().startswith("live")
        w.close()
    finally:
        demo.end()
        if restarted is not None:
            assert restarted.end() == 0


def test_dashboard_with_a_hundred_components_scrolls_and_shows_the_trouble(
    browser: Any, tmp_path: Path
) -> None:
    ex = Proc(
        str(ROOT / "examples" / "many_components.py"),
        "--port",
        "0",
        "--components",
        "100",
        "--tick",
        "0.5",
    )
    try:
        url = ex.url(r"metrics on (\S+)")
        w = Watched(browser, url)
        page = w.page
        # Long tasks (> 50 ms on the main thread) are what a freezing page is made of.
        page.add_init_script(
            """window.__long = [];
               new PerformanceObserver(l => l.getEntries().forEach(
                 e => window.__long.push(e.duration))).observe({entryTypes: ['longtask']});"""
        )
        page.goto(url + "/dashboard")
        page.wait_for_function(
            "() => document.querySelectorAll('#comps tr[data-component]').length === 101",
            timeout=10_000,
        )
        # Problems first: the failed, breaker-open and erroring components lead the table.
        trouble = ["stage_007", "stage_017", "stage_042", "stage_003"]  # by health score
        page.wait_for_function(
            """want => [...document.querySelectorAll('#comps tr')].slice(0, 4)
                 .map(r => r.dataset.component).join() === want.join()""",
            arg=trouble,
            timeout=10_000,
        )
        page.wait_for_selector("#alerts li", timeout=10_000)
        alerts = page.locator("#alerts").inner_text()
        assert "CircuitBreakerOpen" in alerts and "stage_042" in alerts
        assert "ComponentDown" in alerts and "stage_007" in alerts
        assert "stage_042" in page.locator("#breakers").inner_text()
        # The table scrolls inside its panel; the last row can be reached and drawn.
        scroll = page.locator("#comp-scroll")
        assert page.evaluate(
            "() => { const s = document.querySelector('#comp-scroll');"
            " return s.scrollHeight > s.clientHeight; }"
        )
        scroll.evaluate("s => { s.scrollTop = s.scrollHeight; }")
        last = page.locator("#comps tr").last
        last.wait_for(state="visible")
        # The filter narrows the table.
        page.fill("#filter", "stage_09")
        page.wait_for_function(
            "() => document.querySelectorAll('#comps tr').length === 10", timeout=5_000
        )
        page.fill("#filter", "")
        # Several snapshots later the page still answers at once and never froze.
        t0 = time.monotonic()
        page.wait_for_function("() => window.__long !== undefined")
        seen = page.evaluate("() => document.querySelector('#conn').textContent")
        page.wait_for_function(
            "v => document.querySelector('#conn').textContent !== v", arg=seen, timeout=5_000
        )
        assert time.monotonic() - t0 < 5
        longest = max(page.evaluate("() => window.__long"), default=0.0)
        assert longest < 500, f"main thread blocked for {longest:.0f} ms"
        page.screenshot(path=str(tmp_path / "dashboard-100.png"))
        assert w.errors == [], w.errors
        assert w.foreign() == []
        w.close()
    finally:
        ex.end()


#: An endpoint built to stress the table: a long name, a long last error, every breaker
#: state next to components without one, and a burst of errors at the start only (in
#: the 60 s window health is judged over, gone from a 10 s one ten seconds later).
WIDE_SYSTEM = """
import asyncio
import streammetrics
from streammetrics import Event

LONG_NAME = "orders_enrichment_with_a_rather_long_component_name_for_the_table"
LONG_ERROR = "ValueError: " + "the upstream answered something unexpected; " * 8 + "x" * 120


async def main():
    async with streammetrics.serve(name="wide_metrics", port=0, tick_s=0.25) as ep:
        bus = ep.ctx.bus
        plain = [ep.probe(f"stage_{i:02d}") for i in range(12)]
        long_one, flaky, guarded = ep.probe(LONG_NAME), ep.probe("flaky"), ep.probe("guarded")
        bus.publish([
            Event("guarded", "breaker", detail="half_open"),
            Event("tripped", "breaker", detail="open"),
            Event("recovered", "breaker", detail="open"),
            Event("recovered", "breaker", detail="closed"),
        ])
        flaky.processed(50, latency=0.004)
        flaky.error(50, detail="TimeoutError: flaky upstream")
        long_one.error(1, detail=LONG_ERROR)
        print(f"metrics on {ep.url}", flush=True)
        while True:
            for i, p in enumerate(plain):
                p.processed(1000 * (i + 1), latency=0.002 * (i + 1))
            long_one.processed(12345, latency=0.25)
            guarded.processed(3, latency=1.5)
            await asyncio.sleep(0.1)


asyncio.run(main())
"""
LONG_NAME = "orders_enrichment_with_a_rather_long_component_name_for_the_table"


def _overflow(page: Any) -> dict[str, list[int]]:
    """scrollWidth and clientWidth of the component card, its scroller and the page."""
    found: dict[str, list[int]] = page.evaluate(
        """() => Object.fromEntries([['card', '#comp-card'], ['scroll', '#comp-scroll'],
             ['page', 'html']].map(([k, sel]) => {
               const el = document.querySelector(sel);
               return [k, [el.scrollWidth, el.clientWidth]]; }))"""
    )
    return found


def _cell_text(page: Any, component: str, index: int) -> str:
    text: str = page.locator(f"tr[data-component='{component}'] td").nth(index).inner_text()
    return text


def test_component_table_fits_its_card_labels_its_windows_and_breakers(
    browser: Any, tmp_path: Path
) -> None:
    ex = Proc("-c", WIDE_SYSTEM)
    try:
        url = ex.url(r"metrics on (\S+)")
        w = Watched(browser, url)
        page = w.page
        page.goto(url + "/dashboard")
        page.wait_for_function(
            "() => document.querySelectorAll('#comps tr[data-component]').length === 18",
            timeout=10_000,
        )
        # By default the columns cover the window health is judged over, and say so.
        assert page.locator("#window").input_value() == "60s"
        heads = page.locator("thead th").all_inner_texts()
        assert [h.split("\n") for h in heads[3:6]] == [
            ["items/s", "· 60 s"],
            ["error rate", "· 60 s"],
            ["p99", "· 60 s"],
        ]
        assert page.locator("#reasons-win").inner_text() == "judged over 60 s"
        # The error rate in flaky's row is the figure its deduction names.
        assert _cell_text(page, "flaky", 4) == "50.0%"
        assert "flaky: error_rate 0.5 > budget 0.05" in page.locator("#reasons").inner_text()

        # A breaker only where there is one.
        pills = {
            name: _cell_text(page, name, 2)
            for name in ("stage_00", "flaky", LONG_NAME, "guarded", "tripped", "recovered")
        }
        assert pills == {
            "stage_00": "\u2014",
            "flaky": "\u2014",
            LONG_NAME: "\u2014",
            "guarded": "half-open",
            "tripped": "open",
            "recovered": "closed",
        }
        assert page.locator("#breaker-count").inner_text() == "2 of 3 not closed"
        listed = page.locator("#breakers").inner_text()
        assert "guarded" in listed and "tripped" in listed and "recovered" not in listed

        # Fits its card at the widths where it used to scroll sideways; the cut texts
        # keep their whole value in the title.
        for width in (1000, 1200, 1400):
            page.set_viewport_size({"width": width, "height": 900})
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(null)))")
            sizes = _overflow(page)
            for part, (scroll_w, client_w) in sizes.items():
                assert scroll_w <= client_w, (width, part, sizes)
            card = page.locator("#comp-card").bounding_box()
            err = page.locator(f"tr[data-component='{LONG_NAME}'] td.err").bounding_box()
            assert err["x"] + err["width"] <= card["x"] + card["width"] + 0.5, (width, err)
            page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"))
        title = page.locator(f"tr[data-component='{LONG_NAME}'] td.err").get_attribute("title")
        assert title is not None
        assert title.startswith("ValueError: the upstream") and title.endswith("x" * 120)
        name_cell = page.locator(f"tr[data-component='{LONG_NAME}'] td.name")
        assert (name_cell.get_attribute("title") or "").split("\n")[0] == LONG_NAME

        # Pick 10 s: the columns say so and, once the burst is 10 s old, show no errors,
        # while the deduction stays, labelled with the 60 s it is judged over.
        page.select_option("#window", "10s")
        page.wait_for_function(
            "() => document.querySelector('#th-err .cwin').textContent === '\u00b7 10 s'",
            timeout=5_000,
        )
        assert page.locator("#th-err").get_attribute("title") == (
            "errors / (processed + errors) over the last 10 s"
        )
        page.wait_for_function(
            """() => document.querySelector("tr[data-component='flaky'] td:nth-child(5)")
                 .textContent.startsWith('0%')""",
            timeout=15_000,
        )
        assert "flaky: error_rate 0.5 > budget" in page.locator("#reasons").inner_text()
        assert page.locator("#reasons-win").inner_text() == "judged over 60 s"
        assert page.locator("#sys-err + span").inner_text() == "error rate · 60 s"
        page.screenshot(path=str(tmp_path / "dashboard-10s.png"))
        # The choice survives a reload of the page.
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('#th-err .cwin').textContent === '\u00b7 10 s'",
            timeout=10_000,
        )
        assert page.locator("#window").input_value() == "10s"
        assert w.errors == [], w.errors
        assert w.foreign() == [], w.foreign()
        w.close()
    finally:
        ex.end()

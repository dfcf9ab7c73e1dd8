"""The dashboard in a real browser: Debian's Chromium driven by Python Playwright (no `playwright install`):
log in, see a listener appear and a request arrive live, open its detail, replay it, see the replay arrive;
see since when the listener is online, and a relayed connection's bytes grow while it is open."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.protocol.sas import create_token
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.management.test_inspector import Recorder, inspected, post

__all__ = ["inspected"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Python Playwright is not installed (hyco[dev])"
)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (scripts/test installs it as root)",
)
# Flags that keep Chromium from reaching out to the network at start (this machine's network is closed).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MS = int(TIMEOUT * 1000)
#: A time of day as the page shows it (toLocaleTimeString), and an age ("12 s", "1 min 3 s").
CLOCK_TIME = re.compile(r"\d{1,2}:\d{2}:\d{2}")
AGE = re.compile(r"^\d+ (s|min \d+ s)$")


async def test_login_live_listener_request_detail_replay(inspected: Relay, session, tmp_path: Path):
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(MS)
        await page.goto(f"{inspected.http_url}/$dashboard")

        # An expired token is refused with a clear message, and nothing else happens.
        expired = create_token("http://127.0.0.1/", KEY_NAME, KEY, int(time.time()) - 60)
        await page.fill("input[name=token]", expired)
        await page.click("button[type=submit]")
        await playwright_api.expect(page.locator("#login-error")).to_contain_text("expired")
        assert await page.locator("#main").is_hidden()

        await page.fill("input[name=key]", KEY)
        await page.click("button[type=submit]")
        await playwright_api.expect(page.locator("#state")).to_have_text("live")
        assert KEY not in await page.content()

        recorder = Recorder()
        tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
        async with HybridConnectionListener(f"{inspected.url}/web", tp, request_handler=recorder) as listener:
            await playwright_api.expect(page.locator("#listeners tbody")).to_contain_text("web")
            assert await post(session, inspected, "web/items", b'{"name": "x", "n": [1, 2]}') == 201
            rows = page.locator("#requests tbody tr")
            await playwright_api.expect(rows).to_have_count(1)
            await playwright_api.expect(rows.first).to_contain_text("/web/items")
            await rows.first.click()
            await playwright_api.expect(page.locator("#request-body")).to_contain_text('"name": "x"')
            await playwright_api.expect(page.locator("#request-head")).to_contain_text(
                "Authorization: [redacted]"
            )
            await playwright_api.expect(page.locator("#curl")).to_contain_text("curl -X POST")
            await playwright_api.expect(page.locator("#curl")).to_contain_text(
                """ --data-binary '{"name": "x", "n": [1, 2]}'"""
            )
            await page.click("#replay")
            await playwright_api.expect(page.locator("#detail-message")).to_have_text("replayed: 201")
            assert await asyncio.wait_for(recorder.bodies.get(), TIMEOUT) == b'{"name": "x", "n": [1, 2]}'
            assert await asyncio.wait_for(recorder.bodies.get(), TIMEOUT) == b'{"name": "x", "n": [1, 2]}'
            await playwright_api.expect(rows).to_have_count(2)

            # The listener's row says since when it is online, and for how long.
            listener_cells = page.locator("#listeners tbody tr").first.locator("td")
            await playwright_api.expect(listener_cells.nth(4)).to_have_text(CLOCK_TIME)
            await playwright_api.expect(listener_cells.nth(5)).to_have_text(AGE)

            # A relayed WebSocket connection appears with its bytes each way, updated while it stays open.
            client = HybridConnectionClient(f"{inspected.url}/web", tp)
            sender, accepted = await asyncio.gather(client.connect(), listener.accept())
            assert accepted is not None
            connection = page.locator("#connections tbody tr")
            cells = connection.first.locator("td")
            await sender.write(b"i" * 5000)
            assert await asyncio.wait_for(accepted.readexactly(5000), TIMEOUT)
            await accepted.write(b"o" * 3000)
            assert await asyncio.wait_for(sender.readexactly(3000), TIMEOUT)
            await playwright_api.expect(connection).to_have_count(1)
            await playwright_api.expect(cells.nth(0)).to_have_text("web")
            await playwright_api.expect(cells.nth(3)).to_have_text(CLOCK_TIME)
            await playwright_api.expect(cells.nth(4)).to_have_text(AGE)
            await playwright_api.expect(cells.nth(5)).to_have_text("4.9 KiB")
            await playwright_api.expect(cells.nth(6)).to_have_text("2.9 KiB")
            await sender.write(b"i" * 5000)
            assert await asyncio.wait_for(accepted.readexactly(5000), TIMEOUT)
            await playwright_api.expect(cells.nth(5)).to_have_text("9.8 KiB")
            shot = os.environ.get("HYCO_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
            await page.screenshot(path=shot, full_page=True)
            # Both ends close at once (each close waits for the other side's Close); the row goes.
            await asyncio.gather(sender.close(), accepted.close())
            await playwright_api.expect(connection).to_have_count(0)
        await browser.close()

"""Smoke test of the browser harness (tests/browser.py): Debian chromium, started headless by
Playwright, loads a page from a local server, runs its JavaScript on a click, and leaves a
screenshot a person can look at."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import pytest
from playwright.sync_api import expect

from tests.browser import ACTION_TIMEOUT_MS, artifact_dir, launch_chromium, new_page, serve_pages

pytestmark = pytest.mark.e2e

PAGE = b"""<!doctype html>
<html>
<head><meta charset="utf-8"><title>trackhouse browser smoke</title></head>
<body style="font: 24px sans-serif; margin: 40px">
  <h1>trackhouse browser smoke</h1>
  <button id="go">Click me</button>
  <p id="status">waiting</p>
  <script>
    document.getElementById("go").addEventListener("click", async () => {
      const reply = await fetch("/ping");
      document.getElementById("status").textContent = "clicked: " + (await reply.text());
    });
  </script>
</body>
</html>
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            self._reply(PAGE, "text/html; charset=utf-8")
        elif self.path == "/ping":
            self._reply(b"pong", "text/plain")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean


@pytest.fixture
def page_url() -> Iterator[str]:
    with serve_pages(_Handler) as origin:
        yield origin + "/"


def test_click_changes_text_and_screenshot(page_url: str) -> None:
    shot = artifact_dir() / "browser-smoke.png"
    shot.unlink(missing_ok=True)
    with launch_chromium() as browser:
        page = new_page(browser)
        page.goto(page_url)
        status = page.locator("#status")
        expect(status).to_have_text("waiting", timeout=ACTION_TIMEOUT_MS)
        page.click("#go")
        expect(status).to_have_text("clicked: pong", timeout=ACTION_TIMEOUT_MS)
        page.screenshot(path=shot, full_page=True)

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR comes first in every PNG
    assert width == 800
    assert height >= 600

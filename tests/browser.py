"""Headless Debian chromium, driven by Playwright, for tests that look at a page as a person would.

The browser is the one scripts/install puts at /usr/bin/chromium with apt, never one that
`playwright install` downloads (this machine reaches package registries only). A missing
chromium fails the test rather than skipping it: the install script is supposed to provide it,
so its absence is a broken setup, not an optional feature. Every wait is bounded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]

# Starting chromium on a busy 2-core machine takes a few seconds; 30 s means "it is not coming".
LAUNCH_TIMEOUT_MS = 30_000
# Each click, fill, wait_for or expect on a page of ours; pages are local and tiny.
ACTION_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 15_000

CHROMIUM_ARGS = [
    # Tests run as root in a container (CI does), where chromium's sandbox cannot start.
    "--no-sandbox",
    # No GPU here; software rendering is all a screenshot needs.
    "--disable-gpu",
    # No update checks, field trials or other calls home: the network is loopback-only.
    "--disable-background-networking",
    # Containers often mount a small /dev/shm; chromium then crashes when rendering.
    "--disable-dev-shm-usage",
]


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Yield a headless chromium Browser; it and the Playwright driver are closed on exit."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: browser tests use Debian's chromium. "
            "Run scripts/install (it apt-get installs chromium); never `playwright install`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser) -> Page:
    """A page in a fresh context whose actions and navigations have bounded timeouts."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return context.new_page()


def artifact_dir() -> Path:
    """Where tests leave screenshots: $TRACKHOUSE_TEST_ARTIFACTS, else <repo>/test-artifacts."""
    configured = os.environ.get("TRACKHOUSE_TEST_ARTIFACTS")
    path = Path(configured) if configured else REPO / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def serve_pages(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` serving on a free loopback port in a thread: its origin, for a block.

    Port 0: the OS picks the port, so there is no race with other servers."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)

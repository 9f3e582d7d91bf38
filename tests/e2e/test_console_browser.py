"""The console (/console) in headless Debian chromium, as a person would use it.

One real server with two projects (A and B) on loopback; events come from the official
`mixpanel` package from PyPI, unmodified, pointed at our /track. The page signs in with
a project's API secret, shows events arriving on its live stream, and updates its chart,
top events and schema; it must never show another project's events, and must show
hostile event data as text. A screenshot is left in artifact_dir() for a person to look at.

Every wait is an expect(...)/wait_for with a bounded timeout; durations are printed,
never asserted.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import mixpanel
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import artifact_dir, launch_chromium, new_page
from tests.serverproc import Server, cli, request

pytestmark = pytest.mark.e2e

A_ID, A_NAME, A_TOKEN, A_SECRET = 101, "alpha", "console-token-a", "console-secret-a"
B_ID, B_NAME, B_TOKEN, B_SECRET = 202, "beta", "console-token-b", "console-secret-b"

# The page refreshes its overview every 5 s and its schema every 10 s (and ~1.2 s after
# streamed events); 15 s covers a refresh that just missed the store on a busy machine.
UPDATE_TIMEOUT_MS = 15_000
UI_TIMEOUT_MS = 10_000

COOKIE = "trackhouse_session"
OpenPage = Callable[[], Page]
_DIGITS = re.compile(r"^\d+$")

# Runs before console.js on every page load: records when each streamed event's row
# appears (so latency is measured in the page, not by polling), keeps every EventSource
# the page opens (to check that signing out closes the stream), and counts CSP blocks.
INIT_SCRIPT = """
(() => {
  window.__arrivals = {};
  window.__sources = [];
  window.__csp = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__sources.push(this); }
  };
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__csp.push(e.effectiveDirective + " " + (e.blockedURI || ""));
  });
  new MutationObserver((records) => {
    const now = Date.now();
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1 && node.matches("li.stream-event")) {
          const name = node.dataset.event;
          if (!(name in window.__arrivals)) window.__arrivals[name] = now;
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""


def css(value: str) -> str:
    """A CSS string literal for an attribute selector ([data-event=...])."""
    return json.dumps(value, ensure_ascii=False)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("console-browser") / "data"
    for project_id, name, token, secret in (
        (A_ID, A_NAME, A_TOKEN, A_SECRET),
        (B_ID, B_NAME, B_TOKEN, B_SECRET),
    ):
        create = ["projects", "create", name, "--token", token, "--secret", secret]
        cli(data_dir, *create, "--id", str(project_id))
    server = Server(data_dir).start()
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Pages in fresh contexts (own cookie jars), each with INIT_SCRIPT; all closed after."""
    pages: list[Page] = []

    def make() -> Page:
        page = new_page(browser)
        page.context.add_init_script(INIT_SCRIPT)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.context.close()


# -- helpers ----------------------------------------------------------------------------
def track(server: Server, token: str, name: str, properties: dict[str, Any]) -> tuple[int, int]:
    """Send one event with the official SDK; the wall-clock ms before and after the call."""
    consumer = mixpanel.Consumer(events_url=f"{server.url}/track", request_timeout=10)
    mp = mixpanel.Mixpanel(token, consumer=consumer)
    before = int(time.time() * 1000)
    mp.track("console-user", name, properties)
    return before, int(time.time() * 1000)


def goto_console(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/console")


def sign_in(page: Page, secret: str) -> None:
    page.fill("#secret", secret)
    page.click("#signin button[type=submit]")


def expect_signed_in(page: Page, project_id: int, name: str) -> None:
    expect(page.locator("#signin-panel")).to_be_hidden(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#console")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#signout")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#project")).to_have_text(f"project {project_id} · {name}")
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=UI_TIMEOUT_MS
    )
    # The first overview and schema have been drawn.
    expect(page.locator("#chart")).to_have_attribute("data-total", _DIGITS, timeout=UI_TIMEOUT_MS)
    expect(page.locator("#schema > *").first).to_be_attached(timeout=UI_TIMEOUT_MS)


def expect_signed_out(page: Page) -> None:
    expect(page.locator("#signin-panel")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#signout")).to_be_hidden(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#connection")).to_have_attribute("data-state", "idle")
    expect(page.locator("#project")).to_have_text("")


def session_cookie(page: Page) -> str | None:
    for cookie in page.context.cookies():
        if cookie.get("name") == COOKIE and cookie.get("value"):
            return cookie.get("value")
    return None


def stream_row(page: Page, name: str) -> Locator:
    return page.locator(f"#stream li.stream-event[data-event={css(name)}]")


def top_row(page: Page, name: str) -> Locator:
    return page.locator(f"#top-events tbody tr[data-event={css(name)}]")


def schema_entry(page: Page, name: str) -> Locator:
    return page.locator(f"#schema details[data-event={css(name)}]")


def arrival_ms(page: Page, name: str) -> int:
    value = page.evaluate("(name) => window.__arrivals[name]", name)
    assert isinstance(value, int), (name, value)
    return value


def expect_everywhere(page: Page, name: str, count: int = 1) -> None:
    """The event is on the stream, in the top events and in the schema."""
    expect(stream_row(page, name)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    expect(top_row(page, name)).to_have_attribute(
        "data-count", str(count), timeout=UPDATE_TIMEOUT_MS
    )
    expect(schema_entry(page, name)).to_have_attribute(
        "data-count", str(count), timeout=UPDATE_TIMEOUT_MS
    )


def assert_nowhere(page: Page, name: str) -> None:
    """Not on the stream, in the top events, in the schema, nor anywhere in the page."""
    assert stream_row(page, name).count() == 0
    assert top_row(page, name).count() == 0
    assert schema_entry(page, name).count() == 0
    assert name not in page.content()


# -- the tests ----------------------------------------------------------------------------
def test_sign_in_then_watch_an_event_arrive(server: Server, open_page: OpenPage) -> None:
    server.wait_loaded()
    page = open_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    goto_console(page, server)

    # Signed out: the sign-in form, no stream.
    expect_signed_out(page)
    expect(page.locator("#secret")).to_be_focused()

    # A wrong secret, and the project's public token, are both refused.
    for wrong in ("not-the-secret", A_TOKEN):
        sign_in(page, wrong)
        expect(page.locator("#signin-error")).to_have_text(
            "Invalid credentials: use the project's API secret", timeout=UI_TIMEOUT_MS
        )
        expect_signed_out(page)
        assert session_cookie(page) is None
        page.evaluate("() => { document.getElementById('signin-error').textContent = ''; }")
    assert page.evaluate("() => window.__sources.length") == 0

    signed_in_at = time.monotonic()
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)
    print(f"\nsign-in to a live stream and a drawn page: {time.monotonic() - signed_in_at:.2f}s")
    expect(page.locator("#secret")).to_have_value("")
    expect(page.locator("#signin-error")).to_have_text("")
    assert session_cookie(page) is not None

    chart = page.locator("#chart")
    expect(chart.locator("rect")).to_have_count(60)
    total_before = int(chart.get_attribute("data-total") or "")
    expect(page.locator("#total")).to_have_text(f"{total_before:,}")
    schema_before = page.locator("#schema details").evaluate_all(
        "(all) => all.map((d) => [d.dataset.event, d.dataset.count])"
    )

    name = unique("Console watched")
    properties = {"plan": "pro", "seats": 3, "beta": True, "tags": ["a", "b"]}
    sent_ms, returned_ms = track(server, A_TOKEN, name, properties)

    row = stream_row(page, name)
    expect(row).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    appeared_ms = arrival_ms(page, name)
    print(
        f"stream: the event appeared {appeared_ms - returned_ms} ms after the SDK call "
        f"returned ({appeared_ms - sent_ms} ms after it was made; "
        f"the call took {returned_ms - sent_ms} ms)"
    )
    expect(row.locator(".name")).to_have_text(name)
    expect(row).to_contain_text("track")
    expect(row).to_contain_text("console-user")
    shown = json.loads(row.locator("pre").inner_text())
    assert {key: shown[key] for key in properties} == properties
    assert shown["mp_lib"] == "python"
    assert row.get_attribute("data-insert-id") == shown["$insert_id"]

    # The chart: exactly one more event, counted in its minute (the last bar, unless the
    # minute turned over between the call and the page's refresh).
    expect(chart).to_have_attribute("data-total", str(total_before + 1), timeout=UPDATE_TIMEOUT_MS)
    expect(page.locator("#total")).to_have_text(f"{total_before + 1:,}")
    minutes = sorted({ms // 60_000 * 60_000 for ms in (sent_ms, returned_ms)})
    counts = {
        t: int(chart.locator(f'rect[data-t="{t}"]').get_attribute("data-count") or "0")
        for t in minutes
        if chart.locator(f'rect[data-t="{t}"]').count()
    }
    assert sum(counts.values()) >= 1, counts
    now_bar = chart.locator("rect.now")
    expect(now_bar).to_have_count(1)
    assert chart.locator("rect").last.get_attribute("class") == "now"
    if int(now_bar.get_attribute("data-t") or "0") in minutes:
        assert int(now_bar.get_attribute("data-count") or "0") >= 1
    else:
        print("the minute turned over: the event is counted in the bar before the last")

    # Top events and schema.
    expect(top_row(page, name)).to_have_attribute("data-count", "1", timeout=UPDATE_TIMEOUT_MS)
    expect(top_row(page, name).locator("td").first).to_have_text(name)
    entry = schema_entry(page, name)
    expect(entry).to_have_attribute("data-count", "1", timeout=UPDATE_TIMEOUT_MS)
    schema_after = page.locator("#schema details").evaluate_all(
        "(all) => all.map((d) => [d.dataset.event, d.dataset.count])"
    )
    assert sorted(schema_after) == sorted([*schema_before, [name, "1"]])

    entry.locator("summary").click()
    expect(entry).to_have_attribute("open", "")
    expected_types = {
        "plan": "string",
        "seats": "number",
        "beta": "boolean",
        "tags": "list",
        "mp_lib": "string",
        "distinct_id": "string",
        "time": "number",
    }
    for prop, kind in expected_types.items():
        prop_row = entry.locator(f"tr[data-property={css(prop)}]")
        expect(prop_row).to_be_visible(timeout=UI_TIMEOUT_MS)
        types = prop_row.locator("span.type")
        expect(types).to_have_count(1)
        expect(types).to_have_attribute("data-type", kind)
        expect(types).to_have_text(f"{kind} 1")

    shot = artifact_dir() / "console.png"
    shot.unlink(missing_ok=True)
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280, width
    assert height >= 900, height
    assert len(data) > 20_000, len(data)
    print(f"screenshot: {shot} ({width}x{height}, {len(data):,} bytes)")


def test_another_projects_events_never_reach_the_page(server: Server, open_page: OpenPage) -> None:
    page_a = open_page()
    goto_console(page_a, server)
    sign_in(page_a, A_SECRET)
    expect_signed_in(page_a, A_ID, A_NAME)

    b_first = unique("Only for B")
    track(server, B_TOKEN, b_first, {"secret_of_b": "b-value"})
    server.wait_loaded()  # in the store before A's later event is sent
    a_later = unique("A after B")
    track(server, A_TOKEN, a_later, {"n": 1})

    # A's page has streamed, and refreshed its overview and schema, after B's event was
    # sent and stored: its absence now means it was kept out, not that it is still coming.
    expect_everywhere(page_a, a_later)
    assert_nowhere(page_a, b_first)
    assert "secret_of_b" not in page_a.content()
    overview = page_a.request.get(f"{server.url}/console/api/overview").json()
    assert overview["project"]["id"] == A_ID
    assert b_first not in {t["event"] for t in overview["top_events"]}
    schema = page_a.request.get(f"{server.url}/console/api/schema").json()
    assert b_first not in {e["event"] for e in schema["events"]}

    # B signs in in its own context: B's stored event, none of A's.
    page_b = open_page()
    goto_console(page_b, server)
    sign_in(page_b, B_SECRET)
    expect_signed_in(page_b, B_ID, B_NAME)
    expect(top_row(page_b, b_first)).to_have_attribute("data-count", "1")
    expect(schema_entry(page_b, b_first)).to_have_attribute("data-count", "1")
    assert page_b.locator("#schema details").evaluate_all(
        "(all) => all.map((d) => d.dataset.event)"
    ) == [b_first]
    assert_nowhere(page_b, a_later)
    assert session_cookie(page_a) != session_cookie(page_b)

    # Both watching live: each stream gets only its own project's events.
    b_live = unique("B live")
    track(server, B_TOKEN, b_live, {})
    expect(stream_row(page_b, b_live)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    a_live = unique("A live")
    track(server, A_TOKEN, a_live, {})
    expect(stream_row(page_a, a_live)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    b_last = unique("B last")
    track(server, B_TOKEN, b_last, {})
    expect(stream_row(page_b, b_last)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)

    a_names = page_a.locator("#stream li.stream-event").evaluate_all(
        "(all) => all.map((li) => li.dataset.event)"
    )
    b_names = page_b.locator("#stream li.stream-event").evaluate_all(
        "(all) => all.map((li) => li.dataset.event)"
    )
    assert a_names == [a_live, a_later], a_names
    assert b_names == [b_last, b_live], b_names
    for name in (b_first, b_live):
        assert_nowhere(page_a, name)
    for name in (a_later, a_live):
        assert_nowhere(page_b, name)


def test_hostile_event_content_is_shown_as_text(server: Server, open_page: OpenPage) -> None:
    page = open_page()
    goto_console(page, server)
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)

    img = '<img src=x onerror="window.__xss=1">'
    script = "<script>window.__xss=1</script>"
    name_img = f"{img} {uuid.uuid4().hex[:8]}"
    name_script = f"{script} {uuid.uuid4().hex[:8]}"
    track(server, A_TOKEN, name_img, {"note": script, img: "as a key", "nested": {"html": img}})
    track(server, A_TOKEN, name_script, {"note": img})

    for name, value in ((name_img, script), (name_script, img)):
        row = stream_row(page, name)
        expect(row).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
        expect(row.locator(".name")).to_have_text(name)
        assert json.loads(row.locator("pre").inner_text())["note"] == value  # as text
        expect(top_row(page, name).locator("td").first).to_have_text(
            name, timeout=UPDATE_TIMEOUT_MS
        )
        entry = schema_entry(page, name)
        expect(entry).to_have_attribute("data-count", "1", timeout=UPDATE_TIMEOUT_MS)
        expect(entry.locator("summary strong")).to_have_text(name)

    entry = schema_entry(page, name_img)
    entry.locator("summary").click()
    key_row = entry.locator(f"tr[data-property={css(img)}]")
    expect(key_row).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(key_row.locator("td").first).to_have_text(img)
    shown = json.loads(stream_row(page, name_img).locator("pre").inner_text())
    assert shown[img] == "as a key"
    assert shown["nested"] == {"html": img}

    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    assert page.locator('img[src="x"]').count() == 0
    scripts = page.evaluate("() => [...document.scripts].map((s) => s.getAttribute('src'))")
    assert scripts == ["/console/console.js"], scripts
    assert page.evaluate("() => window.__csp.filter((v) => v.startsWith('script'))") == []


def test_sign_out_returns_to_the_sign_in_form(server: Server, open_page: OpenPage) -> None:
    page = open_page()
    goto_console(page, server)
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)
    old_session = session_cookie(page)
    assert old_session is not None
    assert page.evaluate("() => window.__sources.map((s) => s.readyState)") == [1]  # OPEN

    page.click("#signout")
    expect_signed_out(page)
    expect(page.locator("#secret")).to_be_focused()
    # The page closed its stream, the browser dropped the cookie, and the server ended
    # the session: the old cookie no longer opens anything.
    assert page.evaluate("() => window.__sources.map((s) => s.readyState)") == [2]  # CLOSED
    assert session_cookie(page) is None
    assert page.request.get(f"{server.url}/console/api/session").status == 401
    for path in ("/console/api/session", "/console/api/overview", "/console/api/schema"):
        reply = request(server, "GET", path, headers={"Cookie": f"{COOKIE}={old_session}"})
        assert reply.status == 401, (path, reply)

    page.reload()
    expect_signed_out(page)
    expect(page.locator("#signin-error")).to_have_text("")
    assert page.evaluate("() => window.__sources.length") == 0


def test_session_survives_a_reload(server: Server, open_page: OpenPage) -> None:
    page = open_page()
    goto_console(page, server)
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)
    session = session_cookie(page)

    page.reload()
    expect_signed_in(page, A_ID, A_NAME)  # without typing the secret again
    assert session_cookie(page) == session
    assert page.evaluate("() => window.__sources.map((s) => s.readyState)") == [1]

    # And the reloaded page is live.
    name = unique("After reload")
    track(server, A_TOKEN, name, {})
    expect(stream_row(page, name)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)


# -- faults these tests found (fixed): a signed-out page showing data, CSP-blocked bars --------
def test_signed_out_page_shows_no_console_and_no_data(server: Server, open_page: OpenPage) -> None:
    page = open_page()
    goto_console(page, server)
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)
    name = unique("Seen before sign-out")
    track(server, A_TOKEN, name, {})
    expect(stream_row(page, name)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)

    page.click("#signout")
    expect_signed_out(page)
    # showSignIn() sets `hidden` synchronously with showing the form: no wait needed.
    assert page.locator("#console").get_attribute("hidden") is not None
    assert not page.locator("#console").is_visible(), "console visible while signed out"
    assert not stream_row(page, name).is_visible(), "A's event still on screen"


def test_top_events_bars_are_drawn(server: Server, open_page: OpenPage) -> None:
    page = open_page()
    goto_console(page, server)
    sign_in(page, A_SECRET)
    expect_signed_in(page, A_ID, A_NAME)
    name = unique("Bar")
    track(server, A_TOKEN, name, {})
    bar = top_row(page, name).locator("span.bar")
    expect(bar).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    violations = page.evaluate("() => window.__csp")
    width = bar.evaluate("(span) => span.getBoundingClientRect().width")
    assert violations == [], violations
    assert width > 0, width

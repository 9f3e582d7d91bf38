"""The official `mixpanel` package from PyPI, unmodified, against a real server.

Only the SDK's URL options change, as a user would do it: Consumer/BufferedConsumer
with events_url, people_url, groups_url and import_url.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import mixpanel
import pytest

from tests.serverproc import Server, export, start_with_project

TOKEN, SECRET, PROJECT_ID = "sdk-token-1", "sdk-secret-1", 4242
SA_USER, SA_SECRET = "sa-sdk.trackhouse-service-account", "sa-sdk-secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = start_with_project(
        tmp_path / "data",
        project_id=PROJECT_ID,
        token=TOKEN,
        secret=SECRET,
        service_account=(SA_USER, SA_SECRET),
    )
    yield server
    server.kill()


def urls(server: Server) -> dict[str, str]:
    return {
        "events_url": f"{server.url}/track",
        "people_url": f"{server.url}/engage",
        "groups_url": f"{server.url}/groups",
        "import_url": f"{server.url}/import",
    }


@pytest.mark.conformance("mixpanel (Python)", "plain HTTP")
def test_track_buffered_and_import_read_back_through_export(server: Server, today: str) -> None:
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))
    mp.track(
        "user-1",
        "Signed up",
        {
            "plan": "pro",
            "seats": 3,
            "tags": ["a", "b"],
            "nested": {"x": {"y": 1}},
            "unicode": "héllo ✓",
        },
    )

    buffered = mixpanel.BufferedConsumer(max_size=50, **urls(server))
    mp_buffered = mixpanel.Mixpanel(TOKEN, consumer=buffered)
    for i in range(120):  # more than one 50-event batch
        mp_buffered.track(f"user-{i % 7}", "Buffered", {"i": i})
    buffered.flush()

    now = int(time.time())
    mp_secret = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))
    mp_secret.import_data(
        TOKEN,
        "user-2",
        "Imported with secret",
        now - 86_400 * 30,
        {"src": "secret"},
        api_secret=SECRET,
    )

    credentials = mixpanel.ServiceAccountCredentials(SA_USER, SA_SECRET, str(PROJECT_ID))
    sa_mp = mixpanel.Mixpanel(
        TOKEN, consumer=mixpanel.Consumer(**urls(server), credentials=credentials)
    )
    sa_mp.import_data(TOKEN, "user-3", "Imported with service account", now - 3600, {"src": "sa"})

    server.wait_loaded()
    events = export(server, SECRET, "2000-01-01", today)
    by_name: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_name.setdefault(str(event["event"]), []).append(event["properties"])

    assert len(by_name["Buffered"]) == 120
    assert sorted(p["i"] for p in by_name["Buffered"]) == list(range(120))  # type: ignore[type-var]
    signed_up = by_name["Signed up"]
    assert len(signed_up) == 1
    props = signed_up[0]
    assert props["distinct_id"] == "user-1"
    assert props["plan"] == "pro"
    assert props["seats"] == 3
    assert props["tags"] == ["a", "b"]
    assert props["nested"] == {"x": {"y": 1}}
    assert props["unicode"] == "héllo ✓"
    assert props["mp_lib"] == "python"
    assert isinstance(props["$insert_id"], str)

    secret_import = by_name["Imported with secret"]
    assert len(secret_import) == 1
    assert secret_import[0]["time"] == now - 86_400 * 30
    assert secret_import[0]["src"] == "secret"
    assert secret_import[0]["$import"] is True
    sa_import = by_name["Imported with service account"]
    assert len(sa_import) == 1
    assert sa_import[0]["src"] == "sa"
    assert set(by_name) == {
        "Signed up",
        "Buffered",
        "Imported with secret",
        "Imported with service account",
    }


@pytest.mark.conformance("mixpanel (Python)", "import (bad credentials)")
def test_sdk_raises_on_wrong_secret(server: Server) -> None:
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))
    with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
        mp.import_data(TOKEN, "user-1", "x", int(time.time()), api_secret="not-the-secret")


@pytest.mark.conformance("mixpanel (Python)", "plain HTTP")
def test_profile_calls_are_acknowledged(server: Server) -> None:
    """people_* and group_* are accepted and durably logged (issue #3 folds them into
    profiles); the SDK would raise on any reply but status 1."""
    mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**urls(server)))
    mp.people_set("user-1", {"plan": "pro"})
    mp.people_increment("user-1", {"logins": 1})
    mp.people_union("user-1", {"tags": ["a"]})
    mp.people_unset("user-1", ["old"])
    mp.group_set("company", "Acme", {"size": 10})
    mp.people_delete("user-9")

"""`trackhouse serve --tls-cert FILE --tls-key FILE`: HTTPS served directly, with a
certificate generated per test run. The SDK drivers' HTTPS runs live in test_sdk_*.py;
this file covers the server and the CLI's own use of it."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import (
    Server,
    TLSFiles,
    free_port,
    import_events,
    make_tls,
    request,
    run_cli,
    start_with_project,
)

pytestmark = pytest.mark.e2e

TOKEN = "tls-token"
SECRET = "tls-secret"


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
def server(tmp_path: Path, tls: TLSFiles) -> Iterator[Server]:
    started = start_with_project(tmp_path / "data", token=TOKEN, secret=SECRET, tls=tls)
    yield started
    started.kill()


def test_https_track_import_and_export_round_trip(server: Server, today: str) -> None:
    assert server.url.startswith("https://")
    body = (
        'data={"event":"over tls","properties":{"token":"'
        + TOKEN
        + '","distinct_id":"u1","$insert_id":"tls-1"}}'
    ).encode()
    reply = request(
        server,
        "POST",
        "/track?verbose=1",
        body,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.json() == {"status": 1, "error": None}
    now = int(time.time())
    import_events(
        server,
        SECRET,
        [
            {
                "event": "imported",
                "properties": {"time": now, "distinct_id": "u2", "$insert_id": "tls-2"},
            }
        ],
    )
    server.wait_loaded()
    # The CLI finds the running server in server.json and trusts its certificate there.
    out = run_cli(server.data_dir, "export", "--project", "1", "--from", today, "--to", today)
    assert out.returncode == 0, out.stderr
    names = sorted(json.loads(line)["event"] for line in out.stdout.splitlines())
    assert names == ["imported", "over tls"]
    info = json.loads((server.data_dir / "server.json").read_text())
    assert info["url"].startswith("https://")
    assert Path(info["tls_cert"]).is_absolute()


def test_a_client_that_does_not_trust_the_certificate_is_refused(server: Server) -> None:
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(server.url + "/healthz", timeout=5)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_plain_http_to_the_tls_port_gets_no_reply_and_the_server_carries_on(
    server: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(1024)
    assert not data.startswith(b"HTTP/1.1 200")
    assert request(server, "GET", "/healthz").status == 200


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "CERT"], "give both or neither"),
        (["--tls-key", "KEY"], "give both or neither"),
        (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "KEY"], "cannot read"),
    ],
)
def test_incomplete_or_unreadable_tls_settings_are_refused_at_start(
    tmp_path: Path, tls: TLSFiles, flags: list[str], message: str
) -> None:
    argv = [flag.replace("CERT", str(tls.cert)).replace("KEY", str(tls.key)) for flag in flags]
    out = run_cli(tmp_path / "data", "serve", "--port", str(free_port()), *argv)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr

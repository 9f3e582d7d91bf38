"""A real trackhouse server process for end-to-end tests.

Each server gets a free loopback port and its own data directory; every wait is
bounded. Nothing here mocks any part of trackhouse.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class TLSFiles:
    """A throwaway CA and a certificate it issued for 127.0.0.1 and localhost (PEM files)."""

    cert: Path  # the server's certificate chain
    key: Path
    ca: Path  # what a client trusts (NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, cafile=)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(directory: Path, *extra_names: str) -> TLSFiles:
    """Generate TLSFiles in directory (trustme: no openssl CLI, no network); the
    certificate names 127.0.0.1, localhost and any ``extra_names``."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost", *extra_names)
    files = TLSFiles(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    leaf.private_key_pem.write_to_path(str(files.key))
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert), append=True)
    ca.cert_pem.write_to_path(str(files.ca))
    return files


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a trackhouse CLI command on data_dir; its exit code and output, unchecked."""
    return subprocess.run(
        [sys.executable, "-m", "trackhouse", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli(data_dir: Path, *args: str) -> Any:
    """Run a trackhouse CLI command with --json on data_dir and return its JSON."""
    out = run_cli(data_dir, *args, "--json")
    if out.returncode != 0:
        raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
    return json.loads(out.stdout)


@dataclass
class Server:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    tls: TLSFiles | None = None  # serve HTTPS with these (--tls-cert, --tls-key)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """For urlopen(..., context=): trusts the test CA when the server speaks TLS."""
        return self.tls.client_context() if self.tls else None

    def start(self) -> Server:
        self.port = free_port()
        self.log_path = self.data_dir.parent / f"server-{self.data_dir.name}-{self.port}.log"
        env = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trackhouse",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "warning",
                *(
                    ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
                    if self.tls
                    else []
                ),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    self.url + "/healthz", timeout=1, context=self.ssl_context()
                ) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait for a graceful exit."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            self.url + "/-/status", timeout=5, context=self.ssl_context()
        ) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result

    def wait_loaded(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until everything the journal acknowledged is in the store."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["loaded_position"] >= status["journal_durable_end"] or (
                status["backlog_bytes"] == 0
            ):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"loader did not catch up in {timeout}s: {status}")
            time.sleep(0.02)


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def export(
    server: Server, secret: str, from_date: str, to_date: str, **params: str
) -> list[dict[str, Any]]:
    """All events of the secret's project between the dates, via the export API."""
    query = urllib.parse.urlencode({"from_date": from_date, "to_date": to_date, **params})
    request = urllib.request.Request(f"{server.url}/api/2.0/export?{query}")
    request.add_header("Authorization", basic(secret))
    with urllib.request.urlopen(request, timeout=60, context=server.ssl_context()) as reply:
        body = reply.read()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def start_with_project(
    data_dir: Path,
    *,
    token: str,
    secret: str,
    project_id: int | None = None,
    service_account: tuple[str, str] | None = None,
    tls: TLSFiles | None = None,
) -> Server:
    """Create a project (and optionally a service account) with the CLI, then start."""
    create = ["projects", "create", "test", "--token", token, "--secret", secret]
    if project_id is not None:
        create += ["--id", str(project_id)]
    created = cli(data_dir, *create)
    if service_account is not None:
        username, account_secret = service_account
        cli(
            data_dir,
            "service-accounts",
            "create",
            "--project",
            str(created["id"]),
            "--username",
            username,
            "--secret",
            account_secret,
        )
    return Server(data_dir, tls=tls).start()


REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def content_type(self) -> str:
        return self.header("content-type")


def request(
    server: Server,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on its own connection; a hang fails on the socket timeout, and no
    reply may be a 5xx (clients retry those forever). An iterable body goes chunked."""
    conn = (
        http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=REQUEST_TIMEOUT, context=server.tls.client_context()
        )
        if server.tls
        else http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        reply = Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()
    assert reply.status < 500, (method, path, reply)
    return reply


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def import_events(server: Server, secret: str, events: list[dict[str, Any]]) -> Reply:
    """Strict /import with the project secret; expects every event stored."""
    reply = request(
        server,
        "POST",
        "/import?strict=1",
        dumps(events),
        {"Content-Type": "application/json", "Authorization": basic(secret)},
    )
    assert reply.status == 200, reply
    assert reply.json()["num_records_imported"] == len(events), reply
    return reply


def send_updates(server: Server, updates: list[dict[str, Any]], *, group: bool = False) -> Reply:
    """POST profile updates to /engage (or /groups) as the SDKs do: form data=JSON."""
    body = urllib.parse.urlencode({"data": json.dumps(updates), "verbose": "1"}).encode()
    reply = request(
        server,
        "POST",
        "/groups" if group else "/engage",
        body,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 200, reply
    return reply


def query_profiles(server: Server, secret: str, **params: str) -> Reply:
    """POST /api/2.0/engage with a form body, authenticated with the project secret."""
    body = urllib.parse.urlencode(params).encode()
    headers = {"Authorization": basic(secret), "Content-Type": "application/x-www-form-urlencoded"}
    return request(server, "POST", "/api/2.0/engage", body, headers)


def profile(
    server: Server, secret: str, distinct_id: str, *, group_key: str | None = None
) -> dict[str, Any] | None:
    """One profile's properties read back through /api/2.0/engage, or None."""
    params = {"distinct_id": distinct_id}
    if group_key is not None:
        params["data_group_id"] = group_key
    reply = query_profiles(server, secret, **params)
    assert reply.status == 200, reply
    results = reply.json()["results"]
    assert len(results) <= 1, results
    if not results:
        return None
    assert results[0]["$distinct_id"] == distinct_id
    props: dict[str, Any] = results[0]["$properties"]
    return props

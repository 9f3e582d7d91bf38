"""Where the reading commands get their data: the running server, or the data dir.

With a server running on the data directory, the store belongs to its process, so the
command asks the server over HTTP (with the project's secret). Otherwise it opens the
data directory itself, first loading whatever the journal still holds, so nothing
acknowledged is missing from what it prints.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from trackhouse.errors import ProjectError, TrackhouseError
from trackhouse.journal import Journal
from trackhouse.loader import Loader
from trackhouse.projects import Project, Registry
from trackhouse.settings import Settings
from trackhouse.storage.duckdb import DuckDBStore


def find_project(settings: Settings, project_id: int) -> Project:
    registry = Registry(settings.registry_path)
    try:
        project = registry.get(project_id)
    finally:
        registry.close()
    if project is None:
        raise ProjectError(f"no project with id {project_id}")
    return project


@dataclass(frozen=True)
class RunningServer:
    """The server running on a data directory, from the file it writes there."""

    url: str
    tls_cert: str | None  # the certificate it serves HTTPS with

    def ssl_context(self) -> ssl.SSLContext | None:
        """Trust exactly the server's own certificate (often self-signed) and not the
        host name in the URL: it is the listening address (0.0.0.0, 127.0.0.1), and the
        pid in the file already says which process this is."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(cafile=self.tls_cert)
        context.check_hostname = False
        # A CA-issued leaf certificate is a trust anchor of its own too.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context


def running_server(settings: Settings) -> RunningServer | None:
    try:
        info = json.loads(settings.server_file.read_text())
        os.kill(int(info["pid"]), 0)
        return RunningServer(str(info["url"]), info.get("tls_cert"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@contextmanager
def _server_reply(
    server: RunningServer, path: str, secret: str, params: dict[str, str], *, post: bool = False
) -> Iterator[BinaryIO]:
    query = urllib.parse.urlencode(params)
    url = server.url
    if post:  # a form body
        request = urllib.request.Request(f"{url}{path}", data=query.encode(), method="POST")  # noqa: S310 - our own server
    else:
        request = urllib.request.Request(f"{url}{path}?{query}")  # noqa: S310 - our own server
    token = base64.b64encode(f"{secret}:".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60, context=server.ssl_context()) as reply:  # noqa: S310
            yield reply
    except urllib.error.HTTPError as exc:
        raise TrackhouseError(_reason(exc.read())) from exc
    except urllib.error.URLError as exc:
        raise TrackhouseError(f"cannot reach the server at {url}: {exc.reason}") from exc


def _reason(body: bytes) -> str:
    """The server's error text: the JSON APIs' "error" field, or the plain-text body."""
    text = body.decode(errors="replace").strip()
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error) if error else text


def copy_from_server(
    server: RunningServer, path: str, secret: str, params: dict[str, str], out: BinaryIO
) -> None:
    """Stream a reply body (an export) to ``out``."""
    with _server_reply(server, path, secret, params) as reply:
        while chunk := reply.read(1 << 16):
            out.write(chunk)


def json_from_server(
    server: RunningServer, path: str, secret: str, params: dict[str, str], *, post: bool = False
) -> Any:
    with _server_reply(server, path, secret, params, post=post) as reply:
        return json.loads(reply.read())


@contextmanager
def loaded_store(settings: Settings) -> Iterator[DuckDBStore]:
    """The data directory's store with the journal's backlog loaded into it."""
    with journaled_store(settings) as (store, _journal, _loader):
        yield store


@contextmanager
def journaled_store(settings: Settings) -> Iterator[tuple[DuckDBStore, Journal, Loader]]:
    """The data directory's store, its journal (to append to) and a loader, with the
    journal's backlog loaded (``loader.catch_up()`` loads what is appended later)."""
    store = DuckDBStore(settings.store_path, memory_limit_mb=settings.store_memory_mb)
    try:
        checkpoint = store.checkpoint()
        journal = Journal(
            settings.journal_dir,
            fsync=True,
            first_segment=(checkpoint.segment + 1) if checkpoint else 1,
        )
        try:
            loader = Loader(journal, store, batch_events=settings.loader_batch_events, idle_ms=50)
            loader.catch_up()
            yield store, journal, loader
        finally:
            journal.close()
    finally:
        store.close()

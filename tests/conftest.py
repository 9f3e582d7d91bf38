from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serverproc import Server, TLSFiles

pytest_plugins = ["tests.conformance", "tests.tmpfs"]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real server processes (on their own data dirs); all are killed at the end."""
    servers: list[Server] = []

    def start(
        data_dir: Path | None = None,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        tls: TLSFiles | None = None,
    ) -> Server:
        server = Server(
            data_dir or tmp_path / f"data{len(servers)}", env or {}, args or [], tls=tls
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()

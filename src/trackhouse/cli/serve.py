"""``trackhouse serve``: run the HTTP server on a data directory."""

from __future__ import annotations

import argparse
import logging
import resource
from types import FrameType
from typing import Any

import uvicorn

from trackhouse.cli.common import add_settings_arguments, settings_from_args
from trackhouse.malloc import limit_arenas
from trackhouse.projects import Registry
from trackhouse.settings import Settings
from trackhouse.web.app import create_app
from trackhouse.web.console import STREAM_PATH
from trackhouse.web.guard import guarded_protocol


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve", help="run the ingestion and export server", description=__doc__
    )
    add_settings_arguments(parser)
    parser.set_defaults(run=run)


def ensure_default_project(settings: Settings) -> None:
    """On a new data directory, create a project and show its credentials once."""
    registry = Registry(settings.registry_path)
    try:
        if registry.projects():
            count = len(registry.projects())
            print(
                f"trackhouse: {count} project(s); `trackhouse projects list` shows them", flush=True
            )
            return
        project = registry.create_project("Default")
    finally:
        registry.close()
    print(
        "trackhouse: created the default project\n"
        f"  project id:  {project.id}\n"
        f"  token:       {project.token}   (for SDKs and /track)\n"
        f"  API secret:  {project.secret}   (for /import, the read APIs and the console; keep it secret)",
        flush=True,
    )


# After a stop signal, how long the console's streams have to end by themselves.
STREAM_GRACE_S = 0.5


def _drop_streams(server: uvicorn.Server) -> None:
    """Close what is left of the console's event streams at once. They have ended, but
    a reader that stopped reading leaves bytes in the connection's buffer, and asyncio
    closes a connection only once its buffer is sent: the server would wait for
    timeout_graceful_shutdown. (uvicorn keeps no public handle on its connections;
    without these attributes, that timeout still ends the wait.)"""
    for connection in list(server.server_state.connections):
        scope = getattr(getattr(connection, "cycle", None), "scope", None) or {}
        transport = getattr(connection, "transport", None)
        if scope.get("path") == STREAM_PATH and transport is not None:
            transport.abort()


def raise_open_file_limit() -> None:
    """Every connection is a file descriptor, and a soft limit of 1024 (systemd's and
    many shells' default) would stall a public endpoint at 1024 clients. The hard limit
    is what the operator allows; take all of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        logging.getLogger(__name__).warning(
            "cannot raise the open-file limit from %d: %s", soft, exc
        )


def run(args: argparse.Namespace) -> int:
    limit_arenas(2)  # before any thread allocates (trackhouse/malloc.py says why)
    raise_open_file_limit()
    settings = settings_from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_default_project(settings)
    print(
        f"trackhouse: serving {settings.url} (data in {settings.data_dir.resolve()})\n"
        f"trackhouse: console at {settings.url}/console "
        "(sign in with a project's API secret)",
        flush=True,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(settings),  # httptools, with header and time limits
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        # clientip.py alone decides whom to believe (--trusted-proxies); uvicorn's
        # default would trust X-Forwarded-For from any loopback peer.
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def stop(sig: int, frame: FrameType | None) -> None:
        app.begin_shutdown()
        handle_exit(sig, frame)
        if app.loop is not None:
            app.loop.call_soon_threadsafe(
                app.loop.call_later, STREAM_GRACE_S, _drop_streams, server
            )

    server.handle_exit = stop  # type: ignore[method-assign]
    server.run()
    return 0 if server.started else 1

"""The HTTP connection limits uvicorn's httptools protocol lacks, for a public endpoint.

uvicorn (0.54, ``http="httptools"``) bounds neither the size nor the number of request
headers, and starts no timer until a first reply: a client that connects and sends
nothing, trickles its headers or its body, or sends megabytes of headers, holds a
connection (and the memory of what it sent) for as long as it likes. This subclass adds:

* request heads (request line and headers) of at most ``max_header_bytes`` and
  ``MAX_HEADERS`` headers, else 431 and the connection closed;
* a first head that must be complete within ``request_timeout_s`` of the connection
  opening (then 408, or a silent close if nothing was sent: a browser's idle
  preconnected socket deserves no error), and any head or body that a read leaves
  unfinished must be complete within ``request_timeout_s`` of that read, else 408.

Everything is counted as bytes arrive, so a huge header is cut off after about one
read past the limit and never buffered whole. uvicorn's own keep-alive timeout still
closes idle connections between requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from trackhouse.settings import Settings

# More headers than any browser or SDK sends (they send about 10-20); nginx and h11
# draw similar lines.
MAX_HEADERS = 100


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    request_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request head (or waiting for one)
        self._head_bytes = 0
        self._header_count = 0
        self._too_many_headers = False
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- timers ------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_head and self._head_bytes == 0:
            self.transport.close()  # nothing sent: an idle connection, not an error
        elif cycle is not None and not self._in_head and cycle.response_started:
            self.transport.close()  # the app answered already (e.g. 413): stop reading
        else:
            what = "request headers" if self._in_head else "request body"
            self._refuse(408, f"{what} not received within {self.request_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer at the HTTP level and close (the app never sees this request)."""
        self._refused = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's reads end; its reply goes nowhere
            self.cycle.message_event.set()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()

    # -- the protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused:
            return
        if self._too_many_headers:
            self._refuse(431, f"more than {MAX_HEADERS} request headers")
        elif self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"request headers exceed {self.max_header_bytes} bytes")
        elif self._timer is None and (self._head_bytes or not self._in_head):
            # A head or a body left unfinished by this read: from now on it has
            # request_timeout_s. (Armed only then: most requests arrive in one read,
            # and a timer per request costs the event loop more than this check.)
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._too_many_headers = True  # answered once the parser returns
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._too_many_headers:
            return  # the app never sees this request
        self._in_head = False
        self._head_bytes = 0
        self._header_count = 0
        self._disarm()  # the head is in; data_received arms again if the body is not
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not (self._refused or self._too_many_headers):
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused or self._too_many_headers:
            return
        self._in_head = True
        # No timer while the app works on it: a reply may take long (an export, a
        # console stream). Once it is sent, uvicorn's keep-alive timer closes the
        # connection if nothing comes; bytes of a next head arm ours (data_received).
        self._disarm()
        super().on_message_complete()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this server's limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "request_timeout_s": float(settings.request_timeout_s),
        },
    )

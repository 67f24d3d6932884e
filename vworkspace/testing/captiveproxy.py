"""A misbehaving forward proxy: it answers every request itself and forwards nothing.

Two failures a cluster behind a corporate proxy meets (issue 27) and that the agent must report
as the proxy's, not the control plane's:

* ``html``: a captive portal. Every request gets ``200 OK`` with an HTML login page. A CONNECT
  gets the same answer, and the connection stays open: whatever the client sends next (its TLS
  ClientHello) is answered with the page again, so a client that took the 200 for an open tunnel
  reads HTML where it expected a TLS ServerHello, as behind a real portal.
* ``html-close``: the same page, after which the connection closes at once (portals do both); the
  client's TLS handshake inside the "tunnel" meets a closed or reset connection.
* ``auth``: ``407 Proxy Authentication Required`` with ``Proxy-Authenticate: Basic`` and an HTML
  body, whatever credentials came (a proxy that refuses this client).

Hand-written on asyncio streams rather than squid because squid, rightly, does neither: it
cannot be told to answer CONNECT with a page. It records each request line and whether it
carried ``Proxy-Authorization`` (never the credentials themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

import attrs

LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head>\n"
    b"<body><h1>Corporate network</h1><form method=post action=/login>"
    b"<input name=user><input name=password type=password><button>Sign in</button>"
    b"</form></body></html>\n"
)
_MAX_HEAD = 64 * 1024


class CaptiveMode(enum.Enum):
    HTML = "html"
    HTML_CLOSE = "html-close"
    AUTH = "auth"


@attrs.frozen
class ProxyRequest:
    """One request the proxy answered: ``CONNECT host:port`` or ``GET http://...``."""

    method: str
    target: str
    had_credentials: bool


class CaptiveProxy:
    """The proxy on ``127.0.0.1:<free port>``; ``async with`` starts and stops it."""

    def __init__(self, mode: CaptiveMode = CaptiveMode.HTML) -> None:
        self.mode = mode
        self.requests: list[ProxyRequest] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "CaptiveProxy was not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    async def start(self) -> CaptiveProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CaptiveProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _response(self) -> bytes:
        if self.mode is CaptiveMode.AUTH:
            head = (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="corporate-proxy"\r\n'
            )
        else:
            head = b"HTTP/1.1 200 OK\r\n"
        return (
            head
            + b"Content-Type: text/html; charset=utf-8\r\n"
            + b"Content-Length: %d\r\n" % len(LOGIN_PAGE)
            + b"Connection: close\r\n\r\n"
            + LOGIN_PAGE
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head[:_MAX_HEAD].decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rsplit(" ", 1)[0]
        credentials = any(line.lower().startswith("proxy-authorization:") for line in lines[1:])
        self.requests.append(ProxyRequest(method, target, credentials))
        with contextlib.suppress(ConnectionError):
            writer.write(self._response())
            await writer.drain()
            if method == "CONNECT" and self.mode is CaptiveMode.HTML:
                while await reader.read(65536):  # until the client gives up
                    writer.write(self._response())
                    await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

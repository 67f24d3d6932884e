"""aiohttp listeners that bound what a client can hold open (issue 24, F7: slowloris).

Used by the admission webhook server and the probe/metrics endpoints; lives in ``kube/`` (like
kube/tls.py) so both can use it without importing each other. Three limits,
:class:`ListenerLimits`:

* **Request line and headers** within ``header_timeout`` (10 s, Go's usual
  ``ReadHeaderTimeout``) of the connection being ready, or of the previous answer on a
  keep-alive connection. This is aiohttp's own ``keepalive_timeout``: in aiohttp 3.14 (the
  pinned minimum) its timer is armed when the connection is made, not only after a first
  answer, and closes the connection when it fires while the server still waits for a complete
  request; data arriving does not postpone it, so trickling a header a byte at a time does not
  help (tests/unit/test_slow_clients.py would catch a release that changes this). The cost: an
  idle keep-alive connection is closed after the same 10 s (aiohttp's default is an hour), so
  a client that is quiet for longer reconnects.
* **TLS handshake** within ``handshake_timeout`` (10 s; asyncio's default is 60 s). aiohttp's
  ``TCPSite`` does not pass ``ssl_handshake_timeout`` to ``loop.create_server``, hence
  :class:`BoundedSite`, the same call with that argument and a connection cap.
* **At most** ``max_connections`` established connections per listener; one more is closed as
  soon as it is accepted (after its handshake, for TLS), so a flood costs file descriptors
  only up to the cap and the handshake deadline. The cap is high (1,024): the API server opens
  a connection per concurrent admission request (HTTP/1.1), and refusing those refuses
  admissions.

A request body is the handler's business (the webhook bounds its read separately); a body
left unread (a GET with one, an answer given before the body arrived) is drained for at most
``header_timeout`` too (aiohttp's ``lingering_time``) before the connection is closed.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import attrs
from aiohttp import web

HEADER_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 1024


@attrs.frozen
class ListenerLimits:
    """How long a client may take to send its request line and headers, and to finish the TLS
    handshake (seconds), and how many connections may be open at once."""

    header_timeout: float = HEADER_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


DEFAULT_LIMITS = ListenerLimits()


def bounded_runner(app: web.Application, *, limits: ListenerLimits) -> web.AppRunner:
    """An ``AppRunner`` with the header deadline, also the longest aiohttp drains a body the
    handler did not read before it closes (no access log, 2 s shutdown grace)."""
    return web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=limits.header_timeout,
        lingering_time=limits.header_timeout,
    )


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class BoundedSite(web.BaseSite):
    """``web.TCPSite`` plus the TLS handshake deadline and the connection cap.

    Hand-written because TCPSite's ``start`` calls ``loop.create_server`` without
    ``ssl_handshake_timeout`` and with the runner's protocol factory as is; this is that call
    with both. ``refused`` counts connections closed for the cap."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: ListenerLimits,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._limits = limits
        self.refused = 0

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()  # registers the site with the runner
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {}
        if self._ssl_context is not None:
            options["ssl_handshake_timeout"] = self._limits.handshake_timeout
        self._server = await loop.create_server(
            self._protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            **options,
        )

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner that is not set up
        if len(server.connections) >= self._limits.max_connections:
            self.refused += 1
            return _Refused()
        return server()

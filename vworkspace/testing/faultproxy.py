"""An HTTP proxy in front of the mock control plane that answers with what hostile networks send.

Where :class:`~vworkspace.testing.proxy.TcpProxy` breaks the *connection*, this proxy breaks the
*answer*: an authenticating proxy's HTML login page with status 200, a body cut short by a
middlebox, JSON of the wrong shape, a body far over any sane size, a reset, a stall, 5xx with and
without ``Retry-After``. Tests script faults per path prefix; every other request is relayed to
the target unchanged. The chaos tier (tests/chaos) uses it to show that nothing from the network
can stop the operator (docs/operations.md, "What we test").

Trade-offs: faults on one path alternate with real answers (``spacing``) so a client's backoff
never grows past a few seconds and a scenario stays CI-sized; the bodies of ``jobs`` faults carry
a job that *would* create a marker object if the client trusted them, so "applies nothing" is
checked, not assumed. It relays HTTP/1.1 requests one at a time per connection; it does not
imitate any control-plane behaviour.
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import json
from collections import Counter, deque
from typing import Any

import aiohttp
import attrs
from aiohttp import web

MEDIA_TYPE = "application/vnd.vworkspace.agent.v1+json"
# Hop-by-hop headers are the proxy's own business (RFC 9110, section 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


class Fault(enum.Enum):
    HTML_200 = "HTML 200 (login page echoing the request)"
    TRUNCATED_JSON = "truncated JSON"
    CUT_BODY = "body cut short (Content-Length not met)"
    WRONG_SHAPE = "JSON of the wrong shape"
    OVERSIZED = "oversized body (8 MiB)"
    RESET = "connection reset"
    STALL = "stall, then reset"
    STATUS_500 = "500"
    STATUS_503 = "503 without Retry-After"
    STATUS_503_RETRY_AFTER = "503 with Retry-After"
    STATUS_429_RETRY_AFTER = "429 with Retry-After"
    STATUS_502_HTML = "502 HTML from a proxy"


ALL_FAULTS = tuple(Fault)


def marker_job(marker: str, namespace: str) -> dict[str, Any]:
    """A well-formed apply job for a allowed kind named ``marker``: if it ever
    exists in the cluster, the client trusted a hostile answer."""
    return {
        "id": marker,
        "kind": "apply",
        "idempotencyKey": f"hostile/{marker}",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": marker, "namespace": namespace},
            "spec": {"appRef": {"catalogId": "hostile"}, "mode": "placeholder"},
        },
    }


@attrs.define
class _Script:
    faults: deque[Fault] = attrs.field(factory=deque)
    forward_next: int = 0  # real answers still owed before the next fault


class HttpFaultProxy:
    """Relay to ``target`` (a base URL), except where a fault is scripted.

    ``marker_namespace`` is where the marker jobs inside hostile ``jobs`` answers point;
    ``stall_seconds`` is how long a stall lasts before the connection is reset; ``spacing`` real
    answers are relayed on a path between two of its faults.
    """

    def __init__(
        self,
        target: str,
        *,
        marker_namespace: str = "default",
        stall_seconds: float = 4.0,
        spacing: int = 1,
        retry_after: int = 1,
    ) -> None:
        self.target = target.rstrip("/")
        self.marker_namespace = marker_namespace
        self.stall_seconds = stall_seconds
        self.spacing = spacing
        self.retry_after = retry_after
        self.served: Counter[tuple[str, Fault]] = Counter()
        self.markers: list[str] = []
        self.relayed = 0
        self._scripts: dict[str, _Script] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HttpFaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def inject(self, pattern: str, faults: list[Fault] | tuple[Fault, ...]) -> None:
        """Queue ``faults`` (in order) for requests whose path matches the glob ``pattern``
        (e.g. ``/api/agent/jobs`` for the fetch, ``/api/agent/jobs/*/ack`` for acks)."""
        self._scripts.setdefault(pattern, _Script()).faults.extend(faults)

    def pending(self) -> int:
        return sum(len(s.faults) for s in self._scripts.values())

    def _take(self, path: str) -> tuple[str, Fault] | None:
        for prefix, script in self._scripts.items():
            if not fnmatch.fnmatchcase(path, prefix):
                continue
            if script.forward_next > 0 or not script.faults:
                script.forward_next = max(0, script.forward_next - 1)
                return None
            script.forward_next = self.spacing
            return prefix, script.faults.popleft()
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        taken = self._take(request.path)
        if taken is None:
            return await self._relay(request)
        prefix, fault = taken
        self.served[(prefix, fault)] += 1
        await request.read()
        return await self._answer(request, fault)

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.relayed += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                self.target + request.path_qs,
                headers=headers,
                data=body if body else None,
                skip_auto_headers=("Content-Type",) if not body else (),
                timeout=aiohttp.ClientTimeout(total=600),
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except aiohttp.ClientError:
            return web.Response(status=502, text="bad gateway")

    async def _answer(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        is_fetch = request.method == "GET" and request.path.rstrip("/") == "/api/agent/jobs"
        marker = f"hostile-{len(self.markers)}"
        job = marker_job(marker, self.marker_namespace)
        good = json.dumps({"jobs": [job]} if is_fetch else {"token": marker}).encode()
        if is_fetch:
            self.markers.append(marker)
        if fault is Fault.HTML_200:
            # A captive portal that echoes the request: the bearer token is in the body, so a
            # client that logs what arrived must not log it verbatim.
            echo = "".join(f"<li>{k}: {v}</li>" for k, v in request.headers.items())
            html = f"<html><body><h1>Sign in</h1><ul>{echo}</ul></body></html>"
            return web.Response(status=200, text=html, content_type="text/html")
        if fault is Fault.TRUNCATED_JSON:
            return web.Response(status=200, body=good[: len(good) // 2], headers=_json_headers())
        if fault is Fault.WRONG_SHAPE:
            shape: Any = {"jobs": {"0": job}} if is_fetch else [{"jobs": [job]}]
            body = json.dumps(shape).encode()
            return web.Response(status=200, body=body, headers=_json_headers())
        if fault is Fault.OVERSIZED:
            pad = "x" * (8 * 1024 * 1024)
            big = {"jobs": [job], "padding": pad} if is_fetch else {"token": marker, "padding": pad}
            return web.Response(status=200, body=json.dumps(big).encode(), headers=_json_headers())
        if fault is Fault.CUT_BODY:
            response = web.StreamResponse(status=200, headers=_json_headers())
            response.content_length = len(good) * 2
            await response.prepare(request)
            await response.write(good[: len(good) // 2])
            _abort(request)
            return response
        if fault is Fault.RESET:
            _abort(request)
            return web.Response(status=500)  # never reaches the client: the socket is gone
        if fault is Fault.STALL:
            await asyncio.sleep(self.stall_seconds)
            _abort(request)
            return web.Response(status=500)
        status, retry = {
            Fault.STATUS_500: (500, False),
            Fault.STATUS_503: (503, False),
            Fault.STATUS_503_RETRY_AFTER: (503, True),
            Fault.STATUS_429_RETRY_AFTER: (429, True),
            Fault.STATUS_502_HTML: (502, False),
        }[fault]
        headers = {"Retry-After": str(self.retry_after)} if retry else {}
        if fault is Fault.STATUS_502_HTML:
            return web.Response(
                status=status, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        body = json.dumps({"error": "Injected", "message": fault.value}).encode()
        return web.Response(status=status, body=body, headers={**_json_headers(), **headers})


def _json_headers() -> dict[str, str]:
    return {"Content-Type": MEDIA_TYPE}


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()

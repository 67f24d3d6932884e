"""The control-plane client reads answers as untrusted bytes: the body-size cap, content types,
shapes, redirects, truncation (issue 16). A small scripted HTTP server stands in for the
control plane, since a real one does not misbehave on demand."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from vworkspace.agent import answers
from vworkspace.agent.client import (
    ControlPlaneClient,
    ProtocolError,
    RetryAfterError,
    UnavailableError,
    register,
)
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.wire import MEDIA_TYPE, Credentials
from vworkspace.kube.clock import RealClock

TOKEN = "tok-very-secret-42"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self) -> None:
        self.handler: Handler = self._default
        self.requests = 0

    async def _default(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return await self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield srv, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def client(
    server: tuple[Server, str],
) -> AsyncIterator[tuple[ControlPlaneClient, CollectorRegistry]]:
    _, url = server
    registry = CollectorRegistry()

    async def reload() -> Credentials:
        return Credentials(url, "c1", TOKEN)

    async with aiohttp.ClientSession() as session:
        yield (
            ControlPlaneClient(
                session,
                credentials=lambda: Credentials(url, "c1", TOKEN),
                reload=reload,
                clock=RealClock(),
                rng=random.Random(3),
                backoff_initial=0.001,
                attempts=2,
                metrics=AgentMetrics(registry),
            ),
            registry,
        )


def counted(registry: CollectorRegistry, endpoint: str, reason: str) -> float:
    value = registry.get_sample_value(
        "vworkspace_agent_protocol_errors_total", {"endpoint": endpoint, "reason": reason}
    )
    return value or 0.0


def agent_json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": MEDIA_TYPE}
    )


# -- the body-size cap --------------------------------------------------------------------


def test_the_cap_is_4_mib() -> None:
    assert answers.MAX_BODY == 4 * 1024 * 1024


async def test_a_declared_oversized_body_is_refused_before_reading_it(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, registry = client
    cp.max_body = 1024
    srv.handler = lambda request: _ok(agent_json({"jobs": [], "pad": "x" * 4096}))
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == "too_large"
    assert "declares" in str(err.value)
    assert counted(registry, "jobs", "too_large") == 1


async def test_a_streamed_body_past_the_cap_is_cut_off_while_reading(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    """No Content-Length (chunked): the cap applies to the bytes actually read, 5 MiB > 4 MiB."""
    srv, _ = server
    cp, registry = client
    sent: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": MEDIA_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * (256 * 1024)
        try:
            for _ in range(20):  # 5 MiB of whitespace (valid JSON padding, never finished)
                await response.write(chunk)
                sent.append(len(chunk))
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return response

    srv.handler = endless
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == "too_large"
    assert f"exceeds {answers.MAX_BODY} bytes" in str(err.value)
    assert counted(registry, "jobs", "too_large") == 1


async def test_a_body_at_the_cap_is_accepted(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, _ = client
    body = json.dumps({"jobs": [{"id": "j1"}]}).encode()
    cp.max_body = len(body)
    srv.handler = lambda request: _ok(web.Response(body=body, headers={"Content-Type": MEDIA_TYPE}))
    assert await cp.fetch_jobs(cluster_id="c1", wait=0) == [{"id": "j1"}]


# -- content type, JSON, shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"<html><body>Please sign in</body></html>", "text/html", "content_type"),
        (b'{"jobs": [{"id": "j1", "kind": "ap', MEDIA_TYPE, "invalid_json"),
        (b"", MEDIA_TYPE, "invalid_json"),
        (b'{"jobs": "all of them"}', MEDIA_TYPE, "shape"),
        (b"[1, 2, 3]", "application/json", "shape"),
        (b"{}", MEDIA_TYPE, "shape"),
        (b"[" * 100_000 + b"]" * 100_000, MEDIA_TYPE, "invalid_json"),  # too deep to decode
        (b'{"jobs": [' + b"7" * 5_000 + b"]}", MEDIA_TYPE, "invalid_json"),  # F4, issue 24
    ],
)
async def test_jobs_answers_the_protocol_does_not_allow_are_typed_and_counted(
    server: tuple[Server, str],
    client: tuple[ControlPlaneClient, CollectorRegistry],
    body: bytes,
    content_type: str,
    reason: str,
) -> None:
    srv, _ = server
    cp, registry = client
    srv.handler = lambda request: _ok(
        web.Response(body=body, headers={"Content-Type": content_type})
    )
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == reason
    assert err.value.endpoint == "jobs"
    assert len(str(err.value)) < 600  # one readable line, not the whole body
    assert counted(registry, "jobs", reason) == 1


async def test_jobs_null_is_an_empty_batch(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, _ = client
    srv.handler = lambda request: _ok(agent_json({"jobs": None}))
    assert await cp.fetch_jobs(cluster_id="c1", wait=0) == []


async def test_what_arrived_is_described_without_the_token(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, _ = client
    page = f"<html>your token {TOKEN} is invalid\n\x00{'x' * 5000}</html>".encode()
    srv.handler = lambda request: _ok(web.Response(body=page, content_type="text/html"))
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    message = str(err.value)
    assert TOKEN not in message
    assert "[redacted]" in message
    assert "text/html" in message
    assert "\n" not in message
    assert "\x00" not in message


async def test_a_redirect_is_not_followed(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, url = server
    cp, registry = client

    async def portal(request: web.Request) -> web.StreamResponse:
        if request.path == "/login":
            return web.Response(text="<html>login</html>", content_type="text/html")
        return web.Response(status=302, headers={"Location": f"{url}/login"})

    srv.handler = portal
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == "status"
    assert err.value.status == 302
    assert srv.requests == 1  # the bearer token never went to /login
    assert counted(registry, "jobs", "status") == 1


async def test_a_200_where_204_belongs_is_retried_as_transient(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, registry = client
    answers_ = [
        web.Response(text="<html>proxy says hi</html>", content_type="text/html"),
        web.Response(status=204),
    ]
    srv.handler = lambda request: _ok(answers_.pop(0))
    await cp.ack("j1")  # the second attempt succeeds
    assert counted(registry, "ack", "status") == 1


async def test_a_body_cut_short_is_truncated(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, registry = client

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": MEDIA_TYPE})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"jobs": [')
        assert request.transport is not None
        request.transport.close()
        return response

    srv.handler = cut
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == "truncated"
    assert counted(registry, "jobs", "truncated") == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"token": 42}, {"token": ""}, {"token": "two\nlines"}, {"token": "x" * 5000}, []],
)
async def test_a_rotate_answer_of_the_wrong_shape_never_shows_its_values(
    server: tuple[Server, str],
    client: tuple[ControlPlaneClient, CollectorRegistry],
    body: object,
) -> None:
    srv, _ = server
    cp, registry = client
    srv.handler = lambda request: _ok(agent_json(body))
    with pytest.raises(ProtocolError) as err:
        await cp.rotate()
    assert err.value.reason == "shape"
    assert "two" not in str(err.value)
    assert "xxxx" not in str(err.value)
    assert counted(registry, "rotate", "shape") == 1


async def test_rotate_accepts_a_good_token(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, _ = client
    srv.handler = lambda request: _ok(agent_json({"token": "new-token"}))
    assert await cp.rotate() == "new-token"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"clusterId": "c1"}', MEDIA_TYPE),
        (b'{"clusterId": 7, "token": "leaked-if-shown"}', MEDIA_TYPE),
        (b"<html>leaked-if-shown</html>", "text/html"),
    ],
)
async def test_register_validates_its_answer(
    server: tuple[Server, str], body: bytes, content_type: str
) -> None:
    srv, url = server
    registry = CollectorRegistry()
    srv.handler = lambda request: _ok(
        web.Response(body=body, headers={"Content-Type": content_type})
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ProtocolError) as err:
            await register(
                session,
                base_url=url,
                registration_token="reg",
                metrics=AgentMetrics(registry),
            )
    assert "leaked-if-shown" not in str(err.value)
    assert counted(registry, "register", err.value.reason) == 1


# -- numbers past Python's int digit limit (issue 24, F4) -------------------------------------

LONG_NUMBER = b"7" * 5_000  # sys.get_int_max_str_digits() is 4,300


async def test_a_jobs_answer_with_a_5000_digit_integer_is_a_counted_protocol_error(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    """Regression (F4): json.loads raised a plain ValueError, which no handler caught."""
    srv, _ = server
    cp, registry = client
    body = b'{"jobs": [{"id": "j1", "generation": ' + LONG_NUMBER + b"}]}"
    srv.handler = lambda request: _ok(web.Response(body=body, headers={"Content-Type": MEDIA_TYPE}))
    with pytest.raises(ProtocolError) as err:
        await cp.fetch_jobs(cluster_id="c1", wait=0)
    assert err.value.reason == "invalid_json"
    assert "a number too long to decode (over 4300 digits)" in str(err.value)
    assert "set_int_max_str_digits" not in str(err.value)  # Python's advice is not ours
    assert counted(registry, "jobs", "invalid_json") == 1


async def test_an_error_answer_with_a_5000_digit_integer_keeps_its_status(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    """The error-body decoder had the same hole: a 500 became a ValueError, not a 5xx."""
    srv, _ = server
    cp, _ = client
    cp.attempts = 1
    body = b'{"error": "x", "code": ' + LONG_NUMBER + b"}"
    srv.handler = lambda request: _ok(
        web.Response(status=500, body=body, headers={"Content-Type": MEDIA_TYPE})
    )
    with pytest.raises(UnavailableError) as err:
        await cp.ack("j")
    assert err.value.status == 500


async def test_a_register_answer_with_a_5000_digit_integer_is_a_protocol_error(
    server: tuple[Server, str],
) -> None:
    srv, url = server
    registry = CollectorRegistry()
    body = b'{"clusterId": "c1", "token": "leaked-if-shown", "n": ' + LONG_NUMBER + b"}"
    srv.handler = lambda request: _ok(web.Response(body=body, headers={"Content-Type": MEDIA_TYPE}))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ProtocolError) as err:
            await register(
                session, base_url=url, registration_token="reg", metrics=AgentMetrics(registry)
            )
    assert err.value.reason == "invalid_json"
    assert "leaked-if-shown" not in str(err.value)
    assert counted(registry, "register", "invalid_json") == 1


async def test_retry_after_is_capped(
    server: tuple[Server, str], client: tuple[ControlPlaneClient, CollectorRegistry]
) -> None:
    srv, _ = server
    cp, _ = client
    cp.attempts = 1
    srv.handler = lambda request: _ok(web.Response(status=429, headers={"Retry-After": "inf"}))
    with pytest.raises(RetryAfterError) as err:
        await cp.ack("j")
    assert err.value.retry_after == 300.0


async def _ok(response: web.StreamResponse) -> web.StreamResponse:
    await asyncio.sleep(0)
    return response

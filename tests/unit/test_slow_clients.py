"""Slow clients against the real listeners on 127.0.0.1 (issue 24, F7: slowloris).

The webhook server and the probe/metrics endpoints close a connection whose TLS handshake, or
request line and headers, take longer than their deadline; the webhook answers a body that does
not arrive in time with 408; a listener over its connection cap closes the newcomer. Deadlines
are passed in small (0.5 s) so the tests are quick; each waits on the close itself, bounded,
and checks it did not come early either.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from tests.unit.test_admission_rules import instance, operation, target
from tests.unit.test_metricsauth import FakeApiServer
from tests.unit.test_webhook_server import ScriptedLookup, review
from vworkspace.api.admission import World
from vworkspace.app.http import Address, Endpoints, ServingCert
from vworkspace.app.metricsauth import MetricsAuthorizer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.listener import ListenerLimits
from vworkspace.kube.tls import CertificateReloader
from vworkspace.webhooks.certs import write_webhook_certs
from vworkspace.webhooks.server import (
    INSTANCE_PATH,
    OPERATION_PATH,
    WebhookMetrics,
    WebhookServer,
)

DEADLINE = 0.5
FAST = ListenerLimits(header_timeout=DEADLINE, handshake_timeout=DEADLINE)
HALF_REQUEST_LINE = b"POST /validate-apps-vw"
HALF_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def seconds_until_closed(reader: asyncio.StreamReader, *, limit: float = 5.0) -> float:
    """Read (and drop) whatever the server sends until it closes; how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(limit):  # the failure mode: still open after `limit`
        try:
            while await reader.read(4096):
                pass
        except (ConnectionResetError, ssl.SSLError):
            pass  # a reset or an aborted TLS session is a close too
    return time.monotonic() - started


async def half_request(
    port: int, data: bytes, *, tls: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=insecure() if tls else None
    )
    writer.write(data)
    await writer.drain()
    return reader, writer


def assert_closed_by_the_deadline(elapsed: float) -> None:
    assert DEADLINE * 0.8 <= elapsed < DEADLINE + 2.5, elapsed


# -- the webhook server -------------------------------------------------------------------


class DelayedLookup(ScriptedLookup):
    """A lookup that may take ``delay`` seconds, as one against a loaded API server may."""

    delay = 0.0

    async def world(self, *, namespace: str, target: str) -> World:
        await asyncio.sleep(self.delay)  # simulated work on the server side, not a wait
        return await super().world(namespace=namespace, target=target)


@pytest.fixture
def lookup() -> DelayedLookup:
    return DelayedLookup(World(target=target()))


@pytest.fixture
async def webhook(tmp_path: Path, lookup: DelayedLookup) -> AsyncIterator[WebhookServer]:
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",))
    server = WebhookServer(
        host="127.0.0.1",
        port=0,
        certificates=CertificateReloader(cert=files.cert, key=files.key),
        lookup=lookup,
        approval_secret="",
        clock=FakeClock(),
        metrics=WebhookMetrics.create(CollectorRegistry()),
        limits=FAST,
        body_timeout=DEADLINE,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    async with asyncio.timeout(10):
        await server.started.wait()
    yield server
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("data", [HALF_REQUEST_LINE, HALF_HEADERS], ids=["line", "headers"])
async def test_the_webhook_closes_a_tls_connection_with_half_a_request(
    webhook: WebhookServer, data: bytes
) -> None:
    """Regression (F7): such a connection stayed open past 25 s."""
    reader, writer = await half_request(webhook.port, data, tls=True)
    try:
        assert_closed_by_the_deadline(await seconds_until_closed(reader))
    finally:
        writer.close()


async def test_the_webhook_closes_a_tls_handshake_that_never_completes(
    webhook: WebhookServer,
) -> None:
    reader, writer = await half_request(webhook.port, b"\x16\x03\x01", tls=False)  # no hello
    try:
        assert_closed_by_the_deadline(await seconds_until_closed(reader))
    finally:
        writer.close()


async def test_the_webhook_answers_408_to_a_body_that_does_not_arrive(
    webhook: WebhookServer,
) -> None:
    head = (
        f"POST {INSTANCE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    reader, writer = await half_request(webhook.port, head.encode(), tls=True)
    try:
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        await seconds_until_closed(reader)  # and the connection is closed, within the limit
    finally:
        writer.close()


async def test_the_webhook_still_serves_normal_and_slow_reviews(
    webhook: WebhookServer, lookup: DelayedLookup
) -> None:
    """The header deadline bounds the wait for a request, never a request being handled."""
    url = f"https://127.0.0.1:{webhook.port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + INSTANCE_PATH, json=review(instance()), ssl=insecure()
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["response"]["allowed"] is True
        lookup.delay = 3 * DEADLINE
        async with session.post(
            url + OPERATION_PATH, json=review(operation()), ssl=insecure()
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["response"]["allowed"] is True


async def test_the_webhook_refuses_json_nested_too_deeply_with_a_400(
    webhook: WebhookServer,
) -> None:
    """F4's cousin in the same handler: RecursionError escaped ``request.json()`` (a 500)."""
    url = f"https://127.0.0.1:{webhook.port}{INSTANCE_PATH}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=b"[" * 100_000, ssl=insecure()) as resp,
    ):
        assert resp.status == 400
        assert "nested too deeply" in await resp.text()


# -- the probe and metrics endpoints ------------------------------------------------------


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    served = Endpoints(
        registry=CollectorRegistry(),
        not_ready=list,
        probes=Address("127.0.0.1", 0),
        metrics=Address("127.0.0.1", 0),
        metrics_tls=ServingCert(),
        authorizer=MetricsAuthorizer(api=FakeApiServer(), clock=FakeClock(), timeout_s=3.0),
        limits=FAST,
    )
    await served.start()
    yield served
    await served.stop()


@pytest.mark.parametrize(
    ("listener", "tls"), [("probes", False), ("metrics", True)], ids=["probes-http", "metrics-tls"]
)
@pytest.mark.parametrize("data", [HALF_REQUEST_LINE, HALF_HEADERS], ids=["line", "headers"])
async def test_the_endpoints_close_a_connection_with_half_a_request(
    endpoints: Endpoints, listener: str, tls: bool, data: bytes
) -> None:
    """Regression (F7) for app/http.py: the metrics listener had no header deadline either."""
    reader, writer = await half_request(endpoints.bound[listener].port, data, tls=tls)
    try:
        assert_closed_by_the_deadline(await seconds_until_closed(reader))
    finally:
        writer.close()


async def test_the_metrics_listener_closes_a_tls_handshake_that_never_completes(
    endpoints: Endpoints,
) -> None:
    reader, writer = await half_request(endpoints.bound["metrics"].port, b"", tls=False)
    try:
        assert_closed_by_the_deadline(await seconds_until_closed(reader))
    finally:
        writer.close()


async def test_the_endpoints_still_answer_normal_requests(endpoints: Endpoints) -> None:
    probes = f"http://127.0.0.1:{endpoints.bound['probes'].port}/healthz"
    metrics = f"https://127.0.0.1:{endpoints.bound['metrics'].port}/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(probes) as resp:
            assert (resp.status, await resp.text()) == (200, "ok")
        headers = {"Authorization": "Bearer good"}
        async with session.get(metrics, headers=headers, ssl=insecure()) as resp:
            assert resp.status == 200


async def answer_status(reader: asyncio.StreamReader) -> int:
    """The status of one whole HTTP/1.1 answer (head and Content-Length body), read off."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(
            int(v) for k, _, v in (h.partition(": ") for h in lines) if k == "Content-Length"
        )
        await reader.readexactly(length)
    return int(lines[0].split()[1])


async def test_a_listener_over_its_connection_cap_closes_the_newcomer() -> None:
    served = Endpoints(
        registry=CollectorRegistry(),
        not_ready=list,
        probes=Address("127.0.0.1", 0),
        metrics=None,
        limits=ListenerLimits(header_timeout=30, max_connections=2),
    )
    await served.start()
    port = served.bound["probes"].port
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(2):  # two kept-alive connections, each answered once: both established
            held.append(await half_request(port, request, tls=False))
            assert await answer_status(held[-1][0]) == 200
        held.append(await half_request(port, request, tls=False))
        async with asyncio.timeout(5):
            assert await held[-1][0].read() == b""  # closed unanswered
        # The two within the cap still work.
        reader, writer = held[0]
        writer.write(request)
        assert await answer_status(reader) == 200
    finally:
        for _, writer in held:
            writer.close()
        await served.stop()

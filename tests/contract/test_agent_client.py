"""The control-plane client's retry rules, against a scripted HTTP server (narrow contract
tests: a real control plane will not answer 401, 429 or 500 on demand)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vworkspace.agent.client import (
    ControlPlaneClient,
    ForbiddenError,
    UnauthorizedError,
    UnavailableError,
)
from vworkspace.agent.wire import MEDIA_TYPE, Credentials, JobResult, Outcome
from vworkspace.kube.clock import RealClock
from vworkspace.mockcontrolplane import MockControlPlane


class Scripted:
    """Answers from a script, recording every request."""

    def __init__(self) -> None:
        self.script: list[web.Response] = []
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {
                "path": request.raw_path,
                "headers": dict(request.headers),
                "body": await request.read(),
                "at": time.monotonic(),
            }
        )
        return self.script.pop(0) if self.script else web.Response(status=204)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    server = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_client(
    session: aiohttp.ClientSession, url: str, tokens: list[str]
) -> tuple[ControlPlaneClient, list[int]]:
    reloads: list[int] = []
    current = {"token": tokens[0]}

    async def reload() -> Credentials:
        reloads.append(1)
        current["token"] = tokens[min(len(reloads), len(tokens) - 1)]
        return Credentials(url, "c1", current["token"])

    client = ControlPlaneClient(
        session,
        credentials=lambda: Credentials(url, "c1", current["token"]),
        reload=reload,
        clock=RealClock(),
        rng=random.Random(1),
        backoff_initial=0.01,
    )
    return client, reloads


RESULT = JobResult(
    Outcome.SUCCEEDED,
    __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").UTC),
)


async def test_headers_follow_the_protocol(
    scripted: tuple[Scripted, str], session: aiohttp.ClientSession
) -> None:
    server, url = scripted
    client, _ = make_client(session, url, ["tok-1"])
    await client.ack("job/with space")
    await client.post_result("j2", RESULT)
    ack, result = server.seen
    assert ack["path"] == "/api/agent/jobs/job%2Fwith%20space/ack"
    assert ack["headers"]["Authorization"] == "Bearer tok-1"
    assert ack["headers"]["Accept"] == MEDIA_TYPE
    assert "Content-Type" not in ack["headers"]  # no body, no content type
    assert result["headers"]["Content-Type"] == MEDIA_TYPE
    assert __import__("json").loads(result["body"]) == {
        "outcome": "succeeded",
        "timestamp": "2026-01-01T00:00:00.000000Z",
    }


async def test_401_reloads_the_credentials_and_retries_once(
    scripted: tuple[Scripted, str], session: aiohttp.ClientSession
) -> None:
    server, url = scripted
    client, reloads = make_client(session, url, ["old", "new"])
    server.script = [web.Response(status=401), web.Response(status=204)]
    await client.ack("j")
    assert len(reloads) == 1
    assert [s["headers"]["Authorization"] for s in server.seen] == ["Bearer old", "Bearer new"]
    server.script = [web.Response(status=401), web.Response(status=401)]
    with pytest.raises(UnauthorizedError):
        await client.ack("j")


async def test_429_honours_retry_after(
    scripted: tuple[Scripted, str], session: aiohttp.ClientSession
) -> None:
    server, url = scripted
    client, _ = make_client(session, url, ["t"])
    server.script = [
        web.Response(status=429, headers={"Retry-After": "0.3"}),
        web.Response(status=204),
    ]
    await client.ack("j")
    assert server.seen[1]["at"] - server.seen[0]["at"] >= 0.3


async def test_5xx_backs_off_then_succeeds(
    scripted: tuple[Scripted, str], session: aiohttp.ClientSession
) -> None:
    server, url = scripted
    client, _ = make_client(session, url, ["t"])
    server.script = [web.Response(status=500), web.Response(status=502), web.Response(status=204)]
    await client.post_result("j", RESULT)
    assert len(server.seen) == 3


async def test_409_on_ack_and_result_counts_as_done(
    scripted: tuple[Scripted, str], session: aiohttp.ClientSession
) -> None:
    server, url = scripted
    client, _ = make_client(session, url, ["t"])
    server.script = [web.Response(status=409), web.Response(status=409)]
    await client.ack("j")
    await client.post_result("j", RESULT)
    assert len(server.seen) == 2


async def test_an_unreachable_control_plane_is_unavailable_and_the_token_stays_secret(
    session: aiohttp.ClientSession,
) -> None:
    client, _ = make_client(session, "http://127.0.0.1:9", ["super-secret-token"])
    client.attempts = 2
    with pytest.raises(UnavailableError) as err:
        await client.ack("j")
    assert "super-secret-token" not in str(err.value)


async def test_against_the_mock_a_wrong_cluster_is_forbidden(
    session: aiohttp.ClientSession,
) -> None:
    async with MockControlPlane() as mock:
        mock.set_bootstrap_token("c1", "good")
        client, _ = make_client(session, mock.url, ["good"])
        assert await client.fetch_jobs(cluster_id="c1", wait=0) == []
        with pytest.raises(ForbiddenError):
            await client.fetch_jobs(cluster_id="someone-else", wait=0)
        token = await client.rotate()
        assert token == "bootstrap-c1-rotated-1"

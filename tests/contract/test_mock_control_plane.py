"""The mock control plane speaks the protocol of docs/pull-mode.md, "Mock endpoints"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.mockcontrolplane.server import ADMIN_HEADER, MEDIA_TYPE

CLUSTER = "cluster-1"
TOKEN = "token-1"


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane(visibility_timeout=0.5) as server:
        server.set_bootstrap_token(CLUSTER, TOKEN)
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def headers(
    token: str | None = TOKEN, *, accept: str = MEDIA_TYPE, body: bool = False
) -> dict[str, str]:
    result = {"Accept": accept}
    if token is not None:
        result["Authorization"] = f"Bearer {token}"
    if body:
        result["Content-Type"] = MEDIA_TYPE
    return result


async def call(
    http: aiohttp.ClientSession,
    mock: MockControlPlane,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    **hdr: Any,
) -> tuple[int, Any, str]:
    data = (
        raw
        if raw is not None
        else (None if body is None else __import__("json").dumps(body).encode())
    )
    async with http.request(
        method, mock.url + path, data=data, headers=headers(body=data is not None, **hdr)
    ) as resp:
        text = await resp.text()
        parsed = await resp.json(content_type=None) if text else None
        return resp.status, parsed, resp.headers.get("Content-Type", "")


async def test_healthz(http: aiohttp.ClientSession, mock: MockControlPlane) -> None:
    async with http.get(mock.url + "/healthz") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")


async def test_register_exchanges_a_token_once(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    mock.add_registration_token("reg-1", "cluster-9")
    status, body, ctype = await call(
        http,
        mock,
        "POST",
        "/api/agent/register",
        body={"registrationToken": "reg-1"},
        token="reg-1",
    )
    assert status == 200
    assert body == {"clusterId": "cluster-9", "token": "bootstrap-cluster-9"}
    assert ctype.startswith("application/vnd.vworkspace.agent.v1+json")
    assert "reg-1" not in mock.state.registration_tokens  # consumed


async def test_register_checks_media_type_bearer_and_json(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    status, body, _ = await call(
        http, mock, "POST", "/api/agent/register", body={}, token="t", accept="application/json"
    )
    assert (status, body["error"]) == (400, "UnsupportedMediaType")
    status, body, _ = await call(http, mock, "POST", "/api/agent/register", body={}, token=None)
    assert (status, body["error"]) == (401, "Unauthorized")
    status, body, _ = await call(http, mock, "POST", "/api/agent/register", raw=b"{nope", token="t")
    assert (status, body["error"]) == (400, "InvalidJSON")
    # Issue 24, F4: a number past Python's int digit limit is bad JSON (400), not a 500.
    long_number = b'{"clusterId": ' + b"7" * 5_000 + b"}"
    status, body, _ = await call(
        http, mock, "POST", "/api/agent/register", raw=long_number, token="t"
    )
    assert (status, body["error"]) == (400, "InvalidJSON")
    assert "a number too long to decode" in body["message"]


async def test_jobs_auth_rules(http: aiohttp.ClientSession, mock: MockControlPlane) -> None:
    status, body, _ = await call(http, mock, "GET", "/api/agent/jobs?wait=0")
    assert (status, body["error"]) == (400, "MissingCluster")
    status, body, _ = await call(
        http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0", token=None
    )
    assert (status, body["error"]) == (403, "Forbidden")  # never 401 on this endpoint
    status, body, _ = await call(
        http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0", token="wrong"
    )
    assert status == 403
    mock.set_bootstrap_token("other", "other-token")
    status, body, _ = await call(
        http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0", token="other-token"
    )
    assert (status, body["error"]) == (403, "Forbidden")  # cluster mismatch
    status, body, _ = await call(
        http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0", accept="text/plain"
    )
    assert (status, body["error"]) == (400, "UnsupportedMediaType")


async def test_jobs_come_with_go_style_zero_fields(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    await mock.enqueue(CLUSTER, {"id": "j1", "kind": "apply", "payload": {"a": 1}})
    status, body, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0")
    assert status == 200
    assert body["jobs"] == [
        {
            "id": "j1",
            "kind": "apply",
            "payload": {"a": 1},
            "idempotencyKey": "",
            "createdAt": "0001-01-01T00:00:00Z",
            "expiresAt": "0001-01-01T00:00:00Z",
        }
    ]
    status, body, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0")
    assert body == {"jobs": None}


async def test_long_poll_wakes_the_moment_a_job_is_enqueued(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    poll = asyncio.create_task(
        call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=30")
    )
    await asyncio.sleep(0.3)
    assert not poll.done()
    enqueued = time.perf_counter()
    await AdminClient(mock.url).enqueue(CLUSTER, {"id": "wake", "kind": "apply", "payload": {}})
    status, body, _ = await asyncio.wait_for(poll, 5)
    latency = time.perf_counter() - enqueued
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == ["wake"]
    assert latency < 0.1, latency  # no sleep loop between enqueue and delivery
    print(
        f"long-poll wake-up latency (admin enqueue over HTTP -> jobs answer): {latency * 1000:.1f} ms"
    )


async def test_an_idle_long_poll_returns_empty_after_wait(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    started = time.perf_counter()
    status, body, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=1")
    assert (status, body) == (200, {"jobs": None})
    assert 0.9 < time.perf_counter() - started < 2


async def test_a_delivered_job_without_result_is_delivered_again(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    await mock.enqueue(CLUSTER, {"id": "lost", "kind": "apply", "payload": {}})
    _, first, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0")
    assert [j["id"] for j in first["jobs"]] == ["lost"]
    # The agent "crashed": no result. A waiting poll gets it again after the visibility timeout.
    _, again, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=5")
    assert [j["id"] for j in again["jobs"]] == ["lost"]
    assert await call(
        http,
        mock,
        "POST",
        "/api/agent/jobs/lost/result",
        body={"outcome": "noop", "timestamp": "2026-11-22T00:00:00Z"},
    ) == (204, None, "")
    _, after, _ = await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=1")
    assert after == {"jobs": None}  # answered jobs are never redelivered


async def test_ack_result_and_duplicates(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    assert (await call(http, mock, "POST", "/api/agent/jobs/j1/ack"))[0] == 204
    assert mock.was_acked("j1")
    assert (await call(http, mock, "POST", "/api/agent/jobs/j1/ack", token="bad"))[0] == 401
    result = {"outcome": "succeeded", "timestamp": "2026-11-22T00:00:00Z"}
    assert (
        await call(
            http,
            mock,
            "POST",
            "/api/agent/jobs/j1/status",
            body={"phase": "Running", "timestamp": "x"},
        )
    )[0] == 204
    assert mock.job_statuses("j1") == [{"phase": "Running", "timestamp": "x"}]
    assert (await call(http, mock, "POST", "/api/agent/jobs/j1/result", body=result))[0] == 204
    status, body, _ = await call(
        http, mock, "POST", "/api/agent/jobs/j1/result", body={**result, "outcome": "failed"}
    )
    assert (status, body) == (409, None)
    assert (await call(http, mock, "POST", "/api/agent/jobs/j1/ack"))[0] == 409  # already closed
    assert mock.job_result("j1") == result
    assert await AdminClient(mock.url).job_result("j1") == result
    assert await AdminClient(mock.url).job_result("unknown") is None


async def test_events_keep_the_first_per_key(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    ref = {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "namespace": "n",
        "name": "a",
    }
    first = {"eventKey": "k1", "kind": "ConditionTransition", "resourceRef": ref, "timestamp": "t1"}
    dup = {**first, "timestamp": "t2"}
    keyless = {
        "kind": "ClusterHeartbeat",
        "resourceRef": {**ref, "kind": "Cluster"},
        "timestamp": "t3",
    }
    assert (
        await call(
            http, mock, "POST", "/api/agent/events", body={"events": [first, dup, keyless, keyless]}
        )
    )[0] == 204
    assert [e["timestamp"] for e in mock.events(CLUSTER)] == ["t1", "t3", "t3"]
    admin = AdminClient(mock.url)
    assert [e["timestamp"] for e in await admin.events(CLUSTER, kind="ApplicationInstance")] == [
        "t1"
    ]
    assert await admin.events(CLUSTER, name="nope") == []
    status, body, _ = await call(http, mock, "POST", "/api/agent/events", body={"events": "x"})
    assert (status, body["error"]) == (400, "InvalidJSON")


async def test_rotation_invalidates_the_old_token_at_once(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    status, body, _ = await call(http, mock, "POST", "/api/agent/credentials/rotate", body={})
    assert (status, body) == (200, {"token": f"bootstrap-{CLUSTER}-rotated-1"})
    assert (await call(http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0"))[0] == 403
    assert (
        await call(
            http, mock, "GET", f"/api/agent/jobs?cluster={CLUSTER}&wait=0", token=body["token"]
        )
    )[0] == 200


async def test_admin_token_and_validation(http: aiohttp.ClientSession) -> None:
    async with MockControlPlane(admin_token="sesame") as mock:
        assert await call(
            http, mock, "POST", "/api/admin/enqueue", body={"clusterId": "c", "job": {"id": "1"}}
        ) == (
            401,
            {"error": "Unauthorized", "message": f"missing or wrong {ADMIN_HEADER}"},
            "application/vnd.vworkspace.agent.v1+json",
        )
        admin = AdminClient(mock.url, admin_token="sesame")
        await admin.enqueue("c", {"id": "1", "kind": "apply", "payload": {}})
        assert mock.pending_count("c") == 1
        status, _, _ = await call(
            http, mock, "POST", "/api/admin/enqueue", body={"job": {"id": "1"}}
        )
        assert status == 401
        async with http.post(
            mock.url + "/api/admin/enqueue",
            json={"job": {"id": "1"}},
            headers={ADMIN_HEADER: "sesame"},
        ) as resp:
            assert (resp.status, (await resp.json(content_type=None))["error"]) == (
                400,
                "MissingCluster",
            )
        async with http.post(
            mock.url + "/api/admin/enqueue",
            json={"clusterId": "c", "job": {}},
            headers={ADMIN_HEADER: "sesame"},
        ) as resp:
            assert (resp.status, (await resp.json(content_type=None))["error"]) == (
                400,
                "MissingJobID",
            )
        async with http.get(
            mock.url + "/api/admin/events", headers={ADMIN_HEADER: "sesame"}
        ) as resp:
            assert (resp.status, (await resp.json(content_type=None))["error"]) == (
                400,
                "MissingCluster",
            )


async def test_unknown_paths_are_404_with_an_error_body(
    http: aiohttp.ClientSession, mock: MockControlPlane
) -> None:
    status, body, _ = await call(http, mock, "GET", "/api/agent/nothing")
    assert (status, body) == (404, {"error": "NotFound", "message": "unknown endpoint"})

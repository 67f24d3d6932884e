"""The mock's HTTP API (aiohttp): agent endpoints under /api/agent, admin under /api/admin.

Status codes, error bodies (``{"error", "message"}``) and media-type checks follow the Go mock
(docs/pull-mode.md, "Mock endpoints"): every agent request must accept
``application/vnd.vworkspace.agent.v1+json`` (400 ``UnsupportedMediaType`` otherwise); a body must
be JSON (400 ``InvalidJSON``); a missing or unknown bearer is 401 (403 on the jobs endpoint, which
never answers 401); a cluster mismatch is 403. Each request is logged in one line, never with its
token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from vworkspace.kube.rest import safejson
from vworkspace.mockcontrolplane import sealer
from vworkspace.mockcontrolplane.signer import MODES
from vworkspace.mockcontrolplane.state import EncryptError, Fault, MockState, wire_job

MEDIA_TYPE = "application/vnd.vworkspace.agent.v1+json"
ADMIN_HEADER = "X-Mock-Control-Plane-Admin-Token"
MAX_WAIT = 300
DEFAULT_WAIT = 30
_log = structlog.get_logger("vworkspace.mockcontrolplane")

STATE_KEY = web.AppKey("state", MockState)
ADMIN_KEY = web.AppKey("admin_token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any) -> web.Response:
    # Exactly the media type, no charset parameter, as the Go mock answers.
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": MEDIA_TYPE}
    )


def error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": code, "message": message})


def _raw(fault: Fault) -> web.Response:
    """A scripted hostile answer: the fault's bytes under its status and content type."""
    headers = {**fault.headers, "Content-Type": fault.content_type}
    return web.Response(status=fault.status or 200, body=fault.body, headers=headers)


def ok_json(body: Any) -> web.Response:
    return _json(200, body)


def no_content() -> web.Response:
    return web.Response(status=204)


class _RejectError(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _state(request: web.Request) -> MockState:
    return request.app[STATE_KEY]


def _check_media(request: web.Request) -> None:
    if "vworkspace.agent.v1" not in request.headers.get("Accept", ""):
        raise _RejectError(error(400, "UnsupportedMediaType", f"Accept must be {MEDIA_TYPE}"))


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else ""


def _cluster_of(request: web.Request, *, status: int = 401) -> str:
    token = _bearer(request)
    cluster = _state(request).bearer_tokens.get(token) if token else None
    if cluster is None:
        code = "Unauthorized" if status == 401 else "Forbidden"
        raise _RejectError(error(status, code, "missing or unknown bearer token"))
    return cluster


async def _json_body(request: web.Request, *, required: bool = True) -> Any:
    raw = await request.read()
    if not raw:
        if required:
            raise _RejectError(error(400, "InvalidJSON", "request body is empty"))
        return {}
    try:
        return safejson.loads(raw)
    except safejson.JsonError as err:
        raise _RejectError(error(400, "InvalidJSON", f"invalid JSON: {err}")) from None


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    state = _state(request)
    state.requests += 1
    agent = request.path.startswith("/api/agent/")
    fault = state.take_fault(request.path, request.method) if agent else None
    if fault is not None and fault.delay:
        await asyncio.sleep(fault.delay)
    try:
        if fault is not None and fault.body is not None:
            await request.read()  # drain what the agent sent; the answer ignores it
            raise _RejectError(_raw(fault))
        if fault is not None and fault.status:
            raise _RejectError(
                error(fault.status, "InjectedFault", f"scripted fault {fault.status}")
            )
        response = await handler(request)
    except _RejectError as reject:
        response = reject.response
    except web.HTTPNotFound:
        response = error(404, "NotFound", "unknown endpoint")
    except web.HTTPMethodNotAllowed:
        response = error(405, "MethodNotAllowed", "method not allowed")
    _log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return response


# -- agent endpoints -------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def register(request: web.Request) -> web.Response:
    _check_media(request)
    bearer = _bearer(request)
    if not bearer:
        raise _RejectError(error(401, "Unauthorized", "missing bearer token"))
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _RejectError(error(400, "InvalidJSON", "body must be an object"))
    token = str(body.get("registrationToken") or bearer)
    registered = _state(request).register(token, str(body.get("clusterId") or ""))
    if registered is None:
        raise _RejectError(error(401, "Unauthorized", "unknown or already used registration token"))
    cluster_id, bootstrap = registered
    public_key = body.get("encryptionPublicKey")
    if isinstance(public_key, str) and public_key:
        _state(request).encryption_keys[cluster_id] = public_key
    return ok_json({"clusterId": cluster_id, "token": bootstrap})


async def jobs(request: web.Request) -> web.Response:
    cluster = request.query.get("cluster", "")
    if not cluster:
        raise _RejectError(error(400, "MissingCluster", "query parameter cluster is required"))
    _check_media(request)
    if _cluster_of(request, status=403) != cluster:
        raise _RejectError(error(403, "Forbidden", "token is not bound to this cluster"))
    try:
        wait = int(request.query.get("wait", DEFAULT_WAIT))
    except ValueError:
        wait = DEFAULT_WAIT
    if wait < 0:
        wait = DEFAULT_WAIT
    found = await _state(request).wait_for_jobs(cluster, min(wait, MAX_WAIT))
    return ok_json({"jobs": [wire_job(j) for j in found] if found else None})


async def ack(request: web.Request) -> web.Response:
    _check_media(request)
    _cluster_of(request)
    job_id = request.match_info["job_id"]
    state = _state(request)
    if job_id in state.results:
        return web.Response(status=409)
    state.ack(job_id)
    return no_content()


async def status(request: web.Request) -> web.Response:
    _check_media(request)
    _cluster_of(request)
    body = await _json_body(request)
    _state(request).statuses.setdefault(request.match_info["job_id"], []).append(body)
    return no_content()


async def result(request: web.Request) -> web.Response:
    _check_media(request)
    _cluster_of(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not body.get("outcome"):
        raise _RejectError(error(400, "InvalidJSON", "result needs an outcome"))
    if not _state(request).record_result(request.match_info["job_id"], body):
        return web.Response(status=409)
    return no_content()


async def events(request: web.Request) -> web.Response:
    _check_media(request)
    cluster = _cluster_of(request)
    body = await _json_body(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise _RejectError(error(400, "InvalidJSON", 'body must be {"events": [...]}'))
    _state(request).add_events(cluster, [e for e in items if isinstance(e, dict)])
    return no_content()


async def rotate(request: web.Request) -> web.Response:
    _check_media(request)
    cluster = _cluster_of(request)
    await _json_body(request, required=False)
    return ok_json({"token": _state(request).rotate(cluster)})


# -- admin endpoints -------------------------------------------------------------------------


def _check_admin(request: web.Request) -> None:
    expected = request.app[ADMIN_KEY]
    if expected and request.headers.get(ADMIN_HEADER) != expected:
        raise _RejectError(error(401, "Unauthorized", f"missing or wrong {ADMIN_HEADER}"))


async def admin_enqueue(request: web.Request) -> web.Response:
    _check_admin(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _RejectError(error(400, "InvalidJSON", "body must be an object"))
    cluster = str(body.get("clusterId") or "")
    job = body.get("job")
    if not cluster:
        raise _RejectError(error(400, "MissingCluster", "clusterId is required"))
    if not isinstance(job, dict) or not job.get("id"):
        raise _RejectError(error(400, "MissingJobID", "job.id is required"))
    signing = body.get("signing") or "sign"
    if signing not in MODES:
        raise _RejectError(error(400, "InvalidSigning", f"signing must be one of {MODES}"))
    encrypt = body.get("encrypt") or ""
    if encrypt and encrypt not in sealer.MODES:
        raise _RejectError(error(400, "InvalidEncrypt", f"encrypt must be one of {sealer.MODES}"))
    try:
        await _state(request).enqueue(
            cluster,
            job,
            signing=signing,
            encrypt=encrypt,
            recipient=str(body.get("recipient") or ""),
        )
    except EncryptError as err:
        raise _RejectError(error(400, "InvalidEncrypt", str(err))) from None
    return no_content()


async def admin_events(request: web.Request) -> web.Response:
    _check_admin(request)
    cluster = request.query.get("cluster", "")
    if not cluster:
        raise _RejectError(error(400, "MissingCluster", "query parameter cluster is required"))
    found = _state(request).events(
        cluster,
        kind=request.query.get("kind", ""),
        namespace=request.query.get("namespace", ""),
        name=request.query.get("name", ""),
    )
    return ok_json({"events": found})


async def admin_result(request: web.Request) -> web.Response:
    _check_admin(request)
    found = _state(request).results.get(request.match_info["job_id"])
    if found is None:
        raise _RejectError(error(404, "NotFound", "no result for this job"))
    return ok_json(found)


async def not_found(request: web.Request) -> web.Response:
    return error(404, "NotFound", "unknown endpoint")


def create_app(state: MockState, *, admin_token: str = "") -> web.Application:
    app = web.Application(middlewares=[_middleware], client_max_size=8 * 1024 * 1024)
    app[STATE_KEY] = state
    app[ADMIN_KEY] = admin_token
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/agent/register", register)
    app.router.add_get("/api/agent/jobs", jobs)
    app.router.add_post("/api/agent/jobs/{job_id}/ack", ack)
    app.router.add_post("/api/agent/jobs/{job_id}/status", status)
    app.router.add_post("/api/agent/jobs/{job_id}/result", result)
    app.router.add_post("/api/agent/events", events)
    app.router.add_post("/api/agent/credentials/rotate", rotate)
    app.router.add_post("/api/admin/enqueue", admin_enqueue)
    app.router.add_get("/api/admin/events", admin_events)
    app.router.add_get("/api/admin/jobs/{job_id}/result", admin_result)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app

"""The HTTP client of the Pull protocol (aiohttp); retry rules: docs/pull-mode.md, "Retries and
timeouts".

* Every request carries ``Authorization: Bearer``, ``Accept`` with the agent media type, and
  ``Content-Type`` only with a body; every request has a timeout (5 min, above the long-poll wait).
* **401**: the credentials are reloaded (the Secret may hold a rotated token) and the request is
  retried once; a second 401 is raised as :class:`UnauthorizedError`.
* **429 / 503**: wait ``Retry-After`` (seconds), then retry.
* **Transport errors and other 5xx**: exponential backoff with jitter, capped at 30 s, reset
  after a success.
* 409 on ack and result counts as success (the job was already closed).
* Other 4xx are raised at once as typed errors; tokens are never logged or put in messages.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from vworkspace.agent.wire import MEDIA_TYPE, Credentials, JobResult
from vworkspace.kube.backoff import Backoff
from vworkspace.kube.clock import Clock

JsonObj = dict[str, Any]
AGENT_TIMEOUT = 300.0


class ControlPlaneError(Exception):
    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NoCredentialsError(ControlPlaneError):
    """No complete credentials yet (not registered)."""


class UnauthorizedError(ControlPlaneError):
    """401 even after reloading the credentials."""


class ForbiddenError(ControlPlaneError):
    """403: the token is not bound to this cluster."""


class RetryAfterError(ControlPlaneError):
    """429/503 with the server's requested delay."""

    def __init__(self, message: str, *, status: int, retry_after: float) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class UnavailableError(ControlPlaneError):
    """Transport error or 5xx: the control plane is unreachable or failing."""


def _retry_after(headers: Any, default: float) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except (TypeError, ValueError):
        return default


async def _error_from(resp: aiohttp.ClientResponse) -> ControlPlaneError:
    text = await resp.text()
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        body = {}
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    message = (
        str(body.get("message", "")) if isinstance(body, dict) else ""
    ) or f"{resp.status} {resp.reason}"
    if resp.status == 401:
        return UnauthorizedError(message, status=401, code=code)
    if resp.status == 403:
        return ForbiddenError(message, status=403, code=code)
    if resp.status in (429, 503):
        return RetryAfterError(
            message, status=resp.status, retry_after=_retry_after(resp.headers, 1.0)
        )
    if resp.status >= 500:
        return UnavailableError(message, status=resp.status, code=code)
    return ControlPlaneError(message, status=resp.status, code=code)


class ControlPlaneClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        credentials: Callable[[], Credentials | None],
        reload: Callable[[], Awaitable[Credentials | None]],
        clock: Clock,
        rng: random.Random | None = None,
        timeout: float = AGENT_TIMEOUT,
        attempts: int = 5,
        backoff_initial: float = 0.5,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._reload = reload
        self._clock = clock
        self._timeout = timeout
        self.attempts = attempts
        self.backoff = Backoff(
            clock=clock,
            rng=rng or random.Random(),
            initial=backoff_initial,
            cap=30.0,
            reset_after=60.0,
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (200, 204),
        attempts: int | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        reloaded = False
        tries = attempts or self.attempts
        last: ControlPlaneError | None = None
        attempt = 0
        while attempt < tries:
            credentials = self._credentials()
            if credentials is None or not credentials.complete:
                raise NoCredentialsError("no agent credentials yet")
            headers = {"Authorization": f"Bearer {credentials.token}", "Accept": MEDIA_TYPE}
            data = None
            if body is not None:
                headers["Content-Type"] = MEDIA_TYPE
                data = json.dumps(body).encode()
            delay: float
            try:
                async with self._session.request(
                    method,
                    credentials.base_url.rstrip("/") + path,
                    params=query,
                    data=data,
                    headers=headers,
                    # aiohttp would otherwise send application/octet-stream on a bodiless POST.
                    skip_auto_headers=() if data is not None else ("Content-Type",),
                    timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=10),
                ) as resp:
                    if resp.status in ok:
                        self.backoff.reset()
                        text = await resp.text()
                        return json.loads(text) if text else None
                    error = await _error_from(resp)
            except (aiohttp.ClientError, TimeoutError) as err:
                error = UnavailableError(
                    f"{method} {path}: {type(err).__name__}: {err}".rstrip(": ")
                )
            if isinstance(error, UnauthorizedError) and not reloaded:
                reloaded = True
                await self._reload()  # maybe a rotated token; one retry, not counted
                continue
            if not isinstance(error, RetryAfterError | UnavailableError):
                raise error
            last = error
            attempt += 1
            if attempt < tries:
                # Only a retry consumes a backoff step; a caller that retries on its own (the
                # poller's fetch loop) owns the backoff for single-attempt calls.
                delay = (
                    error.retry_after
                    if isinstance(error, RetryAfterError)
                    else self.backoff.next_delay()
                )
                await self._clock.sleep(delay)
        assert last is not None
        raise last

    async def fetch_jobs(self, *, cluster_id: str, wait: int) -> list[Any]:
        body = await self._call(
            "GET",
            "/api/agent/jobs",
            query={"cluster": cluster_id, "wait": str(wait)},
            ok=(200,),
            attempts=1,
        )
        jobs = body.get("jobs") if isinstance(body, dict) else None
        return list(jobs or [])

    async def ack(self, job_id: str) -> None:
        await self._call("POST", f"/api/agent/jobs/{_escape(job_id)}/ack", ok=(204, 409))

    async def post_result(self, job_id: str, result: JobResult) -> None:
        await self._call(
            "POST",
            f"/api/agent/jobs/{_escape(job_id)}/result",
            body=result.to_wire(),
            ok=(204, 409),
        )

    async def post_events(self, events: list[JsonObj]) -> None:
        await self._call(
            "POST", "/api/agent/events", body={"events": events}, ok=(204,), attempts=1
        )

    async def rotate(self) -> str:
        body = await self._call(
            "POST", "/api/agent/credentials/rotate", body={}, ok=(200,), attempts=1
        )
        token = str((body or {}).get("token", "")).strip()
        if not token:
            raise ControlPlaneError("rotate answered without a token")
        return token


def _escape(job_id: str) -> str:
    from urllib.parse import quote

    return quote(job_id, safe="")


async def register(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    registration_token: str,
    cluster_id: str = "",
    timeout_s: float = 120.0,
) -> tuple[str, str]:
    """Exchange a one-time registration token; return (cluster id, bearer token)."""
    body: JsonObj = {"registrationToken": registration_token}
    if cluster_id:
        body["clusterId"] = cluster_id
    headers = {
        "Authorization": f"Bearer {registration_token}",
        "Accept": MEDIA_TYPE,
        "Content-Type": MEDIA_TYPE,
    }
    try:
        async with session.post(
            base_url.rstrip("/") + "/api/agent/register",
            data=json.dumps(body).encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if resp.status != 200:
                raise await _error_from(resp)
            answer = json.loads(await resp.text())
    except (aiohttp.ClientError, TimeoutError) as err:
        raise UnavailableError(f"cannot reach {base_url}: {type(err).__name__}: {err}") from None
    issued, token = str(answer.get("clusterId", "")).strip(), str(answer.get("token", "")).strip()
    if not issued or not token:
        raise ControlPlaneError("registration answer lacks clusterId or token")
    return issued, token

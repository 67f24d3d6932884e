"""The HTTP client of the Pull protocol (aiohttp); retry rules: docs/pull-mode.md, "Retries and
timeouts".

* Every request carries ``Authorization: Bearer``, ``Accept`` with the agent media type, and
  ``Content-Type`` only with a body; every request has a timeout (5 min, above the long-poll wait).
  Redirects are not followed: a bearer token never goes where a proxy points it.
* **401**: the credentials are reloaded (the Secret may hold a rotated token) and the request is
  retried once; a second 401 is raised as :class:`UnauthorizedError`.
* **429 / 503**: wait ``Retry-After`` (seconds, capped at 5 min), then retry.
* **Transport errors and other 5xx**: exponential backoff with jitter, capped at 30 s, reset
  after a success.
* **Answers the protocol does not allow** (an HTML login page with 200, a truncated or oversized
  body, JSON of the wrong shape, a redirect): :class:`ProtocolError`, counted in
  ``vworkspace_agent_protocol_errors_total{endpoint,reason}`` and retried like a 5xx
  (:mod:`vworkspace.agent.answers` reads bodies capped at 4 MiB).
* 409 on ack and result counts as success (the job was already closed).
* Other 4xx are raised at once as typed errors; tokens are never logged or put in messages.
* **Egress** (agent/egress.py): with an :class:`~vworkspace.agent.egress.Egress` session, a
  proxy's own failure is blamed on the proxy: a refused CONNECT (407, 403, 502) is a
  ProtocolError ``proxy`` whose message starts with ``proxy <url without credentials>:``, an
  unreachable proxy an UnavailableError saying so; a refused pin or unusable TLS material
  (nothing was sent) is an UnavailableError naming the flag or Secret key. All are retried with
  backoff like other transport errors.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import structlog

from vworkspace.agent import answers
from vworkspace.agent.egress import Egress, connection_detail, describe_failure
from vworkspace.agent.errors import (
    ControlPlaneError,
    ForbiddenError,
    NoCredentialsError,
    ProtocolError,
    RetryAfterError,
    UnauthorizedError,
    UnavailableError,
)
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.wire import MEDIA_TYPE, Credentials, JobResult
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.backoff import Backoff
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest import safejson

__all__ = [
    "ControlPlaneClient",
    "ControlPlaneError",
    "ForbiddenError",
    "NoCredentialsError",
    "ProtocolError",
    "RetryAfterError",
    "UnauthorizedError",
    "UnavailableError",
    "register",
]

T = TypeVar("T")
# The operator's session is an Egress; tests and embedders may pass a plain aiohttp session.
HttpSession = aiohttp.ClientSession | Egress
AGENT_TIMEOUT = 300.0
MAX_RETRY_AFTER = 300.0
_log = structlog.get_logger("vworkspace.agent.client")


def _retry_after(headers: Any, default: float) -> float:
    try:
        value = float(headers.get("Retry-After", default))
    except (TypeError, ValueError):
        return default  # e.g. the HTTP-date form
    if value != value:  # NaN
        return default
    return min(MAX_RETRY_AFTER, max(0.0, value))


async def _error_from(
    resp: aiohttp.ClientResponse, *, endpoint: str, secrets: tuple[str, ...]
) -> ControlPlaneError:
    raw = await answers.read_prefix(resp)
    content_type = resp.headers.get("Content-Type", "")
    if resp.status < 400:
        # 2xx/3xx the endpoint does not use (a redirect to a login page, a 200 instead of 204).
        return ProtocolError(
            f"{endpoint}: unexpected {resp.status} ({content_type or 'no content type'}, "
            f"{answers.excerpt(raw, secrets=secrets)!r})",
            endpoint=endpoint,
            reason="status",
            status=resp.status,
        )
    try:
        body = safejson.loads(raw) if raw and answers.is_json_type(content_type) else {}
    except safejson.JsonError:
        body = {}  # an error answer is described by its status and excerpt instead
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error", ""))[: answers.EXCERPT]
    message = answers.excerpt(str(body.get("message", "")).encode(), secrets=secrets)
    if not message:
        detail = answers.excerpt(raw, secrets=secrets) if raw else ""
        message = f"{resp.status} {resp.reason}" + (f": {detail!r}" if detail else "")
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


def proxy_of(session: HttpSession, url: str) -> str:
    """The proxy ``url`` goes through, without credentials, for messages ("" when direct)."""
    return session.proxy_label(url) if isinstance(session, Egress) else ""


def _transport_error(
    endpoint: str, method: str, path: str, err: Exception, *, url: str = "", proxy: str = ""
) -> UnavailableError:
    described = describe_failure(err, url=url, proxy=proxy)
    if described is not None:
        text, protocol = described
        if protocol:
            return ProtocolError(text[:600], endpoint=endpoint, reason="proxy")
        # The proxy's own failures start with "proxy <url>:" (the contract the docs show);
        # refusals of the TLS material or the pin say which request was held back.
        return UnavailableError(
            (text if text.startswith("proxy ") else f"{method} {path}: {text}")[:600]
        )
    text = f"{method} {path}: {type(err).__name__}: {connection_detail(err)}".rstrip(": ")[:600]
    if isinstance(err, aiohttp.ClientPayloadError):
        # The body was cut short (a middlebox, a reset mid-answer).
        return ProtocolError(text, endpoint=endpoint, reason="truncated")
    return UnavailableError(text)


class ControlPlaneClient:
    def __init__(
        self,
        session: HttpSession,
        *,
        credentials: Callable[[], Credentials | None],
        reload: Callable[[], Awaitable[Credentials | None]],
        clock: Clock,
        rng: random.Random | None = None,
        timeout: float = AGENT_TIMEOUT,
        attempts: int = 5,
        backoff_initial: float = 0.5,
        metrics: AgentMetrics | None = None,
        max_body: int = answers.MAX_BODY,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._reload = reload
        self._clock = clock
        self._timeout = timeout
        self.metrics = metrics
        self.max_body = max_body
        self.attempts = attempts
        self.backoff = Backoff(
            clock=clock,
            rng=rng or random.Random(),
            initial=backoff_initial,
            cap=30.0,
            reset_after=60.0,
        )

    def count(self, err: ControlPlaneError) -> None:
        if isinstance(err, ProtocolError) and self.metrics is not None:
            self.metrics.protocol_errors.labels(err.endpoint, err.reason).inc()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        decode: Callable[[Any], T] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 204),
        attempts: int | None = None,
        query: dict[str, str] | None = None,
        secret_answer: bool = False,
    ) -> T | None:
        """One request with the retry rules; ``decode`` validates a 200 answer's JSON (and is
        required for answers with a body); bodiless answers return None."""
        reloaded = False
        tries = attempts or self.attempts
        last: ControlPlaneError | None = None
        attempt = 0
        while attempt < tries:
            credentials = self._credentials()
            if credentials is None or not credentials.complete:
                raise NoCredentialsError("no agent credentials yet")
            secrets = (credentials.token,)
            headers = {"Authorization": f"Bearer {credentials.token}", "Accept": MEDIA_TYPE}
            data = None
            if body is not None:
                headers["Content-Type"] = MEDIA_TYPE
                data = json.dumps(body).encode()
            url = credentials.base_url.rstrip("/") + path
            proxy = proxy_of(self._session, url)
            try:
                async with self._session.request(
                    method,
                    url,
                    params=query,
                    data=data,
                    headers=headers,
                    # aiohttp would otherwise send application/octet-stream on a bodiless POST.
                    skip_auto_headers=() if data is not None else ("Content-Type",),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=10),
                ) as resp:
                    if resp.status in ok:
                        if decode is None or resp.status != 200:
                            self.backoff.reset()
                            return None
                        raw = await answers.read_capped(
                            resp, endpoint=endpoint, limit=self.max_body
                        )
                        decoded = decode(
                            answers.decode_json(
                                resp,
                                raw,
                                endpoint=endpoint,
                                secrets=secrets,
                                show_body=not secret_answer,
                            )
                        )
                        self.backoff.reset()
                        return decoded
                    error = await _error_from(resp, endpoint=endpoint, secrets=secrets)
            except ProtocolError as err:
                error = _through_proxy(err, proxy)
            except (aiohttp.ClientError, TimeoutError) as err:
                error = _transport_error(endpoint, method, path, err, url=url, proxy=proxy)
            self.count(error)
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
                _log.warning(
                    "control plane request failed; retrying",
                    endpoint=endpoint,
                    error=str(error),
                    retry_in=round(delay, 2),
                )
                await self._clock.sleep(delay)
        assert last is not None
        raise last

    async def fetch_jobs(self, *, cluster_id: str, wait: int) -> list[Any]:
        jobs = await self._call(
            "GET",
            "/api/agent/jobs",
            endpoint="jobs",
            decode=answers.jobs_of,
            query={"cluster": cluster_id, "wait": str(wait)},
            ok=(200,),
            attempts=1,
        )
        return jobs or []

    async def ack(self, job_id: str) -> None:
        await self._call(
            "POST", f"/api/agent/jobs/{_escape(job_id)}/ack", endpoint="ack", ok=(204, 409)
        )

    async def post_result(self, job_id: str, result: JobResult) -> None:
        await self._call(
            "POST",
            f"/api/agent/jobs/{_escape(job_id)}/result",
            endpoint="result",
            body=result.to_wire(),
            ok=(204, 409),
        )

    async def post_events(self, events: list[JsonObj], *, endpoint: str = "events") -> None:
        """``endpoint`` labels the metrics: the heartbeat uses the events endpoint too."""
        await self._call(
            "POST",
            "/api/agent/events",
            endpoint=endpoint,
            body={"events": events},
            ok=(204,),
            attempts=1,
        )

    async def rotate(self) -> str:
        def decode(body: Any) -> str:
            return answers.token_of(body, endpoint="rotate")

        token = await self._call(
            "POST",
            "/api/agent/credentials/rotate",
            endpoint="rotate",
            decode=decode,
            body={},
            ok=(200,),
            attempts=1,
            secret_answer=True,
        )
        if token is None:  # a 200 is the only success and always decodes
            raise ProtocolError("rotate: no answer body", endpoint="rotate", reason="shape")
        return token


def _through_proxy(err: ProtocolError, proxy: str) -> ProtocolError:
    """A non-JSON answer (a login page) that came through a proxy says so: the proxy, not the
    control plane, is the likely author."""
    if not proxy or err.reason != "content_type":
        return err
    return ProtocolError(
        f"{err} through proxy {proxy}", endpoint=err.endpoint, reason=err.reason, status=err.status
    )


def _escape(job_id: str) -> str:
    return quote(job_id, safe="")


async def register(
    session: HttpSession,
    *,
    base_url: str,
    registration_token: str,
    cluster_id: str = "",
    timeout_s: float = 120.0,
    metrics: AgentMetrics | None = None,
    encryption_public_key: str = "",
) -> tuple[str, str]:
    """Exchange a one-time registration token; return (cluster id, bearer token).
    ``encryption_public_key``: the cluster's age recipient, sent so the control plane can
    encrypt payloads to it (agent/encryptionkeys.py)."""
    body: JsonObj = {"registrationToken": registration_token}
    if cluster_id:
        body["clusterId"] = cluster_id
    if encryption_public_key:
        body["encryptionPublicKey"] = encryption_public_key
    headers = {
        "Authorization": f"Bearer {registration_token}",
        "Accept": MEDIA_TYPE,
        "Content-Type": MEDIA_TYPE,
    }
    secrets = (registration_token,)
    url = base_url.rstrip("/") + "/api/agent/register"
    proxy = proxy_of(session, url)
    try:
        try:
            async with session.request(
                "POST",
                url,
                data=json.dumps(body).encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise await _error_from(resp, endpoint="register", secrets=secrets)
                raw = await answers.read_capped(resp, endpoint="register")
                answer = answers.decode_json(
                    resp, raw, endpoint="register", secrets=secrets, show_body=False
                )
        except ProtocolError as err:
            raise _through_proxy(err, proxy) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            if isinstance(err, aiohttp.ClientPayloadError) or describe_failure(
                err, url=url, proxy=proxy
            ):
                raise _transport_error(
                    "register", "POST", "/api/agent/register", err, url=url, proxy=proxy
                ) from None
            raise UnavailableError(
                f"cannot reach {base_url}: {type(err).__name__}: {connection_detail(err)}"
            ) from None
        return answers.cluster_id_of(answer), answers.token_of(answer, endpoint="register")
    except ProtocolError as err:
        if metrics is not None:
            metrics.protocol_errors.labels(err.endpoint, err.reason).inc()
        raise

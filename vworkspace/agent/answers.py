"""Reading control-plane answers as untrusted bytes: capped, typed, shape-checked.

Between the agent and the control plane sit proxies that answer with login pages, middleboxes
that cut bodies short and control planes with bugs (docs/operations.md, "Hostile answers"). So:

* a body is read **incrementally** and never beyond :data:`MAX_BODY` (4 MiB; a jobs batch is far
  smaller, the applier caps one payload at 64 KiB by default); a larger declared or actual size
  is a :class:`~vworkspace.agent.errors.ProtocolError` ``too_large``, not an allocation;
* an answer we decode must say it is JSON (the agent media type, ``application/json`` or any
  ``+json`` type) and be JSON of the endpoint's shape; whatever :func:`json.loads` raises on it
  (bad syntax, bytes that are not UTF-8, nesting too deep to decode, an integer longer than
  Python's int-to-string limit of 4,300 digits) is a ProtocolError ``invalid_json`` that says
  which (:mod:`vworkspace.kube.rest.safejson`), never a bare exception that would end the poller;
* error bodies are read up to :data:`MAX_ERROR_BODY` and the rest ignored;
* what arrived is described in at most :data:`EXCERPT` characters, with known secrets masked, and
  never at all for answers that carry credentials (register, rotate).

The trade-off: a control plane that sends ``text/plain`` JSON is rejected. The protocol fixes the
media type (docs/pull-mode.md), and accepting anything would accept the login page too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import aiohttp

from vworkspace.agent.errors import ProtocolError
from vworkspace.kube.rest.safejson import JsonError, loads

MAX_BODY = 4 * 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
EXCERPT = 200
# A bearer token or cluster id goes into HTTP headers and URLs: visible ASCII, bounded.
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")
_CLUSTER_RE = re.compile(r"[\x21-\x7e]{1,253}")


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return True
    return media.startswith("application/") and media.endswith("+json")


def excerpt(raw: bytes, *, secrets: Iterable[str] = ()) -> str:
    """The first :data:`EXCERPT` characters of ``raw``, printable, secrets masked."""
    text = raw[: EXCERPT * 4].decode("utf-8", errors="replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = text[:EXCERPT]
    text = "".join(c if c.isprintable() else " " for c in text)
    return text + ("..." if len(raw) > len(text) else "")


async def read_capped(
    resp: aiohttp.ClientResponse, *, endpoint: str, limit: int = MAX_BODY
) -> bytes:
    """The whole body, read chunk by chunk; ProtocolError ``too_large`` past ``limit``."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ProtocolError(
            f"{endpoint}: {resp.status} answer declares {declared} bytes (limit {limit})",
            endpoint=endpoint,
            reason="too_large",
            status=resp.status,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ProtocolError(
                f"{endpoint}: {resp.status} answer exceeds {limit} bytes",
                endpoint=endpoint,
                reason="too_large",
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def read_prefix(resp: aiohttp.ClientResponse, *, limit: int = MAX_ERROR_BODY) -> bytes:
    """At most ``limit`` bytes of an error body; the rest is not read (the connection is
    released, not reused)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)


def decode_json(
    resp: aiohttp.ClientResponse,
    raw: bytes,
    *,
    endpoint: str,
    secrets: Iterable[str] = (),
    show_body: bool = True,
) -> Any:
    """``raw`` as JSON, or ProtocolError ``content_type`` / ``invalid_json`` saying what came."""
    content_type = resp.headers.get("Content-Type", "")
    seen = f"{resp.status} {content_type or 'no content type'}, {len(raw)} bytes"
    if show_body:
        seen += f": {excerpt(raw, secrets=secrets)!r}"
    if not is_json_type(content_type):
        raise ProtocolError(
            f"{endpoint}: not a JSON answer ({seen})",
            endpoint=endpoint,
            reason="content_type",
            status=resp.status,
        )
    try:
        return loads(raw)
    except JsonError as err:
        raise ProtocolError(
            f"{endpoint}: invalid JSON, {err} ({seen})",
            endpoint=endpoint,
            reason="invalid_json",
            status=resp.status,
        ) from None


def shape_error(endpoint: str, what: str, body: Any) -> ProtocolError:
    """A JSON answer of the wrong shape; describes the shape (type, keys), never the values,
    which may be credentials."""
    if isinstance(body, dict):
        shape = "object with keys " + ", ".join(sorted(str(k)[:40] for k in body)[:10])
    else:
        shape = type(body).__name__
    return ProtocolError(
        f"{endpoint}: {what} (got {shape})", endpoint=endpoint, reason="shape", status=200
    )


def jobs_of(body: Any) -> list[Any]:
    """``{"jobs": [...] | null}``; each job is decoded (and may fail) on its own later."""
    if not isinstance(body, dict) or "jobs" not in body:
        raise shape_error("jobs", 'expected an object with "jobs"', body)
    jobs = body["jobs"]
    if jobs is None:
        return []
    if not isinstance(jobs, list):
        raise shape_error("jobs", '"jobs" must be a list or null', body)
    return jobs


def token_of(body: Any, *, endpoint: str) -> str:
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token.strip()):
        raise shape_error(endpoint, 'expected "token": a non-empty header-safe string', body)
    return token.strip()


def cluster_id_of(body: Any) -> str:
    cluster = body.get("clusterId") if isinstance(body, dict) else None
    if not isinstance(cluster, str) or not _CLUSTER_RE.fullmatch(cluster.strip()):
        raise shape_error("register", 'expected "clusterId": a non-empty string', body)
    return cluster.strip()

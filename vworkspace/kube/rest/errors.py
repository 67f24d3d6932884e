"""Typed errors for API server answers, so callers branch on types and never on message text."""

from __future__ import annotations

import re
from typing import Any

import attrs


class ApiError(Exception):
    """A non-2xx answer from the API server, decoded from its ``Status`` body."""

    def __init__(
        self,
        *,
        status: int,
        reason: str,
        message: str,
        body: dict[str, Any],
        method: str,
        path: str,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        self.method = method
        self.path = path
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


class NotFoundError(ApiError):
    """404: the object (or its kind) does not exist."""


class AlreadyExistsError(ApiError):
    """409 AlreadyExists on create."""


class GoneError(ApiError):
    """410: the resourceVersion is too old (compacted); relist."""


class InvalidError(ApiError):
    """422: the object failed validation; ``message`` names the fields."""


@attrs.frozen
class ConflictCause:
    """One field another manager owns (from a server-side apply conflict)."""

    field_manager: str
    field: str


class ConflictError(ApiError):
    """409 Conflict: a stale resourceVersion, or an SSA field-ownership conflict (``causes``)."""

    @property
    def causes(self) -> list[ConflictCause]:
        causes = []
        for cause in self.body.get("details", {}).get("causes", []) or []:
            match = re.search(r'conflict with "([^"]+)"', str(cause.get("message", "")))
            if match:
                causes.append(
                    ConflictCause(field_manager=match.group(1), field=str(cause.get("field", "")))
                )
        return causes


class RetryableError(ApiError):
    """429 / 5xx: the server is busy or failing; retry with backoff (at least ``retry_after``
    seconds when the server said so)."""

    retry_after: float | None = None


class InvalidResponseError(RetryableError):
    """A success status whose body is not a JSON object (an HTML page from a proxy, a body cut
    short): transient, like a 5xx."""


MAX_RETRY_AFTER = 60.0


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, capped at :data:`MAX_RETRY_AFTER`; None if absent or not a
    number (the HTTP-date form: the caller's own backoff applies)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def error_for(
    *,
    status: int,
    body: dict[str, Any],
    method: str,
    path: str,
    retry_after: float | None = None,
) -> ApiError:
    reason = str(body.get("reason", ""))
    message = str(body.get("message", "")) or f"HTTP {status}"
    kwargs: dict[str, Any] = dict(
        status=status, reason=reason, message=message, body=body, method=method, path=path
    )
    if status == 404:
        return NotFoundError(**kwargs)
    if status == 409:
        return (
            AlreadyExistsError(**kwargs) if reason == "AlreadyExists" else ConflictError(**kwargs)
        )
    if status == 410:
        return GoneError(**kwargs)
    if status == 422:
        return InvalidError(**kwargs)
    if status == 429 or status >= 500:
        error = RetryableError(**kwargs)
        error.retry_after = retry_after
        return error
    return ApiError(**kwargs)

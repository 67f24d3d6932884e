"""Failure answers as the API server writes them: ``Status`` objects, raised through the real
:func:`~vworkspace.kube.rest.errors.error_for`, so callers meet the same typed errors
(``NotFoundError``, ``ConflictError``, ``GoneError``, ...) as against a real server."""

from __future__ import annotations

from typing import Any

from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.rest.errors import ApiError, error_for

# The reason the API server gives with each status code (k8s.io/apimachinery metav1.StatusReason).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(
    code: int,
    message: str,
    *,
    reason: str | None = None,
    name: str = "",
    group: str = "",
    kind: str = "",
    causes: list[JsonObj] | None = None,
) -> JsonObj:
    """A ``Status`` of failure, shaped as kube-apiserver sends it."""
    details: JsonObj = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    body: JsonObj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def failure(method: str, path: str, code: int, message: str, **details: Any) -> ApiError:
    """The typed error for a failure ``code`` with ``message`` (``details``: name, group, kind,
    reason)."""
    reason = details.pop("reason", None)
    return error_for(
        status=code,
        body=status_body(code, message, reason=reason, **details),
        method=method,
        path=path,
    )

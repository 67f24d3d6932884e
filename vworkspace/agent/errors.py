"""The typed errors of the Pull protocol client; callers branch on types, never on text.

Transient (back off and go on): :class:`RetryAfterError`, :class:`UnavailableError` and its
subclass :class:`ProtocolError` (an answer that is not what the protocol promises: wrong status,
content type, size or shape). Everything else is a :class:`ControlPlaneError` the caller decides
about (401 after a reload, 403, other 4xx).
"""

from __future__ import annotations


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


class ProtocolError(UnavailableError):
    """An answer the protocol does not allow (an HTML login page with 200, truncated or
    oversized bodies, JSON of the wrong shape, an unexpected status or redirect).

    ``endpoint`` and ``reason`` are the metric labels
    (``vworkspace_agent_protocol_errors_total``); the message says what arrived, truncated and
    without secrets, so the one log line of the caller is enough to diagnose a proxy."""

    def __init__(self, message: str, *, endpoint: str, reason: str, status: int = 0) -> None:
        super().__init__(message, status=status, code=reason)
        self.endpoint = endpoint
        self.reason = reason

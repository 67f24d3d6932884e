"""Serving certificates that follow the files on disk, for the operator's HTTPS listeners.

Used by the admission webhook server and the secure ``/metrics`` listener (docs/webhooks.md,
"Certificates"; docs/operations.md, "Metrics endpoint security"). Both are the controller-runtime
conventions: a directory with ``tls.crt`` and ``tls.key``, TLS 1.2+, ALPN ``http/1.1`` only
(Go's ``--enable-http2=false`` default; aiohttp has no HTTP/2 server anyway).

cert-manager rotates a serving pair by rewriting the mounted Secret (an atomic symlink swap).
:class:`CertificateReloader` polls the files' identity every few seconds and loads a changed pair
into the *same* ``SSLContext``, so new TLS handshakes use it without a restart; connections
already open keep the old one until they close. Polling rather than inotify: it works the same on
every filesystem (including the kubelet's projected volumes) and costs two ``stat`` calls per
tick. A half-written pair (key and certificate not matching) is retried at the next tick while
the old pair keeps serving.

This module lives in ``kube/`` (below ``webhooks/`` and ``app/``) so both listeners can use it
without importing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path
from typing import Any

import structlog

_log = structlog.get_logger("vworkspace.tls")


class CertificateError(ValueError):
    pass


class CertificateReloader:
    """An ``SSLContext`` whose certificate follows the files on disk. ``purpose`` names the
    listener in log lines ("webhook", "metrics")."""

    def __init__(self, *, cert: Path, key: Path, purpose: str = "serving") -> None:
        self.cert = cert
        self.key = key
        self.purpose = purpose
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self._stamp: tuple[Any, ...] | None = None
        self.reloads = 0
        try:
            self.reload_if_changed()
        except (OSError, ssl.SSLError) as err:
            raise CertificateError(f"cannot load {cert} and {key}: {err}") from None

    def _identity(self) -> tuple[Any, ...]:
        stats = [os.stat(path) for path in (self.cert, self.key)]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def reload_if_changed(self) -> bool:
        stamp = self._identity()
        if stamp == self._stamp:
            return False
        self.context.load_cert_chain(self.cert, self.key)
        self._stamp = stamp
        self.reloads += 1
        return True

    async def watch(self, stop: asyncio.Event, *, interval: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                return
            try:
                if self.reload_if_changed():
                    _log.info(
                        "serving certificate reloaded", purpose=self.purpose, cert=str(self.cert)
                    )
            except (OSError, ssl.SSLError) as err:
                # Mid-rotation (new key, old certificate) or a missing file: keep serving the
                # pair we have and look again at the next tick.
                _log.warning(
                    "serving certificate not reloaded; keeping the old one",
                    purpose=self.purpose,
                    error=str(err),
                )

"""The operator's HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only once every
informer has completed its first list (the caches are warm) and 503 naming the ones that have
not, and again 503 during shutdown so traffic drains. ``/metrics`` is the Prometheus text format.

Secure metrics (``metrics_tls`` given, the CLI's ``--metrics-secure`` default): ``/metrics`` is
served over HTTPS and every request passes :class:`~vworkspace.app.metricsauth.MetricsAuthorizer`
(TokenReview + SubjectAccessReview). The serving pair comes from a directory (reloaded when it
changes, e.g. by cert-manager) or, without one, is a self-signed pair made at start, as
controller-runtime does: its key only ever exists in memory and in a private temporary directory
removed right after loading, and it changes at every restart (scrapers use
``insecure_skip_verify`` or a mounted certificate). The probes stay plain HTTP, because the
kubelet probes them without credentials, so in secure mode probes and metrics must use two
listeners.

Plain metrics (``metrics_tls`` None): HTTP without authentication; probes and metrics may then
share one listener.

Every listener closes a connection whose TLS handshake or request line and headers take longer
than 10 s, and caps open connections (``limits``, :mod:`vworkspace.kube.listener`; issue 24,
F7). No handler reads a request body (all are GETs); an unread one is drained for at most the
same 10 s before the connection is closed.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from vworkspace.app.metricsauth import MetricsAuthorizer
from vworkspace.kube.listener import DEFAULT_LIMITS, BoundedSite, ListenerLimits, bounded_runner
from vworkspace.kube.tls import CertificateReloader

_log = structlog.get_logger("vworkspace.http")
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)


@attrs.frozen
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address | None:
        """``HOST:PORT`` or ``:PORT`` (all interfaces); ``0`` or empty disables the listener."""
        if text in ("", "0"):
            return None
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host or "0.0.0.0", int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def listeners_conflict(a: Address, b: Address) -> bool:
    """Whether two listeners would need the same socket (port 0 picks a free port each time)."""
    if a.port == 0 or a.port != b.port:
        return False
    return a.host == b.host or a.host in _WILDCARDS or b.host in _WILDCARDS


@attrs.frozen
class ServingCert:
    """Where a TLS listener's serving pair lives; ``directory`` None: a self-signed pair made at
    start (controller-runtime's behaviour without ``--metrics-cert-path``)."""

    directory: Path | None = None
    cert_name: str = "tls.crt"
    key_name: str = "tls.key"
    reload_interval: float = 10.0


def self_signed_certificates(*, hosts: tuple[str, ...], purpose: str) -> CertificateReloader:
    """A throw-away CA and a serving pair for ``hosts``, loaded into a reloader's context. The
    files exist only while loading (``ssl`` cannot load a key from memory), in a 0700 directory
    removed before returning; the reloader is not watched. Imported here: ``cryptography``
    costs several MiB an operator without a self-signed listener does not need."""
    from vworkspace.webhooks.certs import new_ca, new_serving_pair, write_private

    ca = new_ca(f"vworkspace-{purpose}-ca", validity=SELF_SIGNED_VALIDITY)
    pair = new_serving_pair(ca, hosts=hosts, common_name=hosts[0], validity=SELF_SIGNED_VALIDITY)
    with tempfile.TemporaryDirectory(prefix=f"vworkspace-{purpose}-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        write_private(key, pair.key_pem)
        cert.write_bytes(pair.cert_pem + ca.cert_pem)
        return CertificateReloader(cert=cert, key=key, purpose=purpose)


def self_signed_hosts(bind_host: str) -> tuple[str, ...]:
    hosts = ["localhost", "127.0.0.1"]
    hostname = socket.gethostname()
    # The Pod name; non-ASCII names cannot be DNS SANs (and never are Pod names).
    if hostname and hostname.isascii() and hostname not in hosts:
        hosts.append(hostname)
    if bind_host not in _WILDCARDS and bind_host not in hosts:
        hosts.append(bind_host)
    return tuple(hosts)


class Endpoints:
    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        not_ready: Callable[[], list[str]],
        probes: Address | None,
        metrics: Address | None,
        metrics_tls: ServingCert | None = None,
        authorizer: MetricsAuthorizer | None = None,
        limits: ListenerLimits = DEFAULT_LIMITS,
    ) -> None:
        """``metrics_tls`` and ``authorizer`` together make ``/metrics`` secure; both or neither.
        ``limits``: every listener's header and handshake deadlines and connection cap.
        Raises :class:`~vworkspace.kube.tls.CertificateError` when the pair cannot be loaded."""
        if (metrics_tls is None) != (authorizer is None):
            # Bearer tokens over plain HTTP would leak; TLS without authorization is not what
            # --metrics-secure promises.
            raise ValueError("secure metrics need both a serving certificate and an authorizer")
        self._registry = registry
        self._not_ready = not_ready
        self._probes = probes
        self._metrics = metrics
        self._authorizer = authorizer
        self._metrics_tls = metrics_tls
        self._limits = limits
        self._certificates: CertificateReloader | None = None
        if metrics is not None and metrics_tls is not None:
            if probes is not None and listeners_conflict(probes, metrics):
                raise ValueError(
                    f"secure metrics cannot share the probes listener {probes}: "
                    "the probes stay plain HTTP"
                )
            if metrics_tls.directory is None:
                self._certificates = self_signed_certificates(
                    hosts=self_signed_hosts(metrics.host), purpose="metrics"
                )
            else:
                self._certificates = CertificateReloader(
                    cert=metrics_tls.directory / metrics_tls.cert_name,
                    key=metrics_tls.directory / metrics_tls.key_name,
                    purpose="metrics",
                )
        self._runners: list[web.AppRunner] = []
        self._watch_stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self.bound: dict[str, Address] = {}

    @property
    def metrics_secure(self) -> bool:
        return self._certificates is not None

    async def start(self) -> None:
        plan: list[tuple[Address, list[str]]] = []
        if self._probes:
            plan.append((self._probes, ["probes"]))
        if self._metrics:
            if plan and plan[0][0] == self._metrics and not self.metrics_secure:
                plan[0][1].append("metrics")
            else:
                plan.append((self._metrics, ["metrics"]))
        for address, parts in plan:
            app = web.Application()
            if "probes" in parts:
                app.router.add_get("/healthz", self._healthz)
                app.router.add_get("/readyz", self._readyz)
            if "metrics" in parts:
                app.router.add_get("/metrics", self._metrics_handler)
            runner = bounded_runner(app, limits=self._limits)
            await runner.setup()
            tls = self._certificates.context if self._certificates and "metrics" in parts else None
            site = BoundedSite(
                runner, address.host, address.port, ssl_context=tls, limits=self._limits
            )
            await site.start()
            self._runners.append(runner)
            port = _bound_port(runner, address.port)
            for part in parts:
                self.bound[part] = Address(address.host, port)
        if self._certificates is not None and self._metrics_tls is not None:
            _log.info(
                "metrics served over HTTPS with Kubernetes authentication and authorization",
                certificate=str(self._certificates.cert)
                if self._metrics_tls.directory
                else "self-signed",
            )
            if self._metrics_tls.directory is not None:
                self._watch = asyncio.create_task(
                    self._certificates.watch(
                        self._watch_stop, interval=self._metrics_tls.reload_interval
                    ),
                    name="metrics certificate reloader",
                )

    async def stop(self) -> None:
        self._watch_stop.set()
        if self._watch is not None:
            await self._watch
            self._watch = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        waiting = self._not_ready()
        if waiting:
            return web.Response(status=503, text="not ready: " + ", ".join(waiting))
        return web.Response(text="ok")

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        if self._authorizer is not None:
            # controller-runtime authorizes the lower-cased HTTP method as the verb (GET -> get).
            decision = await self._authorizer.authorize(
                authorization=request.headers.get("Authorization"),
                path=request.path,
                verb=request.method.lower(),
            )
            if not decision.allowed:
                headers = {"WWW-Authenticate": "Bearer"} if decision.status == 401 else None
                return web.Response(
                    status=decision.status, text=decision.message + "\n", headers=headers
                )
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    if requested:
        return requested
    server = runner.addresses
    return int(server[0][1]) if server else requested

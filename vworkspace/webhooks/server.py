"""The HTTPS server for the two validating webhooks, with serving-certificate hot reload.

One aiohttp application, two paths (docs/webhooks.md). TLS 1.2+, ALPN ``http/1.1``
only (Go's ``--enable-http2=false`` default; aiohttp has no HTTP/2 server anyway).

Certificates: :class:`~vworkspace.kube.tls.CertificateReloader` (shared with the secure metrics
listener) follows the mounted serving pair on disk, so cert-manager rotations need no restart.

Slow clients (issue 24, F7): the listener closes a connection whose TLS handshake or request
line and headers take longer than 10 s, and caps open connections
(:mod:`vworkspace.kube.listener`); the handler reads the body within ``body_timeout`` (30 s,
the API server's longest webhook timeout) or answers 408 and closes the connection.

The handlers never log object contents (values may hold secrets): only kind, namespace, name,
operation, the user and the decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import attrs
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vworkspace.api.admission import (
    is_controller_write,
    review_application_instance,
    review_operation,
)
from vworkspace.api.names import InvalidNameError, check_subdomain
from vworkspace.api.operation import OperationView
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.clock import Clock
from vworkspace.kube.listener import (
    DEFAULT_LIMITS,
    BoundedSite,
    ListenerLimits,
    bounded_runner,
)
from vworkspace.kube.rest import safejson
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.tls import CertificateReloader
from vworkspace.webhooks import review
from vworkspace.webhooks.lookup import WorldLookup

_log = structlog.get_logger("vworkspace.webhooks")

INSTANCE_PATH = "/validate-apps-vworkspace-io-v1alpha1-applicationinstance"
OPERATION_PATH = "/validate-ops-vworkspace-io-v1alpha1-operation"
# An AdmissionReview carries the new and the old object; etcd allows 1.5 MiB each.
MAX_BODY = 8 * 1024 * 1024
# The API server waits at most 30 s for a webhook (timeoutSeconds' maximum); a body still
# arriving after that is nobody's request any more.
BODY_TIMEOUT = 30.0


@attrs.frozen
class WebhookMetrics:
    """controller-runtime's webhook metric names, so the same dashboards work."""

    requests: Counter
    latency: Histogram
    in_flight: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebhookMetrics:
        return cls(
            requests=Counter(
                "controller_runtime_webhook_requests_total",
                "Admission requests by HTTP status code.",
                ["webhook", "code"],
                registry=registry,
            ),
            latency=Histogram(
                "controller_runtime_webhook_latency_seconds",
                "Admission request latency.",
                ["webhook"],
                registry=registry,
            ),
            in_flight=Gauge(
                "controller_runtime_webhook_requests_in_flight",
                "Admission requests being served.",
                ["webhook"],
                registry=registry,
            ),
        )


Decide = Callable[[review.AdmissionRequest], Awaitable[str | None]]


class WebhookServer:
    """Serves both webhooks until stopped; on every replica, not only the leader (the API server
    calls whichever Pod the Service picks)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        certificates: CertificateReloader,
        lookup: WorldLookup,
        approval_secret: str,
        clock: Clock,
        metrics: WebhookMetrics,
        reload_interval: float = 10.0,
        limits: ListenerLimits = DEFAULT_LIMITS,
        body_timeout: float = BODY_TIMEOUT,
        engines: EngineRegistry | None = None,
    ) -> None:
        """``limits``: the listener's header and handshake deadlines and connection cap;
        ``body_timeout``: how long one request's body may take to arrive; ``engines``: the
        operator's engines, whose policy says which Operations may run without their target
        (a Velero Restore); None: none may."""
        self._host = host
        self._port = port
        self.certificates = certificates
        self._lookup = lookup
        self._approval_secret = approval_secret
        self._clock = clock
        self._metrics = metrics
        self._reload_interval = reload_interval
        self._limits = limits
        self._body_timeout = body_timeout
        self._engines = engines if engines is not None else EngineRegistry()
        self.port = 0
        self.started = asyncio.Event()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(INSTANCE_PATH, self._handler(INSTANCE_PATH, self._instance))
        app.router.add_post(OPERATION_PATH, self._handler(OPERATION_PATH, self._operation))
        return app

    async def run(self, stop: asyncio.Event) -> None:
        runner = bounded_runner(self.application(), limits=self._limits)
        await runner.setup()
        try:
            site = BoundedSite(
                runner,
                self._host,
                self._port,
                ssl_context=self.certificates.context,
                limits=self._limits,
            )
            await site.start()
            self.port = int(runner.addresses[0][1])
            _log.info("webhook server listening", address=f"{self._host}:{self.port}")
            self.started.set()
            await self.certificates.watch(stop, interval=self._reload_interval)
        finally:
            await runner.cleanup()

    def _handler(
        self, path: str, decide: Decide
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            self._metrics.in_flight.labels(path).inc()
            try:
                response = await self._serve(request, decide)
            finally:
                self._metrics.in_flight.labels(path).dec()
                self._metrics.latency.labels(path).observe(time.monotonic() - started)
            self._metrics.requests.labels(path, str(response.status)).inc()
            return response

        return handle

    async def _serve(self, request: web.Request, decide: Decide) -> web.Response:
        try:
            async with asyncio.timeout(self._body_timeout):
                raw = await request.read()
        except TimeoutError:
            response = web.Response(
                status=408, text=f"request body not received within {self._body_timeout:g}s\n"
            )
            response.force_close()
            return response
        try:
            admission = review.parse_review(safejson.loads(raw))
        except (ValueError, review.MalformedReviewError) as err:
            return web.Response(status=400, text=f"bad AdmissionReview: {err}\n")
        log = _log.bind(
            operation=admission.operation,
            namespace=admission.namespace,
            name=admission.name,
            user=admission.user,
            path=request.path,
        )
        if admission.operation not in ("CREATE", "UPDATE") or admission.object is None:
            return web.json_response(review.allowed(admission.uid))
        try:
            problem = await decide(admission)
        except (ApiError, TimeoutError, OSError) as err:
            message = f"could not evaluate the admission rules: {err}"
            log.warning("admission errored", error=str(err))
            return web.json_response(review.errored(admission.uid, message))
        if problem is None:
            log.debug("admitted")
            return web.json_response(review.allowed(admission.uid))
        log.info("admission denied", reason=problem)
        return web.json_response(review.denied(admission.uid, problem))

    async def _instance(self, admission: review.AdmissionRequest) -> str | None:
        assert admission.object is not None
        return review_application_instance(admission.object, admission.old_object)

    async def _operation(self, admission: review.AdmissionRequest) -> str | None:
        new, old = admission.object, admission.old_object
        assert new is not None
        if old is not None and is_controller_write(new, old):
            return None  # no lookups for finalizer and label writes
        target = ((new.get("spec") or {}).get("targetRef") or {}).get("name") or ""
        if isinstance(target, str) and target:
            # The name becomes a path segment of the lookup (issue 24, F1): refuse, don't send.
            try:
                check_subdomain(target, field="spec.targetRef.name")
            except InvalidNameError as err:
                return str(err)
        world = await self._lookup.world(
            namespace=admission.namespace, target=target if isinstance(target, str) else ""
        )
        view = OperationView(new)
        engine = self._engines.operation_engine(view.engine)
        if engine is not None and engine.runs_without_target(view):
            world = attrs.evolve(world, runs_without_target=True)
        return review_operation(
            new,
            old,
            world=world,
            approval_secret=self._approval_secret,
            now=self._clock.now().timestamp(),
        )

"""The operator's HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only once every
informer has completed its first list (the caches are warm) and 503 naming the ones that have
not, and again 503 during shutdown so traffic drains. ``/metrics`` is the Prometheus text format.
Probes and metrics may share one listener or use two.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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


class Endpoints:
    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        not_ready: Callable[[], list[str]],
        probes: Address | None,
        metrics: Address | None,
    ) -> None:
        self._registry = registry
        self._not_ready = not_ready
        self._probes = probes
        self._metrics = metrics
        self._runners: list[web.AppRunner] = []
        self.bound: dict[str, Address] = {}

    async def start(self) -> None:
        plan: dict[Address, list[str]] = {}
        if self._probes:
            plan.setdefault(self._probes, []).append("probes")
        if self._metrics:
            plan.setdefault(self._metrics, []).append("metrics")
        for address, parts in plan.items():
            app = web.Application()
            if "probes" in parts:
                app.router.add_get("/healthz", self._healthz)
                app.router.add_get("/readyz", self._readyz)
            if "metrics" in parts:
                app.router.add_get("/metrics", self._metrics_handler)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, address.host, address.port)
            await site.start()
            self._runners.append(runner)
            port = _bound_port(runner, address.port)
            for part in parts:
                self.bound[part] = Address(address.host, port)

    async def stop(self) -> None:
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
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    if requested:
        return requested
    server = runner.addresses
    return int(server[0][1]) if server else requested

"""HTTP to the API server: one aiohttp session, TLS and credentials from a kubernetes-asyncio
``Configuration``, and client-go's client-side request metrics.

Why not kubernetes-asyncio's ``ApiClient.call_api``, which this replaced (docs/development.md,
"Performance"):

* its session is built with ``trust_env=True``, so aiohttp looks up ``~/.netrc`` **in the default
  thread pool for every request** (an executor round trip, a file ``stat`` and a parse each
  time). In a burst of 1,000 instances that was the largest single cost of the process, and the
  thread hops contended for the GIL with the event loop.
* it walks every request body to "sanitise" it for the generated models, and re-reads the
  environment for proxies per request.

What is kept: the library still loads kubeconfig contexts and the in-cluster service account,
and its ``auth_settings()`` is asked for the bearer token on every request, so a token refresh
hook (the in-cluster projected token, re-read every minute) keeps working. Proxies: the
kubeconfig's ``proxy-url``, else the proxy the app resolved from the environment once at start
(client-go also reads ``HTTPS_PROXY``/``NO_PROXY`` once); nothing here reads the environment.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import aiohttp
import attrs
from kubernetes_asyncio import client as k8s_client
from prometheus_client import CollectorRegistry, Counter, Histogram

# client-go's rest_client_request_duration_seconds buckets.
REQUEST_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


@attrs.frozen
class RestClientMetrics:
    """client-go's names (``k8s.io/client-go/tools/metrics``), so its dashboards work unchanged."""

    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RestClientMetrics:
        return cls(
            requests=Counter(
                "rest_client_requests_total",
                "Number of HTTP requests to the API server, by status code, method and host.",
                ["code", "method", "host"],
                registry=registry,
            ),
            duration=Histogram(
                "rest_client_request_duration_seconds",
                "Request latency to the API server in seconds, by verb and host.",
                ["verb", "host"],
                buckets=REQUEST_BUCKETS,
                registry=registry,
            ),
        )


def ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext:
    """The TLS context kubernetes-asyncio would build: the cluster CA, the client certificate if
    any, and verification as the kubeconfig says."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    """The proxy for ``url`` from ``proxies`` as urllib names them (``{"https": ..., "http":
    ..., "no": "10.0.0.0/8,.cluster.local"}``, from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``),
    or None when there is none or ``no`` exempts the host."""
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme)
    if not proxy or proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy


class Transport:
    """Requests to one API server over a pooled aiohttp session (created on first use, inside
    the event loop)."""

    def __init__(
        self,
        configuration: k8s_client.Configuration,
        *,
        pool_size: int = 32,
        proxies: Mapping[str, str] | None = None,
        user_agent: str = "",
    ) -> None:
        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self._host_label = urlsplit(self.host).netloc or self.host
        self._pool_size = pool_size
        self._proxy = configuration.proxy or proxy_for(self.host, proxies or {})
        self._server_hostname = configuration.tls_server_name or None
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.metrics: RestClientMetrics | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            tls: ssl.SSLContext | bool = (
                ssl_context(self.configuration) if self.host.startswith("https:") else False
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=tls),
                trust_env=False,  # the reason this module exists (see the docstring)
                # A watch event may carry an object of up to etcd's 1.5 MiB request limit.
                read_bufsize=2**21,
                headers={"User-Agent": self._user_agent} if self._user_agent else None,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own per-request timeout
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller reads and releases the response. Connection errors are
        aiohttp's own exceptions, as before."""
        url = self.host + path
        if query:
            url += "?" + urlencode(list(query.items()))
        sent_headers = dict(headers)
        for auth in (await self.configuration.auth_settings()).values():
            if auth.get("in") == "header" and auth.get("value"):
                sent_headers[auth["key"]] = auth["value"]
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        started = time.perf_counter()
        code = "<error>"
        try:
            response = await self._open().request(
                method,
                url,
                data=data,
                headers=sent_headers,
                timeout=timeout,
                proxy=self._proxy,
                server_hostname=self._server_hostname,
            )
            code = str(response.status)
            return response
        finally:
            if self.metrics is not None:
                self.metrics.requests.labels(code, method, self._host_label).inc()
                self.metrics.duration.labels(method, self._host_label).observe(
                    time.perf_counter() - started
                )

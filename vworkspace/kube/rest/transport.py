"""HTTP to the API server: one aiohttp session, TLS and credentials from a
:class:`~vworkspace.kube.rest.config.ClusterConfig`, and client-go's client-side request metrics.

Why not kubernetes-asyncio's ``ApiClient.call_api``, which this replaced (docs/development.md,
"Performance"):

* its session is built with ``trust_env=True``, so aiohttp looks up ``~/.netrc`` **in the default
  thread pool for every request** (an executor round trip, a file ``stat`` and a parse each
  time). In a burst of 1,000 instances that was the largest single cost of the process, and the
  thread hops contended for the GIL with the event loop.
* it walks every request body to "sanitise" it for the generated models, and re-reads the
  environment for proxies per request.

Credentials are asked for on every request (kube/rest/credentials.py), so a rotated token file or an
expired exec-plugin credential is picked up without a restart; a 401 makes them refresh before
the next request. A client certificate an exec plugin hands out is loaded into the same TLS
context, so new connections use it while open ones finish with the old one. Proxies: the
kubeconfig's ``proxy-url``, else the proxy of ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` with
Go's rules (kube/rest/proxy.py), which the app read from the environment once at start, as
client-go does; nothing here reads the environment.

URLs are built here, from an :class:`~vworkspace.kube.rest.paths.ApiPath`: each segment
percent-encoded, and the URL handed to aiohttp as already encoded (``yarl.URL(...,
encoded=True)``), so aiohttp cannot resolve ``..`` or cut at ``#``/``?`` (issue 24, F1).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import attrs
import yarl
from prometheus_client import CollectorRegistry, Counter, Histogram

from vworkspace.kube.rest.config import ClusterConfig
from vworkspace.kube.rest.credentials import ClientCertificate, load_certificate
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.proxy import ProxyEnvironment

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


def ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    """The cluster CA (else the system trust store), the kubeconfig's client certificate if any,
    and verification as the kubeconfig says."""
    context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
    if config.client_certificate is not None:
        load_certificate(context, config.client_certificate)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Transport:
    """Requests to one API server over a pooled aiohttp session (created on first use, inside
    the event loop)."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        pool_size: int = 32,
        proxies: ProxyEnvironment | None = None,
        user_agent: str = "",
    ) -> None:
        self.config = config
        self.host = config.server.rstrip("/")
        # The server URL (a kubeconfig may give a path prefix, e.g. a proxy's) in encoded form.
        self._base = str(yarl.URL(self.host))
        self._host_label = urlsplit(self.host).netloc or self.host
        self._pool_size = pool_size
        self._proxy = config.proxy_url or (proxies.proxy_for(self.host) if proxies else None)
        self._server_hostname = config.tls_server_name
        self._tls: ssl.SSLContext | None = None
        self._certificate = config.client_certificate
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.metrics: RestClientMetrics | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self.host.startswith("https:"):
                self._tls = ssl_context(self.config)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=self._tls or False),
                trust_env=False,  # the reason this module exists (see the docstring)
                # A watch event may carry an object of up to etcd's 1.5 MiB request limit.
                read_bufsize=2**21,
                headers={"User-Agent": self._user_agent} if self._user_agent else None,
            )
        return self._session

    def _use_certificate(self, certificate: ClientCertificate) -> None:
        """Load a client certificate from the credentials (an exec plugin's) once it changes."""
        if certificate != self._certificate and self._tls is not None:
            load_certificate(self._tls, certificate)
            self._certificate = certificate

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: ApiPath, query: Mapping[str, str] | None = None) -> yarl.URL:
        """The request URL: the segments encoded here, and marked encoded so that yarl keeps
        them exactly (no ``..`` resolution, no second decoding)."""
        text = self._base + path.encoded
        if query:
            text += "?" + urlencode(list(query.items()))
        return yarl.URL(text, encoded=True)

    async def send(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own per-request timeout
    ) -> aiohttp.ClientResponse:
        """Send a request; the caller reads and releases the response. Connection errors are
        aiohttp's own exceptions, as before."""
        url = self.url(path, query)
        credential = await self.config.credentials.current()
        sent_headers = {**headers, **credential.headers}
        session = self._open()
        if credential.certificate is not None:
            self._use_certificate(credential.certificate)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        started = time.perf_counter()
        code = "<error>"
        try:
            response = await session.request(
                method,
                url,
                data=data,
                headers=sent_headers,
                timeout=timeout,
                proxy=self._proxy,
                server_hostname=self._server_hostname,
            )
            code = str(response.status)
            if response.status == 401:
                self.config.credentials.invalidate()  # refresh before the next request
            return response
        finally:
            if self.metrics is not None:
                self.metrics.requests.labels(code, method, self._host_label).inc()
                self.metrics.duration.labels(method, self._host_label).observe(
                    time.perf_counter() - started
                )

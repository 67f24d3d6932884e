"""The agent's HTTP session to the control plane, built in one place for the operator and the
``register`` command: the proxy, the TLS context (agent/egresstls.py) and key pinning
(agent/pinning.py), resolved per request.

* **Proxy**: ``--control-plane-proxy`` wins; else ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as
  Go's ``ProxyFromEnvironment`` reads them (kube/rest/proxy.py), read once at start by the app.
  Credentials in the proxy URL are sent as ``Proxy-Authorization: Basic`` and never shown:
  every message and log line uses :func:`~vworkspace.kube.rest.proxy.redact`.
* **TLS**: a context per material version, so a rotated CA or client certificate is used by
  the next new connection without a restart; invalid material fails closed.
* **Pins**: checked on every new TLS connection before the request is written.

:class:`Egress` wraps an ``aiohttp.ClientSession`` and has its ``request`` signature, so the
Pull client (agent/client.py) works with either; :func:`describe_failure` turns aiohttp's
errors into messages that blame the proxy when the proxy failed.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
import yarl

from vworkspace.agent.credentials import SecretTls
from vworkspace.agent.egresstls import TlsContexts, TlsFiles, TlsMaterialError
from vworkspace.agent.pinning import PIN_FLAG, PinMismatchError, PinningConnector
from vworkspace.kube.rest.proxy import ProxyEnvironment, redact

__all__ = [
    "Egress",
    "EgressConfig",
    "EgressError",
    "PinMismatchError",
    "TlsMaterialError",
    "describe_failure",
]

PROXY_FLAG = "--control-plane-proxy"
PROXY_SCHEMES = ("http", "https")


class EgressError(aiohttp.ClientConnectionError):
    """The route to the control plane cannot be used as configured (a proxy of an unsupported
    scheme, pins for an http:// URL); nothing was sent."""


@attrs.frozen
class EgressConfig:
    """What the flags and the environment say about the way out (app/flags/egress.py)."""

    proxy: str = attrs.field(default="", repr=False)  # may hold credentials
    environment: ProxyEnvironment = attrs.field(factory=ProxyEnvironment, repr=False)
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    pins: frozenset[bytes] = frozenset()

    def __repr__(self) -> str:
        proxy = redact(self.proxy) if self.proxy else "from environment"
        return (
            f"EgressConfig(proxy={proxy!r}, ca_file={self.ca_file}, client_cert="
            f"{self.client_cert}, client_key={self.client_key}, pins={len(self.pins)})"
        )


@attrs.frozen
class Route:
    """How one request leaves: the proxy (credentials split off), the SSL context."""

    proxy: str | None = attrs.field(default=None, repr=False)
    # Proxy-Authorization, when the proxy URL has credentials (aiohttp 3.14 deprecates
    # ``proxy_auth`` for ``proxy_headers``).
    proxy_authorization: str = attrs.field(default="", repr=False)
    ssl: ssl.SSLContext | bool = True


def split_proxy(proxy: str, *, source: str) -> tuple[str, str]:
    """The proxy URL without userinfo, and its credentials as a Basic ``Proxy-Authorization``
    value (percent-decoded; "" without credentials).
    Raises EgressError naming ``source`` for what aiohttp cannot use (socks5, no host)."""
    try:
        url = yarl.URL(proxy)
        host = url.host
    except ValueError:
        host = None
        url = yarl.URL()
    if url.scheme not in PROXY_SCHEMES or not host:
        raise EgressError(
            f"{source} {redact(proxy)!r}: not a usable proxy URL; give http://host:port "
            "(or https://), with user:password@ if the proxy asks for them"
        )
    auth = ""
    if url.user is not None or url.password is not None:
        auth = aiohttp.encode_basic_auth(url.user or "", url.password or "")
    return str(url.with_user(None).with_password(None)), auth


class Egress:
    """The control plane session: aiohttp's, with the proxy and TLS of :class:`EgressConfig`
    added to every request. ``attach`` connects the credential store (the Secret's TLS
    material) and the metrics once the agent is built."""

    def __init__(
        self,
        config: EgressConfig,
        *,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.config = config
        self.tls = TlsContexts(
            TlsFiles(config.ca_file, config.client_cert, config.client_key), now=now
        )
        self._connector = PinningConnector(pins=config.pins)
        # trust_env stays off: the environment was read once, by the app (config.environment).
        self.session = aiohttp.ClientSession(connector=self._connector, trust_env=False)

    def attach(
        self,
        *,
        secret: Callable[[], SecretTls] | None = None,
        on_pin_failure: Callable[[], None] | None = None,
        on_tls_error: Callable[[], None] | None = None,
    ) -> None:
        if secret is not None:
            self.tls.secret = secret
        if on_pin_failure is not None:
            self._connector.on_failure = on_pin_failure
        if on_tls_error is not None:
            self.tls.on_error = on_tls_error

    def route(self, url: str) -> Route:
        """The proxy and SSL context for ``url``; raises an aiohttp connection error subclass
        (EgressError, TlsMaterialError) when the configuration cannot be used."""
        if self.config.proxy:
            proxy, source = self.config.proxy, PROXY_FLAG
        else:
            proxy, source = self.config.environment.proxy_for(url) or "", "HTTPS_PROXY/HTTP_PROXY"
        proxy_url, auth = split_proxy(proxy, source=source) if proxy else (None, "")
        if urlsplit(url).scheme.lower() != "https":
            if self.config.pins:
                raise EgressError(
                    f"{PIN_FLAG} is set but the control plane URL is not https:// ({url}); "
                    "a pin can only be checked over TLS"
                )
            return Route(proxy=proxy_url, proxy_authorization=auth, ssl=True)
        return Route(proxy=proxy_url, proxy_authorization=auth, ssl=self.tls.current())

    def proxy_label(self, url: str) -> str:
        """The proxy ``url`` goes through, for messages ("" when direct or unusable)."""
        proxy = self.config.proxy or self.config.environment.proxy_for(url) or ""
        return redact(proxy) if proxy else ""

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """aiohttp's ``session.request`` with the route added (an ``async with`` context)."""
        route = self.route(url)
        if route.proxy_authorization:
            credentials = {"Proxy-Authorization": route.proxy_authorization}
            kwargs["proxy_headers"] = credentials  # on the CONNECT of an https:// URL
            if not url.startswith("https:"):  # plain http: the request itself goes to the proxy
                kwargs["headers"] = {**(kwargs.get("headers") or {}), **credentials}
        return self.session.request(method, url, proxy=route.proxy, ssl=route.ssl, **kwargs)

    @property
    def closed(self) -> bool:
        return self.session.closed

    async def close(self) -> None:
        await self.session.close()


def connection_detail(err: Exception) -> str:
    """What went wrong on a connection, without aiohttp's ``ssl:<ssl.SSLContext object at
    0x...>`` noise: ``cannot connect to host:port: <reason>``."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cause = err.certificate_error
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
        return (
            f"{err.host}:{err.port}: certificate verification failed: {reason}; if the control "
            "plane (or a TLS-inspecting proxy) uses a private CA, give it with "
            "--control-plane-ca-file or the credentials Secret's key ca.crt"
        )
    if isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error
        reason = (
            cause.strerror or getattr(cause, "reason", None) or str(cause) or type(cause).__name__
        )
        return f"cannot connect to {err.host}:{err.port}: {reason}"
    return str(err)


def _target(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _at_proxy(err: Exception, proxy: str, url: str) -> bool:
    """A connection error about the proxy's own address (e.g. its name does not resolve:
    aiohttp raises ClientConnectorDNSError, not ClientProxyConnectionError, for that)."""
    if not isinstance(err, aiohttp.ClientConnectorError):
        return False
    proxy_host = urlsplit(proxy).hostname
    return err.host == proxy_host and proxy_host != urlsplit(url).hostname


def describe_failure(err: Exception, *, url: str, proxy: str) -> tuple[str, bool] | None:
    """A message for a failure that the proxy or the egress configuration caused, and whether
    it is a protocol error (the proxy answered, but not as a tunnel should); None for other
    failures (the caller's generic message applies). ``proxy`` is already redacted."""
    if isinstance(err, EgressError | TlsMaterialError | PinMismatchError):
        return str(err), False
    if not proxy:
        return None
    hint = f"check the credentials in {PROXY_FLAG} or HTTPS_PROXY"
    if isinstance(err, aiohttp.ClientHttpProxyError):
        verb = "CONNECT" if url.startswith("https:") else "request to"
        extra = f"; {hint}" if err.status == 407 else ""
        return (
            f"proxy {proxy}: {verb} {_target(url)} answered {err.status} {err.message}{extra}",
            True,
        )
    if isinstance(err, aiohttp.ClientProxyConnectionError) or _at_proxy(err, proxy, url):
        return f"proxy {proxy}: cannot reach the proxy: {connection_detail(err)}", False
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        # E.g. a proxy that answers CONNECT with a page and keeps the connection open.
        return (
            f"proxy {proxy}: no tunnel to {_target(url)} within the connect timeout; the proxy "
            "may be slow, or answering with its own page instead of a tunnel",
            False,
        )
    # The proxy accepted the connection, then the tunnel or the TLS inside it failed (aiohttp
    # raises ClientProxyConnectionError, handled above, only when the proxy itself is out of
    # reach): something other than the control plane answered, e.g. a login page.
    if isinstance(err, aiohttp.ClientConnectorError | ssl.SSLError):
        cause = err.os_error if isinstance(err, aiohttp.ClientConnectorError) else err
        reason = getattr(cause, "reason", None) or type(cause).__name__
        return (
            f"proxy {proxy}: the tunnel to {_target(url)} failed ({reason}); the proxy may be "
            "intercepting the connection or answering with its own page",
            True,
        )
    return None

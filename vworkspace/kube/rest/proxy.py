"""Which proxy a request goes through, as Go's ``net/http.ProxyFromEnvironment`` decides
(``golang.org/x/net/http/httpproxy``), so a cluster configured for the Go operator behaves the
same with this one.

Hand-written on purpose: urllib's ``proxy_bypass_environment`` and ``requests``/``httpx`` each
implement a different dialect of ``NO_PROXY`` (urllib reads the lower-case variables first and
knows no CIDRs or ports; httpx knows neither ``*.host`` nor CIDRs), and no maintained Python
library reproduces Go's. The rules (tests/unit/test_proxy_environment.py replays Go's own test
table):

* ``HTTPS_PROXY`` for ``https`` URLs, ``HTTP_PROXY`` for ``http`` URLs, nothing for other schemes;
  upper case first, as Go's ``getEnvAny``. A value without ``scheme://`` gets ``http://``.
* With ``REQUEST_METHOD`` set (a CGI process, where ``HTTP_PROXY`` may come from a client's
  ``Proxy:`` header) ``HTTP_PROXY`` is ignored; ``HTTPS_PROXY`` is not (Go's historical rule).
* ``localhost`` and loopback addresses are never proxied.
* ``NO_PROXY``: comma-separated, case-insensitive; ``*`` alone exempts everything; an IP
  address or a CIDR matches addresses; ``example.com`` matches that name and its subdomains,
  ``.example.com`` and ``*.example.com`` subdomains only; an entry may end in ``:port`` to
  apply to that port only; malformed entries are skipped, as Go skips them.
* One deliberate difference: a trailing dot (``example.com.``, a fully qualified name) is
  ignored on both sides, where Go would compare it literally and miss the match.

The environment is read once, by the app (app/flags), and handed down as a value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import attrs

__all__ = ["ProxyEnvironment", "redact"]

_DEFAULT_PORTS = {"http": "80", "https": "443", "socks5": "1080"}
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _env_any(env: Mapping[str, str], *names: str) -> str:
    """The first non-empty value among ``names`` (Go's getEnvAny)."""
    for name in names:
        value = env.get(name, "")
        if value:
            return value
    return ""


def _with_scheme(proxy: str) -> str:
    """A proxy value as a URL: ``host[:port]`` gets ``http://``, as Go's parseProxy does."""
    proxy = proxy.strip()
    if not proxy or "://" in proxy:
        return proxy
    return "http://" + proxy


def _idna(host: str) -> str:
    """The ASCII form of an internationalised name (Go's ``idna.Lookup.ToASCII``); a name the
    codec refuses is compared as given, as Go does."""
    if host.isascii():
        return host
    try:  # label by label: the codec refuses the empty label of ".example.com"
        return ".".join(
            label.encode("idna").decode("ascii") if label else "" for label in host.split(".")
        )
    except UnicodeError:
        return host


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@attrs.frozen
class _Entry:
    """One ``NO_PROXY`` entry: an address, a network or a domain suffix, maybe with a port."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    address: IpAddress | None = None
    suffix: str = ""  # ".example.com"
    match_host: bool = False  # "example.com" also matches "example.com" itself
    port: str = ""

    def matches(self, host: str, port: str, ip: IpAddress | None) -> bool:
        if self.port and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        if self.address is not None:
            return ip is not None and ip == self.address
        if ip is not None:
            return False  # an address literal is not a name
        return host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:])


def _split_port(entry: str) -> tuple[str, str]:
    """``host:port`` / ``[v6]:port`` -> (host, port); anything else -> (entry, "")."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""  # a bare IPv6 address, or no port


def _parse_entry(raw: str) -> _Entry | None:
    entry = raw.strip().lower()
    if not entry:
        return None
    if "/" in entry:
        try:
            return _Entry(network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            return None  # neither a CIDR nor a name: skipped, as Go skips it
    host, port = _split_port(entry)
    if port and not port.isdigit():
        return None
    address = _ip(host)
    if address is not None:
        return _Entry(address=address, port=port)
    host = host.rstrip(".")
    if host.startswith("*."):
        host = host[1:]
    if not host or host == ".":
        return None  # ":1" and the like: malformed, skipped as Go skips it
    match_host = not host.startswith(".")
    suffix = _idna(host if not match_host else "." + host)
    return _Entry(suffix=suffix, match_host=match_host, port=port)


def _parse_no_proxy(value: str) -> tuple[_Entry, ...] | None:
    """The entries, or None for ``*`` (nothing is proxied)."""
    entries = []
    for raw in value.split(","):
        if raw.strip() == "*":
            return None
        entry = _parse_entry(raw)
        if entry is not None:
            entries.append(entry)
    return tuple(entries)


@attrs.frozen
class ProxyEnvironment:
    """``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as read once at start (``from_environ``);
    empty: no proxy."""

    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""
    cgi: bool = False  # REQUEST_METHOD was set: HTTP_PROXY is not trusted
    _entries: tuple[_Entry, ...] | None = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _parse_no_proxy(self.no_proxy), takes_self=True),
    )

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> ProxyEnvironment:
        return cls(
            https_proxy=_with_scheme(_env_any(env, "HTTPS_PROXY", "https_proxy")),
            http_proxy=_with_scheme(_env_any(env, "HTTP_PROXY", "http_proxy")),
            no_proxy=_env_any(env, "NO_PROXY", "no_proxy"),
            cgi=bool(env.get("REQUEST_METHOD")),
        )

    def __repr__(self) -> str:
        # The variables may carry the proxy's password: never shown (settings get logged).
        return (
            f"ProxyEnvironment(https_proxy={redact(self.https_proxy)!r}, "
            f"http_proxy={redact(self.http_proxy)!r}, no_proxy={self.no_proxy!r}, cgi={self.cgi})"
        )

    def __bool__(self) -> bool:
        return bool(self.https_proxy or self.http_proxy)

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL (credentials included, if the variable has them) for ``url``, or
        None: no proxy for its scheme, or ``NO_PROXY`` exempts it."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "https":
            proxy = self.https_proxy
        elif scheme == "http" and not self.cgi:
            proxy = self.http_proxy
        else:
            proxy = ""
        if not proxy or not self.use_proxy(url):
            return None
        return proxy

    def use_proxy(self, url: str) -> bool:
        """False when ``url``'s host is local or ``NO_PROXY`` exempts it."""
        parts = urlsplit(url)
        try:
            port = str(parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), ""))
        except ValueError:
            port = ""
        host = (parts.hostname or "").strip().rstrip(".")
        if not host:
            return True
        if host == "localhost":
            return False
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return False
        if self._entries is None:
            return False
        name = _idna(host)
        return not any(entry.matches(name, port, ip) for entry in self._entries)


def redact(url: str) -> str:
    """``url`` without its user and password (for logs and messages): a proxy URL may carry the
    corporate proxy's credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

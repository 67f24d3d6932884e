"""HTTPS_PROXY/HTTP_PROXY/NO_PROXY with Go's semantics (kube/rest/proxy.py): Go's own test
tables from golang.org/x/net/http/httpproxy (proxy_test.go, ``proxyForURLTests`` and
``UseProxyTests``) replayed, and properties checked with hypothesis."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vworkspace.kube.rest.proxy import ProxyEnvironment, redact

# (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, cgi, request URL, expected proxy) from proxyForURLTests.
GO_PROXY_FOR_URL = [
    ("127.0.0.1:8080", "", "", False, "", "http://127.0.0.1:8080"),
    ("cache.corp.example.com:1234", "", "", False, "", "http://cache.corp.example.com:1234"),
    ("cache.corp.example.com", "", "", False, "", "http://cache.corp.example.com"),
    ("localhost", "", "", False, "", "http://localhost"),
    ("https://cache.corp.example.com", "", "", False, "", "https://cache.corp.example.com"),
    ("http://127.0.0.1:8080", "", "", False, "", "http://127.0.0.1:8080"),
    ("https://127.0.0.1:8080", "", "", False, "", "https://127.0.0.1:8080"),
    ("socks5://127.0.0.1", "", "", False, "", "socks5://127.0.0.1"),
    ("foo://host", "", "", False, "", "foo://host"),
    (
        "http.proxy.tld",
        "secure.proxy.tld",
        "",
        False,
        "http://insecure.tld/",
        "http://http.proxy.tld",
    ),
    (
        "http.proxy.tld",
        "secure.proxy.tld",
        "",
        False,
        "https://secure.tld/",
        "http://secure.proxy.tld",
    ),
    (
        "http.proxy.tld",
        "https://secure.proxy.tld",
        "",
        False,
        "https://secure.tld/",
        "https://secure.proxy.tld",
    ),
    ("http.proxy.tld", "", "", False, "https://secure.tld/", None),
    ("http.proxy.tld", "", "", False, "ftp://insecure.tld/", None),
    ("http://10.1.2.3:8080", "", "", True, "", None),  # CGI: HTTP_PROXY is not trusted
    ("", "https://secure.proxy.tld", "", True, "https://secure.tld/", "https://secure.proxy.tld"),
    ("", "", "", False, "", None),
    ("proxy", "", "example.com", False, "http://example.com/", None),
    ("proxy", "", ".example.com", False, "http://example.com/", "http://proxy"),
    ("proxy", "", "ample.com", False, "http://example.com/", "http://proxy"),
    ("proxy", "", "example.com", False, "http://foo.example.com/", None),
    ("proxy", "", ".foo.com", False, "http://example.com/", "http://proxy"),
    ("proxy", "", ".示例.com", False, "http://www.示例.com", None),
    ("proxy", "", "xn--fsq092h.com", False, "http://www.示例.com", None),
    ("proxy", "", "示例.com", False, "http://www.xn--fsq092h.com", None),
    ("proxy", "", "example.com", False, "http://[1000::%25.example.com]:123", "http://proxy"),
]


@pytest.mark.parametrize(
    ("http_proxy", "https_proxy", "no_proxy", "cgi", "url", "expected"), GO_PROXY_FOR_URL
)
def test_go_proxy_for_url_table(
    http_proxy: str, https_proxy: str, no_proxy: str, cgi: bool, url: str, expected: str | None
) -> None:
    env = {"HTTP_PROXY": http_proxy, "HTTPS_PROXY": https_proxy, "NO_PROXY": no_proxy}
    if cgi:
        env["REQUEST_METHOD"] = "GET"
    assert ProxyEnvironment.from_environ(env).proxy_for(url or "http://example.com") == expected


GO_NO_PROXY = (
    "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, 192.168.1.3:80, "
    "10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, "
    "2002:db8:a::45/64"
)
# (host, proxied) from UseProxyTests; each host is asked for on port 80.
GO_USE_PROXY = [
    ("localhost", False),
    ("127.0.0.1", False),
    ("127.0.0.2", False),
    ("[::1]", False),
    ("[::2]", True),
    ("192.168.1.1", False),
    ("192.168.1.2", True),
    ("192.168.1.3", False),
    ("192.168.1.4", True),
    ("10.0.0.2", False),
    ("[2001:db8::52:0:1]", False),
    ("[2001:db8::52:0:2]", True),
    ("[2001:db8::52:0:3]", False),
    ("[2002:db8:a::123]", False),
    ("[fe80::424b:c8be:1643:a1b6]", True),
    ("barbaz.net", True),
    ("www.barbaz.net", False),
    ("foobar.com", False),
    ("www.foobar.com", False),
    ("foofoobar.com", True),
    ("baz.com", True),
    ("localhost.net", True),
    ("local.localhost", True),
    ("barbarbaz.net", True),
    ("wildcard.io", True),
    ("nested.wildcard.io", False),
    ("awildcard.io", True),
]


@pytest.mark.parametrize(("host", "proxied"), GO_USE_PROXY)
def test_go_use_proxy_table(host: str, proxied: bool) -> None:
    env = ProxyEnvironment(http_proxy="http://proxy", no_proxy=GO_NO_PROXY)
    assert env.use_proxy(f"http://{host}:80") is proxied
    # TestAllNoProxy: "*" exempts every host.
    assert (
        ProxyEnvironment(http_proxy="http://proxy", no_proxy="*").use_proxy(f"http://{host}:80")
        is False
    )


def test_a_malformed_entry_is_skipped_not_fatal() -> None:
    # TestInvalidNoProxy: ":1" must not crash and exempts nothing.
    assert ProxyEnvironment(no_proxy=":1").use_proxy("http://example.com:80")
    assert ProxyEnvironment(no_proxy="a/b, :x, [::1").use_proxy("http://example.com:80")


def test_upper_case_wins_and_the_lower_case_fills_in() -> None:
    # Go's getEnvAny("HTTPS_PROXY", "https_proxy"): the opposite of urllib and curl.
    env = ProxyEnvironment.from_environ(
        {"HTTPS_PROXY": "upper:1", "https_proxy": "lower:1", "no_proxy": "x.test"}
    )
    assert env.https_proxy == "http://upper:1"
    assert env.no_proxy == "x.test"
    assert ProxyEnvironment.from_environ({"https_proxy": "lower:1"}).https_proxy == "http://lower:1"


def test_a_trailing_dot_is_the_same_name() -> None:
    env = ProxyEnvironment(https_proxy="http://p:1", no_proxy="corp.example.")
    assert env.proxy_for("https://cp.corp.example./x") is None
    assert env.proxy_for("https://cp.corp.example/x") is None
    assert env.proxy_for("https://other.example/x") == "http://p:1"


def test_a_port_in_no_proxy_restricts_the_entry_to_that_port() -> None:
    env = ProxyEnvironment(https_proxy="http://p:1", no_proxy="cp.example.com:8443")
    assert env.proxy_for("https://cp.example.com:8443/") is None
    assert env.proxy_for("https://cp.example.com/") == "http://p:1"  # port 443


def test_the_repr_hides_proxy_credentials() -> None:
    env = ProxyEnvironment.from_environ({"HTTPS_PROXY": "http://alice:s3cret@proxy:3128"})
    assert "s3cret" not in repr(env)
    assert "proxy:3128" in repr(env)
    assert env.proxy_for("https://cp.example.com") == "http://alice:s3cret@proxy:3128"


# -- properties ---------------------------------------------------------------------------------

label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
domain = st.lists(label, min_size=2, max_size=4).map(".".join)
proxy = "http://proxy.corp:3128"


def proxied(host: str, no_proxy: str, port: int | None = None) -> bool:
    url = f"https://{host}" + (f":{port}" if port else "") + "/api/agent/jobs"
    return ProxyEnvironment(https_proxy=proxy, no_proxy=no_proxy).proxy_for(url) is not None


@given(domain, label)
def test_a_name_entry_exempts_itself_and_its_subdomains(name: str, sub: str) -> None:
    assert not proxied(name, name)
    assert not proxied(f"{sub}.{name}", name)
    assert proxied(f"{sub}{name}", name)  # a suffix of the text, not of the labels


@given(domain, label)
def test_a_dot_or_star_entry_exempts_subdomains_only(name: str, sub: str) -> None:
    for entry in (f".{name}", f"*.{name}"):
        assert proxied(name, entry)
        assert not proxied(f"{sub}.{name}", entry)


@given(domain, st.integers(1, 65535), st.integers(1, 65535))
def test_a_port_entry_exempts_only_that_port(name: str, port: int, other: int) -> None:
    assert not proxied(name, f"{name}:{port}", port)
    assert proxied(name, f"{name}:{port}", other) is (port != other)


@given(domain, st.data())
def test_matching_ignores_case(name: str, data: st.DataObject) -> None:
    shouted = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    assert proxied(shouted, name) == proxied(name, name) == proxied(name, shouted)


@given(st.ip_addresses(v=4), st.integers(8, 32))
def test_a_cidr_exempts_exactly_its_addresses(address: ipaddress.IPv4Address, bits: int) -> None:
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    other = ipaddress.IPv4Address((int(network.broadcast_address) + 1) % 2**32)
    if address.is_loopback or other.is_loopback:
        return  # loopback is never proxied anyway (checked below)
    assert not proxied(str(address), str(network))
    assert proxied(str(other), str(network))


@given(st.lists(domain, max_size=3).map(", ".join))
def test_localhost_and_loopback_are_never_proxied(no_proxy: str) -> None:
    for host in ("localhost", "127.0.0.1", "127.1.2.3", "[::1]"):
        assert not proxied(host, no_proxy)


@given(
    st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=-]{1,16}", fullmatch=True),
    domain,
    st.integers(1, 65535),
)
def test_redact_drops_user_and_password_and_keeps_the_address(
    user: str, password: str, host: str, port: int
) -> None:
    shown = redact(f"http://{user}:{password}@{host}:{port}")
    assert shown == f"http://{host}:{port}"
    assert redact(f"http://{host}:{port}") == f"http://{host}:{port}"

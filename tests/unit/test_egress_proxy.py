"""The agent through a forward proxy (agent/egress.py, agent/client.py): the proxy of the flag or
of HTTPS_PROXY/NO_PROXY, Basic credentials from the proxy URL sent but never shown, and a
proxy's own failures (407, a refused CONNECT, a login page instead of a tunnel, a proxy that is
down) reported as the proxy's, not the control plane's. An in-process CONNECT proxy stands in
here (tests/unit/egress_helpers.py); the black-box tier runs squid."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry

from tests.unit.egress_helpers import ConnectProxy, CountingServer, Pki, connect_proxy, https_server
from vworkspace.agent.client import ControlPlaneClient, ProtocolError, UnavailableError, register
from vworkspace.agent.egress import Egress, EgressConfig, describe_failure
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.wire import Credentials
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.proxy import ProxyEnvironment

TOKEN = "bearer-token-77"
PASSWORD = "pr0xy-s3cret"
CP_HOST = "controlplane.vworkspace.test"  # resolvable only through the proxy


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[CountingServer]:
    async with https_server(pki) as srv:
        yield srv


@pytest.fixture
def ca_file(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(pki.ca.cert_pem)
    return path


def named(server: CountingServer) -> str:
    """The server's URL under the name only the proxy resolves."""
    return server.url.replace("127.0.0.1", CP_HOST)


def with_credentials(proxy: ConnectProxy) -> str:
    return proxy.url.replace("http://", f"http://agent:{PASSWORD}@")


async def call(egress: Egress, url: str, registry: CollectorRegistry) -> None:
    async def reload() -> Credentials:
        return Credentials(url, "c1", TOKEN)

    client = ControlPlaneClient(
        egress,
        credentials=lambda: Credentials(url, "c1", TOKEN),
        reload=reload,
        clock=RealClock(),
        rng=random.Random(2),
        backoff_initial=0.001,
        attempts=2,
        metrics=AgentMetrics(registry),
    )
    await client.ack("job-1")


def proxy_errors(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(
        "vworkspace_agent_protocol_errors_total", {"endpoint": "ack", "reason": "proxy"}
    )
    return value or 0.0


async def test_the_flag_proxy_tunnels_with_its_credentials(
    server: CountingServer, ca_file: Path
) -> None:
    async with connect_proxy(credentials=("agent", PASSWORD), hosts={CP_HOST: "127.0.0.1"}) as px:
        egress = Egress(EgressConfig(proxy=with_credentials(px), ca_file=ca_file))
        try:
            await call(egress, named(server), CollectorRegistry())
        finally:
            await egress.close()
    assert server.requests == [("POST", "/api/agent/jobs/job-1/ack", False)]
    port = server.url.rsplit(":", 1)[1]
    assert px.connects == [f"CONNECT {CP_HOST}:{port}"]


async def test_https_proxy_from_the_environment_and_no_proxy(
    server: CountingServer, ca_file: Path
) -> None:
    async with connect_proxy(hosts={CP_HOST: "127.0.0.1"}) as px:
        env = ProxyEnvironment.from_environ({"HTTPS_PROXY": px.url, "NO_PROXY": ".corp.internal"})
        egress = Egress(EgressConfig(environment=env, ca_file=ca_file))
        try:
            await call(egress, named(server), CollectorRegistry())
            assert len(px.connects) == 1
            assert egress.route("https://cp.corp.internal/x").proxy is None
            assert egress.route(named(server)).proxy == px.url
        finally:
            await egress.close()
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("mode", "status"), [("407", "407 Proxy Authentication Required"), ("403", "403 Forbidden")]
)
async def test_a_refused_connect_is_the_proxys_protocol_error(
    server: CountingServer, ca_file: Path, mode: str, status: str
) -> None:
    registry = CollectorRegistry()
    async with connect_proxy(mode) as px:
        egress = Egress(EgressConfig(proxy=with_credentials(px), ca_file=ca_file))
        try:
            with structlog.testing.capture_logs() as logs, pytest.raises(ProtocolError) as err:
                await call(egress, named(server), registry)
        finally:
            await egress.close()
    message = str(err.value)
    port = server.url.rsplit(":", 1)[1]
    assert message.startswith(f"proxy {px.url}: CONNECT {CP_HOST}:{port} answered {status}")
    assert ("check the credentials in --control-plane-proxy" in message) is (mode == "407")
    assert err.value.reason == "proxy"
    assert proxy_errors(registry) == 2  # two attempts, each counted
    assert PASSWORD not in message + json.dumps(logs, default=str)
    assert TOKEN not in message + json.dumps(logs, default=str)
    assert server.requests == []


async def test_a_login_page_instead_of_a_tunnel_names_the_proxy(
    server: CountingServer, ca_file: Path
) -> None:
    async with connect_proxy("html") as px:
        egress = Egress(EgressConfig(proxy=px.url, ca_file=ca_file))
        try:
            with pytest.raises(ProtocolError) as err:
                await call(egress, named(server), CollectorRegistry())
        finally:
            await egress.close()
    message = str(err.value)
    assert message.startswith(f"proxy {px.url}: ")
    assert "may be intercepting the connection or answering with its own page" in message
    assert server.requests == []


async def test_a_login_page_on_a_connection_kept_open_times_out_naming_the_proxy(
    server: CountingServer, ca_file: Path
) -> None:
    async with connect_proxy("html-keep-open") as px:
        egress = Egress(EgressConfig(proxy=px.url, ca_file=ca_file))
        try:
            with pytest.raises(aiohttp.ClientError) as err:
                async with egress.request(
                    "GET", named(server), timeout=aiohttp.ClientTimeout(sock_connect=0.3)
                ):
                    pass
        finally:
            await egress.close()
    described = describe_failure(err.value, url=named(server), proxy=px.url)
    assert described is not None
    message, protocol = described
    assert message.startswith(f"proxy {px.url}: no tunnel to {CP_HOST}:")
    assert "answering with its own page" in message
    assert not protocol  # a timeout may also be a slow network: unavailable, not protocol
    assert server.requests == []


async def test_a_login_page_for_a_plain_http_request_says_through_which_proxy() -> None:
    async with connect_proxy("html") as px:
        egress = Egress(EgressConfig(proxy=px.url))
        try:
            with pytest.raises(ProtocolError) as err:
                await register(egress, base_url="http://cp.example.test", registration_token="r1")
        finally:
            await egress.close()
    assert err.value.reason == "content_type"
    assert str(err.value).endswith(f"through proxy {px.url}")
    assert px.connects == ["POST http://cp.example.test/api/agent/register"]


async def test_a_proxy_that_is_down_is_unavailable_and_says_so(ca_file: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = f"http://agent:{PASSWORD}@127.0.0.1:{port}"
    egress = Egress(EgressConfig(proxy=proxy, ca_file=ca_file))
    try:
        with pytest.raises(UnavailableError) as err:
            await call(egress, f"https://{CP_HOST}", CollectorRegistry())
    finally:
        await egress.close()
    assert not isinstance(err.value, ProtocolError)
    assert str(err.value).startswith(f"proxy http://127.0.0.1:{port}: cannot reach the proxy")
    assert PASSWORD not in str(err.value)


async def test_register_blames_the_proxy_too(server: CountingServer, ca_file: Path) -> None:
    registry = CollectorRegistry()
    async with connect_proxy("407") as px:
        egress = Egress(EgressConfig(proxy=px.url, ca_file=ca_file))
        try:
            with pytest.raises(ProtocolError, match=r"^proxy http://127\.0\.0\.1:\d+: CONNECT"):
                await register(
                    egress,
                    base_url=named(server),
                    registration_token="reg-token",
                    metrics=AgentMetrics(registry),
                )
        finally:
            await egress.close()
    assert (
        registry.get_sample_value(
            "vworkspace_agent_protocol_errors_total", {"endpoint": "register", "reason": "proxy"}
        )
        == 1
    )


async def test_an_unusable_proxy_scheme_is_refused_naming_its_source() -> None:
    env = ProxyEnvironment.from_environ({"HTTPS_PROXY": "socks5://user:pw@socks:1080"})
    egress = Egress(EgressConfig(environment=env))
    try:
        with pytest.raises(Exception, match="HTTPS_PROXY/HTTP_PROXY 'socks5://socks:1080'"):
            egress.route("https://cp.example.com")
    finally:
        await egress.close()

"""The real squid of the egress tests (vworkspace/testing/squid.py): CONNECT with Basic auth
reaches the mock control plane over mutual TLS at a name only squid resolves; a wrong password
gets 407; without the proxy the name does not resolve. No API server needed."""

from __future__ import annotations

import aiohttp
import pytest

from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing.egresspki import CONTROL_PLANE_HOST, EgressPki
from vworkspace.testing.squid import AccessEntry, Squid

from .egress_fixtures import (
    PROXY_USER,
    egress_pki_fixture,  # noqa: F401 (a fixture)
    resolves_locally,
    squid_fixture,  # noqa: F401 (a fixture)
    tls_mock_fixture,  # noqa: F401 (a fixture)
)
from .waits import eventually

pytestmark = pytest.mark.integration


def connects(proxy: Squid, mock: MockControlPlane) -> list[AccessEntry]:
    target = f"{CONTROL_PLANE_HOST}:{mock.port}"
    return [e for e in proxy.access_log() if e.method == "CONNECT" and e.target == target]


async def logged_connects(proxy: Squid, mock: MockControlPlane) -> list[AccessEntry]:
    """The CONNECTs to the mock squid has logged, once there is one (it logs a transaction when
    it ends, a moment after the client closed)."""

    async def some() -> list[AccessEntry]:
        return connects(proxy, mock)

    found: list[AccessEntry] = await eventually(some, what="a CONNECT in squid's access log")
    return found


async def test_connect_with_credentials_reaches_a_name_only_squid_resolves(
    squid: Squid, tls_mock: MockControlPlane, egress_pki: EgressPki
) -> None:
    client_ctx = egress_pki.client_context(client_cert=egress_pki.client)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{tls_mock.url}/healthz", proxy=squid.url_with_credentials, ssl=client_ctx
        ) as resp,
    ):
        assert resp.status == 200
    assert tls_mock.url.startswith(f"https://{CONTROL_PLANE_HOST}:")
    [entry] = await logged_connects(squid, tls_mock)
    assert (entry.status, entry.user, entry.result) == (200, PROXY_USER, "TCP_TUNNEL")


@pytest.mark.parametrize("credentials", ["wrong password", "none"])
async def test_wrong_or_missing_credentials_get_407(
    squid: Squid, tls_mock: MockControlPlane, egress_pki: EgressPki, credentials: str
) -> None:
    proxy_url = (
        squid.url_with(PROXY_USER, "not-the-password") if credentials != "none" else squid.url
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as caught:
            await session.get(
                f"{tls_mock.url}/healthz", proxy=proxy_url, ssl=egress_pki.client_context()
            )
    assert caught.value.status == 407
    entries = await logged_connects(squid, tls_mock)
    assert [(e.status, e.result) for e in entries] == [(407, "TCP_DENIED")]
    assert tls_mock.state.requests == 0


async def test_without_the_proxy_the_name_does_not_resolve(
    tls_mock: MockControlPlane, egress_pki: EgressPki
) -> None:
    assert not resolves_locally(CONTROL_PLANE_HOST)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(
                f"{tls_mock.url}/healthz",
                ssl=egress_pki.client_context(client_cert=egress_pki.client),
            )
    assert tls_mock.state.requests == 0

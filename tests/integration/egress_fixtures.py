"""Fixtures for the egress tests (issue 27): the test PKI, a real squid, a mock control plane
over mutual TLS at a name only squid resolves. Imported by the test modules that use them
(``from .egress_fixtures import ...``), so conftest.py stays as it is. The functions carry a
``_fixture`` suffix and the fixture its short name (``name=``), so importing one does not shadow
the test parameters named after it (ruff F811)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.testing.egresspki import CONTROL_PLANE_HOST, EgressPki, write_egress_pki
from vworkspace.testing.pytest_plugin import unavailable
from vworkspace.testing.squid import Squid, SquidError

PROXY_USER = "egress"
PROXY_PASSWORD = "pr0xy-pa55word-never-logged"  # distinctive, so a log grep cannot miss it


def resolves_locally(name: str) -> bool:
    """Whether this host's resolver knows ``name`` (the tests need it not to)."""
    try:
        socket.getaddrinfo(name, 443)
    except socket.gaierror:
        return False
    return True


@pytest.fixture(name="egress_pki", scope="module")
def egress_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> EgressPki:
    return write_egress_pki(tmp_path_factory.mktemp("egress-pki"))


@pytest.fixture(name="squid")
def squid_fixture() -> Iterator[Squid]:
    """squid with Basic auth (:data:`PROXY_USER`/:data:`PROXY_PASSWORD`) resolving
    ``controlplane.vworkspace.test`` to 127.0.0.1. A missing squid skips (fails under
    VWORKSPACE_REQUIRE_TESTENV, as CI runs) naming scripts/install-squid.sh."""
    if resolves_locally(CONTROL_PLANE_HOST):
        pytest.fail(
            f"{CONTROL_PLANE_HOST} resolves on this host (an /etc/hosts entry?): the egress "
            "tests need a name that only the proxy resolves; remove the entry"
        )
    try:
        proxy = Squid(user=PROXY_USER, password=PROXY_PASSWORD, hosts=(CONTROL_PLANE_HOST,))
    except SquidError as err:
        unavailable(str(err))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        proxy.cleanup()


@pytest.fixture(name="tls_mock")
async def tls_mock_fixture(egress_pki: EgressPki) -> AsyncIterator[MockControlPlane]:
    """The mock on 127.0.0.1 over TLS from the test CA, requiring a client certificate the CA
    signed; its ``url`` names ``https://controlplane.vworkspace.test:<port>``."""
    mock = MockControlPlane(
        ssl_context=egress_pki.server_context(require_client_cert=True),
        url_host=CONTROL_PLANE_HOST,
    )
    await mock.start()
    try:
        yield mock
    finally:
        await mock.stop()


def admin_client(mock: MockControlPlane, pki: EgressPki, *, admin_token: str = "") -> AdminClient:
    """The test's own admin client of ``tls_mock``: direct, by address, with the valid client
    certificate (the admin API sits behind the same mTLS as the agent API)."""
    return AdminClient(
        mock.address_url,
        admin_token=admin_token,
        ssl_context=pki.client_context(client_cert=pki.client),
        server_hostname=CONTROL_PLANE_HOST,
    )

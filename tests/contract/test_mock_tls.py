"""The mock control plane over TLS (issue 27): `mock-control-plane --tls-cert-file/--tls-key-file
[--client-ca-file]` as a process, and ``MockControlPlane(ssl_context=, url_host=)`` in-process,
serve HTTPS, and demand a client certificate when asked."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from vworkspace.app.cli import main
from vworkspace.devtools.mock_cmd import tls_context
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.testing.egresspki import CONTROL_PLANE_HOST, EgressPki, write_egress_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> EgressPki:
    return write_egress_pki(tmp_path_factory.mktemp("mock-tls"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def mtls_process(pki: EgressPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The standalone mock with mTLS on a free port; yields its https:// URL (by address)."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("mock-tls-log") / "mock.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vworkspace",
            "mock-control-plane",
            "--addr",
            f"127.0.0.1:{port}",
            "--tls-cert-file",
            str(pki.server.cert),
            "--tls-key-file",
            str(pki.server.key),
            "--client-ca-file",
            str(pki.ca_cert),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # listening: a TCP connect succeeds (no TLS needed to know that)
            assert proc.poll() is None, f"the mock exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the mock did not listen within 30 s"
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def _healthz(url: str, context: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/healthz", ssl=context, server_hostname=CONTROL_PLANE_HOST) as resp,
    ):
        return resp.status


async def test_the_process_serves_a_client_with_a_certificate_of_the_ca(
    mtls_process: str, pki: EgressPki
) -> None:
    assert await _healthz(mtls_process, pki.client_context(client_cert=pki.client)) == 200
    admin = AdminClient(
        mtls_process,
        ssl_context=pki.client_context(client_cert=pki.client),
        server_hostname=CONTROL_PLANE_HOST,
    )
    assert await admin.job_result("nothing") is None  # the admin API over the same mTLS


@pytest.mark.parametrize("client", ["none", "expired"])
async def test_the_process_refuses_a_client_without_a_valid_certificate(
    mtls_process: str, pki: EgressPki, client: str
) -> None:
    pair = pki.expired_client if client == "expired" else None
    with pytest.raises(aiohttp.ClientError):
        await _healthz(mtls_process, pki.client_context(client_cert=pair))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert-file", "c.pem"], "--tls-cert-file and --tls-key-file go together"),
        (["--tls-key-file", "k.pem"], "--tls-cert-file and --tls-key-file go together"),
        (["--client-ca-file", "ca.pem"], "--client-ca-file needs --tls-cert-file"),
        (
            ["--tls-cert-file", "/nonexistent.crt", "--tls-key-file", "/nonexistent.key"],
            "--tls-cert-file/--tls-key-file: cannot load /nonexistent.crt",
        ),
    ],
)
def test_flags_that_cannot_serve_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mock-control-plane", "--addr", "127.0.0.1:0", *argv]) == 2
    assert message in capsys.readouterr().out


def test_a_client_ca_that_is_not_pem_names_its_flag(pki: EgressPki, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="--client-ca-file"):
        tls_context(pki.server.cert, pki.server.key, bogus)
    assert tls_context(None, None, None) is None


async def test_in_process_mock_over_tls_at_a_named_url(pki: EgressPki) -> None:
    mock = MockControlPlane(
        ssl_context=pki.server_context(require_client_cert=False), url_host=CONTROL_PLANE_HOST
    )
    async with mock:
        assert mock.url == f"https://{CONTROL_PLANE_HOST}:{mock.port}"
        assert mock.address_url == f"https://127.0.0.1:{mock.port}"
        assert await _healthz(mock.address_url, pki.client_context()) == 200

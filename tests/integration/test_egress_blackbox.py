"""Acceptance for issue 27's egress: `python -m vworkspace run --agent-enabled` as a process,
behind a real squid with Basic auth, reaching the mock control plane over mutual TLS from a
private CA, with a pinned key, and serving a job end to end; and each way that route can be
wrong failing closed with a message that names the part at fault.

Only the proxy can reach the control plane: the mock listens on 127.0.0.1 but its URL names
``controlplane.vworkspace.test``, which this host cannot resolve (asserted) and squid maps to
127.0.0.1 in its own ``hosts_file``. So a job served at all was served through squid, and squid's
access log shows the CONNECTs with the proxy user. Every test also greps the operator's log for
the proxy password and the bearer token: neither may appear.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ApiError, ControlPlane
from vworkspace.testing.captiveproxy import CaptiveMode, CaptiveProxy
from vworkspace.testing.egresspki import CONTROL_PLANE_HOST, EgressPki, PemPair
from vworkspace.testing.squid import AccessEntry, Squid

from .egress_fixtures import (
    PROXY_PASSWORD,
    PROXY_USER,
    egress_pki_fixture,  # noqa: F401 (a fixture)
    resolves_locally,
    squid_fixture,  # noqa: F401 (a fixture)
    tls_mock_fixture,  # noqa: F401 (a fixture)
)
from .operator_process import OperatorProcess, wait_until

pytestmark = pytest.mark.integration
CLUSTER = "cluster-egress"
TOKEN = "egress-bearer-t0ken-never-logged"  # distinctive, so the log grep cannot miss it
WRONG_PASSWORD = "wr0ng-pa55word-never-logged"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
JOB_ID = "egress-1"


def apply_job(namespace: str, name: str = "crm") -> JsonObj:
    return {
        "id": JOB_ID,
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{namespace}/{name}@1",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"appRef": {"catalogId": name}, "mode": "placeholder"},
        },
    }


def egress_args(
    mock: MockControlPlane,
    pki: EgressPki,
    *,
    pins: tuple[str, ...],
    client: PemPair | None = None,
    proxy_flag: str = "",
) -> list[str]:
    client = client or pki.client
    args = [
        "--agent-enabled",
        "--control-plane-base-url",
        mock.url,
        "--cluster-id",
        CLUSTER,
        "--agent-token",
        TOKEN,
        "--agent-poll-interval",
        "1s",
        "--control-plane-ca-file",
        str(pki.ca_cert),
        "--control-plane-client-cert",
        str(client.cert),
        "--control-plane-client-key",
        str(client.key),
    ]
    for pin in pins:
        args += ["--control-plane-pin-sha256", pin]
    if proxy_flag:
        args += ["--control-plane-proxy", proxy_flag]
    return args


class StartOperator(Protocol):
    def __call__(self, args: list[str], *, https_proxy: str = "") -> OperatorProcess: ...


@pytest.fixture
def start_operator(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StartOperator]:
    """``start(args, https_proxy="")`` runs the operator with exactly that HTTPS_PROXY (none of
    the proxy variables when ""), waits until it is ready and returns it; stopped afterwards.
    The variables are set only while the process starts: this test process's own clients
    (the API server on 127.0.0.1) must not see them."""
    started: list[OperatorProcess] = []

    def start(args: list[str], *, https_proxy: str = "") -> OperatorProcess:
        with monkeypatch.context() as env:
            for name in PROXY_VARIABLES:
                env.delenv(name, raising=False)
            if https_proxy:
                env.setenv("HTTPS_PROXY", https_proxy)
            operator = OperatorProcess(
                control_plane, kube_namespace, tmp_path / f"operator{len(started)}.log", *args
            )
        started.append(operator)
        operator.wait_ready()
        return operator

    yield start
    for operator in started:
        operator.stop()


def no_secrets_in(operator: OperatorProcess) -> None:
    log = operator.log_path.read_text(errors="replace")  # also after stop()
    for secret in (PROXY_PASSWORD, WRONG_PASSWORD, TOKEN):
        assert secret not in log, "a secret reached the operator's log"


def nothing_served(operator: OperatorProcess, mock: MockControlPlane) -> None:
    """Failed closed: the mock saw no agent request, the job is still queued, and no secret
    reached the operator's log."""
    assert mock.state.requests == 0
    assert mock.pending_count(CLUSTER) == 1
    no_secrets_in(operator)


async def log_says(operator: OperatorProcess, *needles: str, timeout: float = 30) -> str:
    """Wait until one line of the operator's log holds every needle; return that line."""

    def found() -> str:
        for line in operator.output().splitlines():
            if all(needle in line for needle in needles):
                return line
        return ""

    await asyncio.to_thread(wait_until, f"a log line with {needles}", found, timeout)
    return found()


def error_of(line: str) -> str:
    """The ``error`` field of one JSON log line."""
    return str(json.loads(line).get("error", ""))


def tunnels(squid: Squid, mock: MockControlPlane) -> list[AccessEntry]:
    target = f"{CONTROL_PLANE_HOST}:{mock.port}"
    return [e for e in squid.access_log() if e.method == "CONNECT" and e.target == target]


@pytest.mark.parametrize("proxy_from", ["HTTPS_PROXY", "--control-plane-proxy"])
async def test_behind_squid_with_a_private_ca_mtls_and_a_pin_a_job_is_served(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    squid: Squid,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
    proxy_from: str,
) -> None:
    assert not resolves_locally(CONTROL_PLANE_HOST)  # only squid can reach tls_mock.url
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    # Pin the CA's key in one variant, the server's own key (plus a second, rotated-in pin)
    # in the other: either is in the chain.
    pins = (
        (egress_pki.ca_pin,)
        if proxy_from == "HTTPS_PROXY"
        else (egress_pki.other_ca_pin, egress_pki.server.pin)
    )
    flag = squid.url_with_credentials if proxy_from == "--control-plane-proxy" else ""
    env = squid.url_with_credentials if proxy_from == "HTTPS_PROXY" else ""
    args = egress_args(tls_mock, egress_pki, pins=pins, proxy_flag=flag)
    operator = start_operator(args, https_proxy=env)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))

    rest = control_plane.rest()
    path = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances/crm"

    def applied() -> bool:
        try:
            rest.get(path)
        except ApiError:
            return False
        return tls_mock.job_result(JOB_ID) is not None

    await asyncio.to_thread(wait_until, "the job applied and its result posted", applied, 60)
    result = tls_mock.job_result(JOB_ID)
    assert result is not None
    assert result["outcome"] == "succeeded", result
    assert rest.get(path)["metadata"]["labels"]["app.vworkspace.io/managed-by"] == "control-plane"

    operator.stop()  # closes its tunnels: squid logs a CONNECT when it ends
    await asyncio.to_thread(
        wait_until, "the agent's CONNECTs in squid's log", lambda: tunnels(squid, tls_mock), 20
    )
    entries = tunnels(squid, tls_mock)
    assert {(e.user, e.status, e.result) for e in entries} == {(PROXY_USER, 200, "TCP_TUNNEL")}
    assert tls_mock.state.requests > 0
    no_secrets_in(operator)


async def test_without_the_proxy_the_control_plane_is_unreachable(
    vworkspace_crds: list[str],
    kube_namespace: str,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
) -> None:
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))
    args = egress_args(tls_mock, egress_pki, pins=(egress_pki.ca_pin,))
    operator = start_operator(args)
    line = await log_says(operator, CONTROL_PLANE_HOST)
    assert "Name or service not known" in line or "resolve" in line.lower(), line
    nothing_served(operator, tls_mock)


async def test_a_wrong_proxy_password_gets_407_and_the_message_names_the_proxy(
    vworkspace_crds: list[str],
    kube_namespace: str,
    squid: Squid,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
) -> None:
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))
    args = egress_args(tls_mock, egress_pki, pins=(egress_pki.ca_pin,))
    operator = start_operator(args, https_proxy=squid.url_with(PROXY_USER, WRONG_PASSWORD))
    line = await log_says(operator, f"proxy {squid.url}:", "407")
    # The proxy is blamed first thing (the message starts with it), not the control plane.
    assert error_of(line).startswith(
        f"proxy {squid.url}: CONNECT {CONTROL_PLANE_HOST}:{tls_mock.port} answered 407"
    ), line
    # squid writes its log line after answering: wait for it rather than race it.
    await asyncio.to_thread(
        wait_until, "the 407 in squid's log", lambda: tunnels(squid, tls_mock), 20
    )
    assert {(e.status, e.result) for e in tunnels(squid, tls_mock)} == {(407, "TCP_DENIED")}
    nothing_served(operator, tls_mock)


@pytest.mark.parametrize("mode", list(CaptiveMode))
async def test_a_captive_proxy_is_blamed_not_the_control_plane(
    vworkspace_crds: list[str],
    kube_namespace: str,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
    mode: CaptiveMode,
) -> None:
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    async with CaptiveProxy(mode) as captive:
        args = egress_args(
            tls_mock,
            egress_pki,
            pins=(egress_pki.ca_pin,),
            proxy_flag=captive.url_with(PROXY_USER, PROXY_PASSWORD),
        )
        operator = start_operator(args)
        proxy_url = captive.url
        line = await log_says(operator, f"proxy {proxy_url}:")
        assert captive.requests, "the operator never asked the captive proxy"
        assert {r.method for r in captive.requests} == {"CONNECT"}
    assert error_of(line).startswith(f"proxy {proxy_url}:"), line
    if mode is CaptiveMode.AUTH:
        assert "407" in line, line
    assert tls_mock.state.requests == 0
    no_secrets_in(operator)


async def test_a_wrong_pin_is_refused_before_any_request(
    vworkspace_crds: list[str],
    kube_namespace: str,
    squid: Squid,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
) -> None:
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))
    args = egress_args(tls_mock, egress_pki, pins=(egress_pki.other_ca_pin,))
    operator = start_operator(args, https_proxy=squid.url_with_credentials)
    line = await log_says(operator, "no pinned key")
    # The message shows the keys the server offered, so the pin can be compared with them.
    assert f"sha256/{egress_pki.server.pin}" in line, line
    assert f"sha256/{egress_pki.ca_pin}" in line, line
    await asyncio.to_thread(
        wait_until,
        "the pin failure counted",
        lambda: (operator.metric("vworkspace_agent_tls_pin_failures_total") or 0) >= 1,
    )
    nothing_served(operator, tls_mock)  # the handshake completed; no request followed


async def test_an_expired_client_certificate_fails_closed(
    vworkspace_crds: list[str],
    kube_namespace: str,
    squid: Squid,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
) -> None:
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))
    args = egress_args(
        tls_mock, egress_pki, pins=(egress_pki.ca_pin,), client=egress_pki.expired_client
    )
    operator = start_operator(args, https_proxy=squid.url_with_credentials)
    line = await log_says(operator, "client certificate expired")
    assert str(egress_pki.expired_client.cert) in line, line
    nothing_served(operator, tls_mock)


@pytest.mark.parametrize("source", ["files", "Secret"])
async def test_a_renewed_client_certificate_is_used_without_a_restart(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    squid: Squid,
    tls_mock: MockControlPlane,
    egress_pki: EgressPki,
    start_operator: StartOperator,
    tmp_path: Path,
    source: str,
) -> None:
    """The client certificate (and, from the Secret, the CA too) starts out expired; renewing
    the files, or the credentials Secret's ``tls.crt``/``tls.key``, lets the same process serve
    the queued job."""
    tls_mock.set_bootstrap_token(CLUSTER, TOKEN)
    await tls_mock.enqueue(CLUSTER, apply_job(kube_namespace))
    rest = control_plane.rest()
    expired, valid = egress_pki.expired_client, egress_pki.client
    secret_path = f"/api/v1/namespaces/{kube_namespace}/secrets/vworkspace-agent-credentials"
    if source == "files":
        live = PemPair(tmp_path / "client.crt", tmp_path / "client.key")
        live.key.write_bytes(expired.key.read_bytes())
        live.cert.write_bytes(expired.cert.read_bytes())
        args = egress_args(tls_mock, egress_pki, pins=(egress_pki.ca_pin,), client=live)
        expect = str(live.cert)
    else:
        rest.post(
            f"/api/v1/namespaces/{kube_namespace}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "vworkspace-agent-credentials"},
                "stringData": {
                    "control-plane-base-url": tls_mock.url,
                    "cluster-id": CLUSTER,
                    "token": TOKEN,
                    "ca.crt": egress_pki.ca_cert.read_text(),
                    "tls.crt": expired.cert.read_text(),
                    "tls.key": expired.key.read_text(),
                },
            },
        )
        args = [
            "--agent-enabled",
            "--agent-poll-interval",
            "1s",
            "--control-plane-pin-sha256",
            egress_pki.ca_pin,
        ]
        expect = "tls.crt"
    operator = start_operator(args, https_proxy=squid.url_with_credentials)
    line = await log_says(operator, "client certificate expired")
    assert expect in line, line
    assert tls_mock.state.requests == 0

    if source == "files":  # key first: a reader that sees the new certificate sees its key
        live.key.write_bytes(valid.key.read_bytes())
        live.cert.write_bytes(valid.cert.read_bytes())
    else:
        rest.request(
            "PATCH",
            secret_path,
            content_type="application/merge-patch+json",
            body={
                "stringData": {"tls.crt": valid.cert.read_text(), "tls.key": valid.key.read_text()}
            },
        )
    await asyncio.to_thread(
        wait_until, "the job served after the renewal", lambda: tls_mock.job_result(JOB_ID), 60
    )
    result = tls_mock.job_result(JOB_ID)
    assert result is not None
    assert result["outcome"] == "succeeded", result
    assert operator.proc.poll() is None  # the same process: no restart
    no_secrets_in(operator)

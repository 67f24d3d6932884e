"""Control-plane URLs must be https:// unless --allow-insecure-control-plane is given (issue 24,
F8): `run --control-plane-base-url`, `register --control-plane-endpoint` and a Cluster's
spec.controlPlaneEndpoint, which the Cluster reconciler refuses with a condition naming the field
before the registration token leaves the cluster."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from vworkspace.api.endpoints import endpoint_problem
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.cli import build_parser, main
from vworkspace.app.run_cmd import ignored_flags, settings_from
from vworkspace.controllers.cluster import ClusterReconciler
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.resources import CLUSTERS
from vworkspace.testing.fakeapi import FakeApi


@pytest.mark.parametrize(
    ("url", "allow", "expected"),
    [
        ("https://cp.example.com", False, None),
        ("HTTPS://cp.example.com/base/", False, None),
        ("http://127.0.0.1:8080", True, None),
        ("http://127.0.0.1:8080", False, "must be an https:// URL, got 'http://127.0.0.1:8080'"),
        ("HTTP://cp.example.com", False, "--allow-insecure-control-plane"),
        ("ftp://cp.example.com", True, "must be an https:// URL, got 'ftp://cp.example.com'"),
        ("cp.example.com", True, "must be an https:// URL"),
        ("https://", False, "has no host"),
        ("https://[::1", False, "is not a URL"),
    ],
)
def test_endpoint_rule(url: str, allow: bool, expected: str | None) -> None:
    problem = endpoint_problem(url, field="F", allow_insecure=allow)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith("F ")
        assert expected in problem


# -- run ---------------------------------------------------------------------------------------


def run_settings(*argv: str, env: dict[str, str] | None = None) -> Any:
    return settings_from(build_parser().parse_args(["run", *argv]), env or {})


def test_run_refuses_a_plain_http_control_plane_naming_the_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--control-plane-base-url", "http://cp.example.com"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --control-plane-base-url (or CONTROL_PLANE_BASE_URL) must be ")
    assert "--allow-insecure-control-plane" in err
    with pytest.raises(ValueError, match="CONTROL_PLANE_BASE_URL"):
        run_settings(env={"CONTROL_PLANE_BASE_URL": "http://cp.example.com"})


def test_run_takes_https_and_with_the_flag_http() -> None:
    secure = run_settings("--control-plane-base-url", "https://cp.example.com")
    assert secure.agent.overrides.base_url == "https://cp.example.com"
    assert not secure.agent.hardening.allow_insecure_control_plane
    for flag in ("--allow-insecure-control-plane", "--allow-insecure-control-plane=true"):
        insecure = run_settings("--control-plane-base-url", "http://127.0.0.1:8080", flag)
        assert insecure.agent.overrides.base_url == "http://127.0.0.1:8080"
        assert insecure.agent.hardening.allow_insecure_control_plane


def test_the_insecure_flag_is_reported_when_the_agent_is_off() -> None:
    args = build_parser().parse_args(
        ["run", "--agent-enabled=false", "--allow-insecure-control-plane"]
    )
    assert ignored_flags(args) == [
        "--allow-insecure-control-plane ignored: --agent-enabled=false turns the agent off"
    ]


# -- register ----------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_register_refuses_a_plain_http_endpoint_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    argv = ["register", "--token", "t", "--cluster-id", "c", "--control-plane-endpoint", endpoint]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --control-plane-endpoint must be an https:// URL")
    assert "--allow-insecure-control-plane" in err
    # With the flag the rule passes and register goes on to reach the endpoint (nothing listens).
    assert main([*argv, "--allow-insecure-control-plane"]) == 1
    assert "cannot reach the control plane" in capsys.readouterr().err


# -- the Cluster reconciler ------------------------------------------------------------------


class FakeGateway:
    def __init__(self) -> None:
        self.registered: list[str] = []

    def cluster_id(self) -> str | None:
        return self.registered[-1] if self.registered else None

    async def register(self, *, endpoint: str, token: str, cluster_id: str, owner: JsonObj) -> str:
        self.registered.append(endpoint)
        return "issued-id"

    async def rotate(self, *, owner: JsonObj) -> None:
        raise AssertionError("not expected")

    async def heartbeat(self) -> None:
        return None

    def dropped_events(self) -> int:
        return 0

    async def follow(self, *, name: str, namespace: str) -> bool:
        return False

    def suspend(self, reason: str, *, name: str, namespace: str) -> bool:
        return False


def cluster(spec: JsonObj) -> JsonObj:
    return {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "c"},
        "spec": {"registrationToken": "one-time", **spec},
    }


async def reconcile(obj: JsonObj, *, allow_insecure: bool) -> tuple[float, JsonObj, FakeGateway]:
    clock, gateway = FakeClock(), FakeGateway()
    kube = FakeApi(clock=clock)
    kube.add(CLUSTERS, obj)
    informer = Informer(kube, CLUSTERS, clock=clock)
    watching = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 5)
        reconciler = ClusterReconciler(
            client=kube,
            informer=informer,
            gateway=gateway,
            namespace="vworkspace-system",
            clock=clock,
            allow_insecure_endpoint=allow_insecure,
        )
        result = await reconciler.reconcile(ObjectKey(None, "c"))
    finally:
        watching.cancel()
        kube.close()
    stored = kube.stored(CLUSTERS, ObjectKey(None, "c"))
    assert result.requeue_after is not None
    assert stored is not None
    return result.requeue_after, stored, gateway


def condition(obj: JsonObj, type_: str) -> JsonObj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"controlPlaneEndpoint": "http://evil.example.com"}, "spec.controlPlaneEndpoint"),
        ({"controlPlaneBaseUrl": "http://evil.example.com"}, "spec.controlPlaneBaseUrl"),
        ({"controlPlaneEndpoint": "gopher://evil.example.com"}, "spec.controlPlaneEndpoint"),
    ],
)
async def test_a_cluster_with_a_plain_http_endpoint_is_refused_with_a_condition(
    spec: JsonObj, field: str
) -> None:
    retry, stored, gateway = await reconcile(cluster(spec), allow_insecure=False)
    assert gateway.registered == []  # the token never left the cluster
    auth = condition(stored, "Authenticated")
    assert (auth["status"], auth["reason"]) == ("False", "RegistrationFailed")
    assert auth["message"].startswith(f"registration failed: {field} must be an https:// URL")
    assert stored["status"]["phase"] == "Error"
    assert retry >= 30  # retried at the failure cadence, not in a loop


async def test_a_cluster_with_https_or_with_the_flag_http_registers() -> None:
    _, stored, gateway = await reconcile(
        cluster({"controlPlaneEndpoint": "https://cp.example.com"}), allow_insecure=False
    )
    assert gateway.registered == ["https://cp.example.com"]
    assert condition(stored, "Authenticated")["status"] == "True"
    _, _, gateway = await reconcile(
        cluster({"controlPlaneEndpoint": "http://127.0.0.1:8080"}), allow_insecure=True
    )
    assert gateway.registered == ["http://127.0.0.1:8080"]

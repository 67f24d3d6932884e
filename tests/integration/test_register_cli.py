"""`python -m vworkspace register` against a running operator and a strict mock control plane."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ApiError, ControlPlane

from .operator_process import OperatorProcess, wait_until
from .test_install_manifests import get

pytestmark = pytest.mark.integration


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane(strict_registration=True) as server:
        yield server


async def register(plane: ControlPlane, namespace: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vworkspace",
        "register",
        "--namespace",
        namespace,
        "--timeout",
        "30",
        "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig_path)},
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_register_reports_success_a_bad_token_and_an_unreachable_endpoint(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    mock: MockControlPlane,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    operator = OperatorProcess(
        control_plane,
        kube_namespace,
        tmp_path / "operator.log",
        "--agent-enabled",
        "--allow-insecure-control-plane",
    )
    rest = control_plane.rest()
    try:
        await asyncio.to_thread(operator.wait_ready)
        mock.add_registration_token("good-token", "ignored")
        code, out = await register(
            control_plane,
            kube_namespace,
            "--control-plane-endpoint",
            mock.url,
            "--registration-token",
            "good-token",
            "--cluster-id",
            f"{kube_namespace}-ok",
        )
        assert code == 0, out
        assert f"credentials in Secret {kube_namespace}/vworkspace-agent-credentials" in out

        code, out = await register(
            control_plane,
            kube_namespace,
            "--control-plane-endpoint",
            mock.url,
            "--registration-token",
            "wrong",
            "--cluster-id",
            f"{kube_namespace}-bad",
        )
        assert code == 1
        assert "registration failed" in out
        assert "unknown or already used registration token" in out

        code, out = await register(
            control_plane,
            kube_namespace,
            "--control-plane-endpoint",
            "http://127.0.0.1:9",
            "--registration-token",
            "x",
            "--cluster-id",
            f"{kube_namespace}-down",
        )
        assert code == 1
        assert "cannot reach the control plane at http://127.0.0.1:9" in out
    finally:
        clusters = [
            f"/apis/ops.vworkspace.io/v1alpha1/clusters/{kube_namespace}-{suffix}"
            for suffix in ("ok", "bad")
        ]
        for path in clusters:
            with contextlib.suppress(ApiError):
                rest.delete(path)
        try:
            # The operator releases its finalizers before it stops, or the Clusters (not
            # namespaced: no namespace deletion takes them) would stay behind.
            await asyncio.to_thread(
                wait_until,
                "the Clusters deleted",
                lambda: all(get(rest, p) is None for p in clusters),
            )
        finally:
            operator.stop()

"""`python -m vworkspace testenv start --with kwok`: simulated Nodes by hand, ready when the
kubeconfig is printed, every process gone after SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_testenv_process import (
    child_pids,
    env_for,
    read_until_ready,
    wait_dead,
)
from vworkspace.testing import ControlPlane
from vworkspace.testing.kwok import KwokNodes, node_schedulable
from vworkspace.testing.rest import RestClient


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the child processes")
def test_testenv_start_with_kwok_has_ready_nodes_and_stops_everything(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, tmp_path: Path
) -> None:
    # kwok_nodes: the session's assets are known to hold the scheduler and kwok (built if not).
    kubeconfig = tmp_path / "kubeconfig"
    argv = [sys.executable, "-m", "vworkspace", "testenv", "start", "--with", "kwok"]
    proc = subprocess.Popen(
        [*argv, "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(control_plane),
    )
    try:
        text = read_until_ready(proc)
        assert "kube-scheduler + kube-controller-manager-workloads: running" in text, text
        assert "kwok: 3 Nodes Ready in" in text, text
        children = child_pids(proc.pid)
        # etcd, kube-apiserver, kube-controller-manager, its workloads twin, kube-scheduler, kwok
        assert len(children) == 6, children

        rest = RestClient.from_kubeconfig(kubeconfig)
        nodes = rest.get("/api/v1/nodes", labelSelector="testing.vworkspace.io/kwok=true")["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == [f"kwok-node-{i}" for i in range(3)]
        assert all(node_schedulable(n) for n in nodes)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert wait_dead(children, timeout=5) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

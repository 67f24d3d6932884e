"""`python -m vworkspace testenv start` and process hygiene of the control plane.

These start a second control plane in a child Python process, from the same binaries the session
uses, and check that it is reachable with kubectl, stops on SIGTERM with exit code 0, and leaves
no orphan etcd/kube-apiserver/kube-controller-manager behind, even when its parent is SIGKILLed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vworkspace.testing import ControlPlane
from vworkspace.testing.rest import RestClient

pytestmark = pytest.mark.integration


def child_pids(pid: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_dead(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        survivors = {p for p in pids if alive(p)}
        if not survivors:
            return set()
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


def read_until_ready(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """What ``testenv start`` printed up to its "Press Ctrl-C" line (or its exit)."""
    assert proc.stdout is not None
    output = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if "Press Ctrl-C" in line:
            break
    return "".join(output)


def env_for(plane: ControlPlane) -> dict[str, str]:
    env = dict(os.environ)
    env["VWORKSPACE_TEST_ASSETS"] = str(plane.assets.directory)
    return env


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the child processes")
def test_testenv_start_serves_kubectl_and_stops_on_sigterm(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vworkspace",
            "testenv",
            "start",
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(control_plane),
    )
    try:
        text = read_until_ready(proc)
        assert "control plane ready in" in text, text
        assert f"kubectl --kubeconfig {kubeconfig} get --raw /readyz" in text
        children = child_pids(proc.pid)
        assert len(children) == 3, (
            f"expected etcd, kube-apiserver, kube-controller-manager: {children}"
        )

        kubectl = shutil.which("kubectl")
        if kubectl is not None:
            ready = subprocess.run(
                [kubectl, "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert ready.stdout.strip() == "ok", ready.stderr
        else:  # no kubectl here: the same request with the kubeconfig's server, token and CA
            assert RestClient.from_kubeconfig(kubeconfig).get("/readyz")["text"] == "ok"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        assert wait_dead(children, timeout=5) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="relies on PR_SET_PDEATHSIG and /proc")
def test_children_die_with_a_killed_parent(control_plane: ControlPlane, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from vworkspace.testing import ControlPlane, find_assets
        env = {{"VWORKSPACE_TEST_ASSETS": {str(control_plane.assets.directory)!r}}}
        plane = ControlPlane(assets=find_assets(env),
                             with_controller_manager={control_plane.with_controller_manager!r})
        plane.start()
        print("READY", flush=True)
        time.sleep(600)  # kept: the parent idles until the test SIGKILLs it (never wakes)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        children = child_pids(proc.pid)
        assert len(children) >= 2
        proc.kill()  # SIGKILL: no Python cleanup runs at all
        proc.wait()
        assert wait_dead(children, timeout=15) == set(), "orphaned control-plane processes"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

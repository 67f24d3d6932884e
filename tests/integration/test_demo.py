"""`python -m vworkspace demo` and scripts/dev-pull-loop.sh, run as a user runs them.

The demo starts its own Kubernetes control plane, mock control plane and operator; these tests
check the printed steps, the exit codes and that nothing it started is left running (every
process it starts has the work dir in its command line: etcd's data dir, the apiserver's
certificates, the kubeconfig of kube-controller-manager, the operator and register).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vworkspace.testing import ControlPlane

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find leftover processes"),
]

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "vworkspace", "demo"]
# What a user must see, in this order.
MILESTONES = (
    "API server https://127.0.0.1:",
    "CRDs Established",
    "operator ready (pid ",
    "registered: cluster id demo-cluster-1",
    "job demo-apply-1 acked",
    "ApplicationInstance demo/odoo-helm created",
    "HelmRelease demo/odoo-helm created",
    "will not become Ready",
    "job result: succeeded",
    "condition events delivered",
    "demo complete:",
)


def env_for(plane: ControlPlane) -> dict[str, str]:
    # The binaries the session uses; the Flux/Velero CRDs as the third_party_crds fixture found them.
    return {**os.environ, "VWORKSPACE_TEST_ASSETS": str(plane.assets.directory)}


def processes_mentioning(text: str) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline[:120]
    return found


def leftovers(workdir: Path, timeout: float = 5.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (found := processes_mentioning(str(workdir))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def assert_steps_in_order(out: str) -> None:
    numbered = [f"{n:>2}/12 " for n in range(1, 13)]
    positions = [out.find(text) for text in (*numbered, *MILESTONES)]
    assert -1 not in positions, out
    assert positions[:12] == sorted(positions[:12]), out
    assert positions[12:] == sorted(positions[12:]), out


def test_demo_exit_runs_every_step_and_leaves_nothing_running(
    control_plane: ControlPlane, third_party_crds: list[str], tmp_path: Path
) -> None:
    workdir = tmp_path / "demo"
    started = time.monotonic()
    proc = subprocess.run(
        [*DEMO, "--exit", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env_for(control_plane),
    )
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert_steps_in_order(out)
    kubeconfig = workdir / "kubeconfig"
    assert f"kubectl --kubeconfig {kubeconfig} get applicationinstances,helmreleases -A" in out
    assert "X-Mock-Control-Plane-Admin-Token" in out
    assert f"operator log:        {workdir / 'operator.log'}" in out
    assert '"msg": "job done"' in (workdir / "operator.log").read_text()
    assert "--exit: stopping" in out
    assert leftovers(workdir) == {}, out
    match = re.search(r"operator ready \(pid (\d+)", out)
    assert match is not None
    assert not Path(f"/proc/{match.group(1)}").exists()  # the operator was stopped and reaped
    assert not (workdir / "kubernetes" / "etcd").exists()  # the bulky part is removed
    print(f"demo --exit took {elapsed:.1f}s")


def test_demo_keeps_running_until_sigterm_then_stops_everything(
    control_plane: ControlPlane, third_party_crds: list[str], tmp_path: Path
) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [*DEMO, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env_for(control_plane),
    )
    watchdog = threading.Timer(180, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C to stop" in line:
                break
        out = "".join(lines)
        assert "press Ctrl-C to stop" in out, out
        assert_steps_in_order(out)
        assert processes_mentioning(str(workdir)), "nothing running while the demo waits"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, out + rest
        assert "stopped the operator" in rest
        assert "stopped the Kubernetes control plane" in rest
        assert leftovers(workdir) == {}, out + rest
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_fails_at_once_naming_where_it_looked_for_the_third_party_crds(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    missing = tmp_path / "no-crds-here"
    proc = subprocess.run(
        [*DEMO, "--exit", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env_for(control_plane), "VWORKSPACE_THIRD_PARTY_CRDS": str(missing)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (
        f"FAILED step 1/12 (find the Kubernetes binaries, the CRDs and the sample application): the Flux/Velero/Argo CRDs are not at {missing} ($VWORKSPACE_THIRD_PARTY_CRDS names it"
        in out
    )
    assert "demo failed at step 1/12" in out
    assert " 2/12 " not in out  # nothing was started
    assert leftovers(tmp_path / "demo") == {}


def test_help_of_the_script_and_the_command() -> None:
    script = subprocess.run(
        ["bash", str(REPO / "scripts" / "dev-pull-loop.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,  # installs into .venv first when pyproject.toml changed
    )
    assert script.returncode == 0, script.stdout + script.stderr
    assert "usage: python -m vworkspace demo" in script.stdout
    assert "--exit" in script.stdout
    assert "--workdir DIR" in script.stdout
    assert "--timeout SECONDS" in script.stdout
    top = subprocess.run(
        [sys.executable, "-m", "vworkspace", "--help"], capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 0
    assert "demo" in top.stdout

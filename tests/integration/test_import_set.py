"""`python -m vworkspace run` loads none of the development or test code, and not
kubernetes-asyncio (its package imports the whole generated client, ~63 MiB; the operator loads
its kubeconfig itself: kube/rest/kubeconfig.py).

The development commands (vworkspace.devtools) drive the local test control plane
(vworkspace.testing) and the mock control plane (vworkspace.mockcontrolplane); the operator must
not carry them. import-linter checks the static import graph (pyproject.toml); this checks what a
running operator had actually imported, lazy imports included, when it stopped: the process runs
``python -m vworkspace run`` through a two-line wrapper that prints ``sys.modules`` at exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.operator_process import free_port, wait_until
from vworkspace.testing import ControlPlane

pytestmark = pytest.mark.integration

DEV_AND_TEST = ("vworkspace.testing", "vworkspace.mockcontrolplane", "vworkspace.devtools")
# Loaded only for a kubeconfig user with an auth-provider (kube/rest/authprovider.py).
HEAVY = ("kubernetes_asyncio", "vworkspace.kube.rest.authprovider")
MARK = "== sys.modules at exit =="
# `python -c WRAPPER run ...`: runs vworkspace's __main__ as `python -m` would, then, however it
# ends, prints every module loaded.
WRAPPER = f"""
import runpy, sys
try:
    runpy.run_module("vworkspace", run_name="__main__", alter_sys=True)
finally:
    print({MARK!r}, *sorted(sys.modules), sep="\\n", file=sys.stderr, flush=True)
"""


def modules_at_exit(output: str) -> set[str]:
    assert MARK in output, output[-3000:]
    return set(output.split(MARK, 1)[1].split())


def test_the_running_operator_imports_no_development_or_test_module(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    probes = free_port()
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig_path),
        "POD_NAMESPACE": kube_namespace,
    }
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRAPPER,
                "run",
                "--health-probe-bind-address",
                f"127.0.0.1:{probes}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            import urllib.request

            def ready() -> bool:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{probes}/readyz", timeout=2
                    ) as r:
                        return bool(r.status == 200)
                except OSError:
                    return False

            wait_until("operator ready", ready, timeout=60)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    modules = modules_at_exit(log.read_text(errors="replace"))
    # The list is the operator's: its controllers and informers were loaded.
    assert {
        "vworkspace.app.run_cmd",
        "vworkspace.controllers.applicationinstance",
        "vworkspace.controllers.operation",
        "vworkspace.kube.cache.informer",
    } <= modules, sorted(m for m in modules if m.startswith("vworkspace"))
    assert sorted(m for m in modules if m.startswith(DEV_AND_TEST)) == []
    assert sorted(m for m in modules if m.startswith(HEAVY)) == []


def test_run_help_loads_no_development_or_test_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = modules_at_exit(done.stderr)
    assert "vworkspace.app.run_cmd" in modules
    assert sorted(m for m in modules if m.startswith(DEV_AND_TEST)) == []
    # And the wrapper does see a development command when one runs.
    demo = subprocess.run(
        [sys.executable, "-c", WRAPPER, "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "vworkspace.devtools.demo_cmd" in modules_at_exit(demo.stderr)

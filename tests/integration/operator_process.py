"""Run `python -m vworkspace run` as a separate process against the test control plane.

By default the process uses the admin kubeconfig. Given a
:class:`~vworkspace.testing.identity.ShippedIdentity` it runs as the operator's ServiceAccount
with only the shipped RBAC: through a token-only kubeconfig, or (``in_cluster=True``) through the
in-cluster loader, as in a Pod. Then :meth:`OperatorProcess.stop` fails on any 403 the operator
received (its ``rest_client_requests_total{code="403"}`` and the refusals in its log), so a test
cannot pass with a rule missing from manifests/rbac.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from vworkspace.testing import ControlPlane
from vworkspace.testing.identity import ShippedIdentity, forbidden_requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environ(
    plane: ControlPlane,
    namespace: str,
    *,
    identity: ShippedIdentity | None,
    in_cluster: bool,
    directory: Path,
) -> dict[str, str]:
    """The admin kubeconfig; or the shipped identity's kubeconfig; or its in-cluster files (and
    no KUBECONFIG at all: a kubeconfig would win over the in-cluster path)."""
    base = {**os.environ, "POD_NAMESPACE": namespace}
    if identity is None:
        return {**base, "KUBECONFIG": str(plane.kubeconfig_path)}
    if in_cluster:
        base.pop("KUBECONFIG", None)
        return {**base, **identity.in_cluster_environ(directory)}
    return {**base, **identity.kubeconfig_environ(directory)}


class OperatorProcess:
    def __init__(
        self,
        plane: ControlPlane,
        namespace: str,
        log: Path,
        *args: str,
        identity: ShippedIdentity | None = None,
        in_cluster: bool = False,
    ) -> None:
        self.probes = free_port()
        self.metrics = free_port()
        self.log_path = log
        self.plane = plane
        self.identity = identity
        # What stop() found: every 403 the operator received (with an identity only).
        self.forbidden: list[str] = []
        if in_cluster and identity is None:
            raise ValueError("in_cluster needs an identity (its service-account files)")
        env = _environ(
            plane, namespace, identity=identity, in_cluster=in_cluster, directory=log.parent
        )
        self.env = env
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vworkspace",
                "run",
                "--health-probe-bind-address",
                f"127.0.0.1:{self.probes}",
                "--metrics-bind-address",
                f"127.0.0.1:{self.metrics}",
                # Plain HTTP so tests can scrape without a token; a later --metrics-secure in
                # ``args`` wins (tests/integration/test_metrics_auth.py).
                "--metrics-secure=false",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError as err:
            return 0, str(err)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{self.output()}"
                )
            if self.get(self.probes, "/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"operator not ready after {timeout}s:\n{self.output()}")

    def metric(self, metric_name: str, /, **labels: str) -> float | None:
        status, text = self.get(self.metrics, "/metrics")
        if status != 200:
            return None
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        prefix = f"{metric_name}{{{selector}}} " if labels else f"{metric_name} "
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metrics_text(self) -> str | None:
        """The /metrics page: plain HTTP (this class's default), else HTTPS with the admin
        token (a test that passed --metrics-secure); None if neither answers 200."""
        status, text = self.get(self.metrics, "/metrics")
        if status == 200:
            return text
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the operator's self-signed serving certificate
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.metrics}/metrics",
            headers={"Authorization": f"Bearer {self.plane.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as resp:
                return str(resp.read().decode())
        except OSError:
            return None

    def forbidden_so_far(self) -> list[str]:
        """Every 403 the operator received until now: its ``rest_client_requests_total`` (while
        it runs) and the refusals its log names."""
        text = self.metrics_text() if self.proc.poll() is None else None
        found = forbidden_requests(metrics_text=text, log_text=self.output())
        if text is None and self.proc.poll() is None:
            found.append("the metrics were unreadable: 403 counts unknown")
        return found

    def stop(self) -> None:
        """Kill the process; with a shipped identity, first collect its 403s and then fail
        (AssertionError) if there was any."""
        if self.identity is not None:
            # A process that already exited (killed by a chaos scenario) leaves its log.
            self.forbidden = self.forbidden_so_far()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        if self.forbidden:
            listed = "\n  ".join(self.forbidden)
            raise AssertionError(
                f"the operator ({self.identity and self.identity.user}) got 403 Forbidden from "
                f"the API server; the shipped RBAC (manifests/rbac, and the chart rendered from "
                f"it) lacks a rule:\n  {listed}\nlog: {self.log_path}"
            )


def wait_until(what: str, check: object, timeout: float = 30, interval: float = 0.1) -> float:
    """Poll ``check()`` until truthy; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class MockProcess:
    """`python -m vworkspace mock-control-plane` on a free port, its output in ``log``."""

    def __init__(self, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vworkspace",
                "mock-control-plane",
                "--addr",
                f"127.0.0.1:{self.port}",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 20) -> None:
        wait_until("mock control plane healthy", self.healthy, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

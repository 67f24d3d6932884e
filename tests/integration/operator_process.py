"""Run `python -m vworkspace run` as a separate process against the test control plane."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from vworkspace.testing import ControlPlane


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    def __init__(self, plane: ControlPlane, namespace: str, log: Path, *args: str) -> None:
        self.probes = free_port()
        self.metrics = free_port()
        self.log_path = log
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig_path), "POD_NAMESPACE": namespace}
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


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

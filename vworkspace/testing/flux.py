"""Flux's source-controller and helm-controller, the real ones, against a local control plane.

Built by ``scripts/build-flux-controllers.sh`` into the same cache as kube-apiserver
(source-controller v1.9.1, helm-controller v1.4.5: the script says why not 1.6.3). Each runs as
a :class:`~vworkspace.testing.processes.ManagedProcess` with:

* the cluster from ``KUBECONFIG`` (the admin kubeconfig: they have no ``--kubeconfig`` flag) and
  ``RUNTIME_NAMESPACE=flux-system``; ``HOME`` points into the data directory so helm's caches
  stay out of the user's home;
* ``--enable-leader-election=false`` and their own ``--metrics-addr``/``--health-addr`` on free
  127.0.0.1 ports (several sessions share a machine);
* source-controller's artifact storage in the data directory, served on a free 127.0.0.1 port
  (``--storage-addr``) and advertised as the same address (``--storage-adv-addr``), which is
  where helm-controller downloads the packaged chart from.

Start needs the Flux CRDs Established first; source-controller refuses to start without all six
of its own (``scripts/testenv/third-party-crds.txt`` pins them). :func:`start_flux` installs
them; the pytest fixture ``flux`` gets them through ``third_party_crds``. "Ready" is each
controller's ``/readyz`` answering 200, which controller-runtime does once its caches synced.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from vworkspace.testing.assets import ensure_built, find_built
from vworkspace.testing.controlplane import ControlPlane, free_port
from vworkspace.testing.crds import (
    FIELD_MANAGER,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.processes import ManagedProcess, StartStop

SOURCE_CONTROLLER = "source-controller"
HELM_CONTROLLER = "helm-controller"
# What scripts/build-flux-controllers.sh pins; the stamps in the cache hold these.
VERSIONS = {SOURCE_CONTROLLER: "v1.9.1", HELM_CONTROLLER: "v1.4.5"}
RUNTIME_NAMESPACE = "flux-system"
FLUX_GROUP_SUFFIX = ".toolkit.fluxcd.io"
BUILD_SCRIPT = "build-flux-controllers.sh"


class FluxError(RuntimeError):
    """A controller is missing or did not become ready; the message carries its log tail."""


def find_controllers(env: Mapping[str, str], *, beside: Path | None = None) -> dict[str, Path]:
    """The two binaries, beside the control plane's or in the cache (:func:`find_built`)."""
    return find_built(list(VERSIONS), env, beside=beside, script=BUILD_SCRIPT, error=FluxError)


def ensure_controllers(env: Mapping[str, str], *, beside: Path | None = None) -> dict[str, Path]:
    """:func:`find_controllers`, built first when missing in a checkout with Go."""
    return ensure_built(list(VERSIONS), env, beside=beside, script=BUILD_SCRIPT, error=FluxError)


def install_flux_crds(plane: ControlPlane, env: Mapping[str, str]) -> list[str]:
    """Install (and wait for) the Flux CRDs from the third-party CRD cache; returns their names."""
    crds = [
        crd
        for crd in load_crds([ensure_third_party_crds(env)])
        if str(crd.get("spec", {}).get("group", "")).endswith(FLUX_GROUP_SUFFIX)
    ]
    return install_crds(plane.rest(), crds)


class Flux(StartStop):
    """source-controller + helm-controller for one control plane.

    Use it as a context manager, or :meth:`start` and :meth:`stop` (safe twice). The Flux CRDs
    must be Established before :meth:`start`.
    """

    def __init__(
        self,
        *,
        plane: ControlPlane,
        binaries: Mapping[str, Path],
        data_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.plane = plane
        self.binaries = dict(binaries)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vworkspace-flux-"))
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self.storage_addr = ""
        self._health: dict[str, str] = {}
        self._processes: list[ManagedProcess] = []

    def _process(self, name: str, extra: list[str], env: Mapping[str, str]) -> ManagedProcess:
        metrics, health = free_port(), free_port()
        self._health[name] = f"http://127.0.0.1:{health}/readyz"
        return ManagedProcess(
            name=name,
            argv=[
                str(self.binaries[name]),
                "--enable-leader-election=false",
                f"--metrics-addr=127.0.0.1:{metrics}",
                f"--health-addr=127.0.0.1:{health}",
                "--log-level=info",
                *extra,
            ],
            log_path=self.data_dir / "logs" / f"{name}.log",
            env=env,
        )

    def start(self) -> None:
        started = time.monotonic()
        # Their own namespace, as in a cluster (events about themselves go there).
        self.plane.rest().apply(
            f"/api/v1/namespaces/{RUNTIME_NAMESPACE}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUNTIME_NAMESPACE}},
            field_manager=FIELD_MANAGER,
        )
        self.storage_addr = f"127.0.0.1:{free_port()}"
        storage = self.data_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "KUBECONFIG": str(self.plane.kubeconfig_path),
            "RUNTIME_NAMESPACE": RUNTIME_NAMESPACE,
            "HOME": str(home),
        }
        self._processes = [
            self._process(
                SOURCE_CONTROLLER,
                [
                    f"--storage-path={storage}",
                    f"--storage-addr={self.storage_addr}",
                    f"--storage-adv-addr={self.storage_addr}",
                ],
                env,
            ),
            self._process(HELM_CONTROLLER, [], env),
        ]
        try:
            for proc in self._processes:
                proc.start()
            for proc in self._processes:
                self._wait_ready(proc)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, proc: ManagedProcess) -> None:
        url = self._health[proc.name]
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = proc.exit_code()
            if code is not None:
                raise FluxError(
                    f"{proc.name} exited with {code} before it was ready "
                    f"(log {proc.log_path}):\n{proc.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = str(resp.status)
            except urllib.error.HTTPError as err:
                last = str(err.code)
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise FluxError(
            f"{proc.name} not ready at {url} after {self.start_timeout:.0f}s (last: {last}); "
            f"log {proc.log_path}:\n{proc.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`FluxError` if a controller has exited."""
        for proc in self._processes:
            code = proc.exit_code()
            if code is not None:
                raise FluxError(f"{proc.name} exited with {code}:\n{proc.log_tail()}")

    def log_tails(self, lines: int = 30) -> str:
        """Both controllers' last log lines, for a failing test's report."""
        return "\n".join(
            f"--- {p.name} ({p.log_path})\n{p.log_tail(lines)}" for p in self._processes
        )

    def stop(self, *, keep_data_dir: bool = False) -> None:
        for proc in reversed(self._processes):
            proc.stop()
        if self._own_dir and not keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def summary(self) -> str:
        """One line for ``testenv start --with flux``."""
        secs = f"{self.startup_seconds:.1f}s" if self.startup_seconds is not None else "?"
        return (
            f"flux: {SOURCE_CONTROLLER} {VERSIONS[SOURCE_CONTROLLER]} + {HELM_CONTROLLER} "
            f"{VERSIONS[HELM_CONTROLLER]} ready in {secs} (logs in {self.data_dir / 'logs'})"
        )

    def describe(self) -> list[str]:
        """Lines for a terminal: what runs where."""
        logs = self.data_dir / "logs"
        return [
            f"{name} {VERSIONS[name]}: {self.binaries[name]} (log {logs / name}.log)"
            for name in VERSIONS
        ] + [f"source-controller artifacts: http://{self.storage_addr}/"]


def start_flux(
    plane: ControlPlane, env: Mapping[str, str], *, data_dir: Path | None = None
) -> Flux:
    """Install the Flux CRDs, then start both controllers and wait until they are ready.

    For ``testenv start --with flux`` and anything else outside pytest; the caller stops it.
    """
    binaries = ensure_controllers(env, beside=plane.assets.directory)
    install_flux_crds(plane, env)
    flux = Flux(plane=plane, binaries=binaries, data_dir=data_dir)
    flux.start()
    return flux

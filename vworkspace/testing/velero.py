"""The Velero server, the real one, against a local control plane, backing up to SeaweedFS S3.

``velero`` (v1.18.1) and ``velero-plugin-for-aws`` (v1.14.3) are built by
``scripts/build-backup-controllers.sh`` into the same cache as kube-apiserver. :class:`Velero`
runs ``velero server`` as a :class:`~vworkspace.testing.processes.ManagedProcess` outside any
cluster, with:

* ``--kubeconfig`` (the admin kubeconfig) and ``--namespace velero``;
* ``--plugin-dir``: a folder of its own holding a symbolic link to the AWS plugin (Velero runs
  every executable it finds there; its built-in plugins are the ``velero`` binary itself);
* ``--metrics-address`` and ``--profiler-address`` on free 127.0.0.1 ports;
* no node agent and no volume snapshots: no VolumeSnapshotLocation, and Velero's own check for
  the node-agent DaemonSet only logs a warning;
* ``--store-validation-frequency=10s`` (default 1 min), so a location that was found
  unavailable is checked again soon;
* the S3 keys as an AWS shared-credentials file named by ``AWS_SHARED_CREDENTIALS_FILE`` in its
  environment, which Velero passes on to the plugin processes it starts. That is how
  ``velero install`` wires it in a cluster (the ``cloud-credentials`` Secret mounted as a file
  and the same variable), it needs no Secret in the API server, and ``testenv`` can name the
  file. The alternative, the location's ``spec.credential`` Secret reference, makes Velero copy
  the Secret into its credentials folder: one more object and one more copy of the secret.

The BackupStorageLocation ``default`` (provider ``aws``, the bucket, ``region``,
``s3ForcePathStyle: "true"``, ``s3Url`` the SeaweedFS endpoint, ``spec.default: true``) is
applied before the server starts. "Ready" is Velero's metrics endpoint answering (it opens it
when its controllers start) and that location's ``status.phase`` being ``Available`` (Velero
listed the bucket through the plugin).

What ``velero server`` needs outside a cluster and does not get by itself (the namespace, the
CRDs and port 8080 seen by running it; the rest read in its v1.18.1 source):

* its namespace must exist (it checks at start and exits otherwise): applied here;
* every Velero CRD it knows, the eleven of ``velero.io/v1`` and the two of ``v2alpha1``, must be
  served, or it exits naming the missing kinds (``scripts/testenv/third-party-crds.txt`` pins all
  thirteen; :func:`install_velero_crds`);
* the plugin folder (default ``/plugins``): our own, see above;
* ``HOME`` (it reads ``~/.config/velero/config.json``, whose features it adds to its own) and
  ``TMPDIR`` (its credentials folder is ``$TMPDIR/credentials`` and backup tarballs are staged
  there): both point into the data directory, so nothing of the user's is read and nothing is
  left behind in ``/tmp``;
* the Deployment ``velero`` in its namespace, which ``velero install`` makes and the server never
  reads for itself, but its pod restore plugin (PodVolumeRestoreAction,
  pkg/restore/actions/pod_volume_restore_action.go) reads its image from it when restoring any
  Pod: without it every Pod's restore is an error (``deployments.apps "velero" not found``) and the
  Restore ends PartiallyFailed. An idle stand-in (0 replicas, the image of the version run) is
  applied here (:func:`velero_deployment`);
* the CRDs of what it is to back up, installed *before* it starts: it discovers the API's
  resources at start and then only every 5 minutes (pkg/cmd/server/server.go,
  ``initDiscoveryHelper``), so a Velero started before the ApplicationInstance CRD backs up no
  ApplicationInstance for 5 minutes (seen: the tarball held only the Namespace and its Events).
  The same holds in a cluster where vworkspace is installed after Velero;
* no POD_NAME/POD_NAMESPACE-style variables: the server reads none (only the node agent and the
  data movers, which do not run here, read ``NODE_NAME``);
* controller-runtime's own metrics listener, which Velero v1.18.1 leaves at its default,
  ``:8080`` on every interface, with no flag to move it: two Velero servers on one machine
  collide there, and so does anything else holding 8080. So :meth:`Velero.start` first takes a
  machine-wide lock (``flock`` on :data:`LOCK_FILE`; the kernel drops it when the process dies),
  waiting up to ``lock_timeout`` for another session's server to stop, then checks that the
  port is free, and otherwise says why rather than let the server die on a bind error.

The CRDs come through :func:`install_velero_crds` (or the ``third_party_crds`` fixture, which
installs all upstream CRDs).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vworkspace.testing.assets import ensure_built, find_built
from vworkspace.testing.controlplane import ControlPlane, ControlPlaneError, free_port
from vworkspace.testing.crds import (
    FIELD_MANAGER,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.processes import ManagedProcess, StartStop
from vworkspace.testing.rest import ApiError
from vworkspace.testing.s3 import BUILD_SCRIPT, SeaweedS3

VELERO = "velero"
AWS_PLUGIN = "velero-plugin-for-aws"
# What scripts/build-backup-controllers.sh pins; the stamps in the cache hold these.
VERSIONS = {VELERO: "v1.18.1", AWS_PLUGIN: "v1.14.3"}
NAMESPACE = "velero"
LOCATION = "default"
VELERO_GROUP = "velero.io"
API = "/apis/velero.io/v1"
# controller-runtime's metrics listener in velero server: its default, not configurable.
CONTROLLER_RUNTIME_METRICS_PORT = 8080
STORE_VALIDATION_FREQUENCY = "10s"
# Held while a Velero server of ours runs: one per machine (port 8080, see above).
LOCK_FILE = Path(tempfile.gettempdir()) / "vworkspace-velero-server.lock"


class VeleroError(ControlPlaneError):
    """Velero is missing or did not become ready; the message carries its log tail. A
    :class:`ControlPlaneError`, so ``testenv`` reports it as it reports the control plane's."""


def find_binaries(env: Mapping[str, str], *, beside: Path | None = None) -> dict[str, Path]:
    """``velero`` and the AWS plugin, beside the control plane's or in the cache."""
    return find_built(list(VERSIONS), env, beside=beside, script=BUILD_SCRIPT, error=VeleroError)


def ensure_binaries(env: Mapping[str, str], *, beside: Path | None = None) -> dict[str, Path]:
    """:func:`find_binaries`, built first when missing in a checkout with Go."""
    return ensure_built(list(VERSIONS), env, beside=beside, script=BUILD_SCRIPT, error=VeleroError)


def install_velero_crds(plane: ControlPlane, env: Mapping[str, str]) -> list[str]:
    """Install (and wait for) the Velero CRDs from the third-party CRD cache; their names."""
    crds = [
        crd
        for crd in load_crds([ensure_third_party_crds(env)])
        if crd.get("spec", {}).get("group") == VELERO_GROUP
    ]
    return install_crds(plane.rest(), crds)


def backup_storage_location(s3: SeaweedS3, *, name: str = LOCATION) -> dict[str, Any]:
    """The BackupStorageLocation for ``s3``'s bucket: the AWS plugin, path-style, plain HTTP."""
    return {
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "provider": "aws",
            "default": True,
            "objectStorage": {"bucket": s3.bucket},
            "config": {
                "region": s3.region,
                "s3ForcePathStyle": "true",
                "s3Url": s3.endpoint_url,
            },
        },
    }


def velero_deployment() -> dict[str, Any]:
    """The Deployment ``velero`` that ``velero install`` would have made, idle (no replicas): the
    server runs as a process here; only its pod restore plugin reads this, for the image."""
    labels = {"component": "velero", "deploy": "velero"}
    image = f"velero/velero:{VERSIONS[VELERO]}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": VELERO, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": VELERO, "image": image}]},
            },
        },
    }


def _port_taken(port: int) -> bool:
    """Whether something already listens on ``port`` (any interface), as a bind would see it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


class Velero(StartStop):
    """``velero server`` for one control plane and one S3 endpoint.

    Use it as a context manager, or :meth:`start` and :meth:`stop` (safe twice). The Velero
    CRDs must be Established and ``s3`` running before :meth:`start`.
    """

    def __init__(
        self,
        *,
        plane: ControlPlane,
        binaries: Mapping[str, Path],
        s3: SeaweedS3,
        data_dir: Path | None = None,
        start_timeout: float = 90.0,
        lock_timeout: float = 120.0,
    ) -> None:
        self.plane = plane
        self.binaries = dict(binaries)
        self.s3 = s3
        self.namespace = NAMESPACE
        self.location = LOCATION
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vworkspace-velero-"))
        self.start_timeout = start_timeout
        self.lock_timeout = lock_timeout
        self.startup_seconds: float | None = None
        self.lock_wait_seconds = 0.0
        self.metrics_url = ""
        self._process: ManagedProcess | None = None
        self._lock: int | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / f"{VELERO}.log"

    @property
    def plugin_dir(self) -> Path:
        return self.data_dir / "plugins"

    def _prepare_cluster(self) -> None:
        rest = self.plane.rest()
        rest.apply(
            f"/api/v1/namespaces/{self.namespace}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            field_manager=FIELD_MANAGER,
        )
        rest.apply(
            f"{API}/namespaces/{self.namespace}/backupstoragelocations/{self.location}",
            backup_storage_location(self.s3, name=self.location),
            field_manager=FIELD_MANAGER,
        )
        rest.apply(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{VELERO}",
            velero_deployment(),
            field_manager=FIELD_MANAGER,
        )

    def _prepare_plugins(self) -> None:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        link = self.plugin_dir / AWS_PLUGIN
        link.unlink(missing_ok=True)
        link.symlink_to(self.binaries[AWS_PLUGIN])

    def _environment(self) -> dict[str, str]:
        home, tmp = self.data_dir / "home", self.data_dir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.s3.credentials_file),
            # No instance-metadata lookups: there is no EC2 here, and they only add timeouts.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def _take_machine(self) -> None:
        """The machine-wide lock, then port 8080 free; :class:`VeleroError` says who is in
        the way after ``lock_timeout``."""
        # Read-only is enough for flock, and works on a lock file another user created.
        fd = os.open(LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise VeleroError(
                        f"another Velero server of this project runs on this machine (it holds "
                        f"{LOCK_FILE}) and did not stop within {self.lock_timeout:.0f}s; only "
                        f"one can run at a time (port {CONTROLLER_RUNTIME_METRICS_PORT})"
                    ) from None
                time.sleep(0.5)
        self._lock = fd
        if _port_taken(CONTROLLER_RUNTIME_METRICS_PORT):
            raise VeleroError(
                f"port {CONTROLLER_RUNTIME_METRICS_PORT} is taken: velero server v1.18.1 always "
                "opens controller-runtime's metrics listener there (no flag moves it); stop "
                "whatever holds the port"
            )

    def _release_machine(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the last descriptor drops the flock
            self._lock = None

    def _server_process(self) -> ManagedProcess:
        metrics, profiler = free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        return ManagedProcess(
            name=VELERO,
            argv=[
                str(self.binaries[VELERO]),
                "server",
                f"--kubeconfig={self.plane.kubeconfig_path}",
                f"--namespace={self.namespace}",
                f"--plugin-dir={self.plugin_dir}",
                f"--metrics-address=127.0.0.1:{metrics}",
                f"--profiler-address=127.0.0.1:{profiler}",
                f"--store-validation-frequency={STORE_VALIDATION_FREQUENCY}",
                "--log-level=info",
            ],
            log_path=self.log_path,
            env=self._environment(),
        )

    def start(self) -> None:
        """Take the machine (waiting for another session's server, :attr:`lock_wait_seconds`),
        then prepare and start; :attr:`startup_seconds` counts from after the wait."""
        waited = time.monotonic()
        try:
            self._take_machine()
            self.lock_wait_seconds = time.monotonic() - waited
            started = time.monotonic()
            self._prepare_cluster()
            self._prepare_plugins()
            self._process = self._server_process()
            self._process.start()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def location_phase(self) -> str:
        """The BackupStorageLocation's ``status.phase`` ('' before Velero validated it)."""
        try:
            bsl = self.plane.rest().get(
                f"{API}/namespaces/{self.namespace}/backupstoragelocations/{self.location}"
            )
        except ApiError as err:
            if err.status == 404:
                return ""
            raise
        return str((bsl.get("status") or {}).get("phase") or "")

    def _metrics_up(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
                return bool(resp.status == 200)
        except (urllib.error.HTTPError, OSError):
            return False

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        last = "metrics endpoint not answering yet"
        while time.monotonic() < deadline:
            code = self._process.exit_code()
            if code is not None:
                raise VeleroError(
                    f"velero server exited with {code} before it was ready "
                    f"(log {self.log_path}):\n{self._process.log_tail()}"
                )
            if self._metrics_up():
                phase = self.location_phase()
                if phase == "Available":
                    return
                last = f"BackupStorageLocation {self.location} phase {phase or '(none yet)'}"
            time.sleep(0.3)
        raise VeleroError(
            f"velero server not ready after {self.start_timeout:.0f}s ({last}); "
            f"log {self.log_path}:\n{self._process.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`VeleroError` if the server has exited."""
        if self._process is None:
            return
        code = self._process.exit_code()
        if code is not None:
            raise VeleroError(f"velero server exited with {code}:\n{self._process.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The server's last log lines, for a failing test's report."""
        return "" if self._process is None else self._process.log_tail(lines)

    def stop(self, *, keep_data_dir: bool = False) -> None:
        if self._process is not None:
            self._process.stop()
        self._release_machine()
        if self._own_dir and not keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def summary(self) -> str:
        """One line for ``testenv start --with velero``."""
        secs = f"{self.startup_seconds:.1f}s" if self.startup_seconds is not None else "?"
        if self.lock_wait_seconds >= 1:
            secs += f" (after waiting {self.lock_wait_seconds:.0f}s for another Velero server)"
        return (
            f"velero: server {VERSIONS[VELERO]} + {AWS_PLUGIN} {VERSIONS[AWS_PLUGIN]} ready in "
            f"{secs}, namespace {self.namespace}, BackupStorageLocation {self.location} "
            f"Available (bucket {self.s3.bucket}; log {self.log_path})"
        )


def start_velero(
    plane: ControlPlane, env: Mapping[str, str], s3: SeaweedS3, *, data_dir: Path | None = None
) -> Velero:
    """Install the Velero CRDs, then start the server against ``s3`` and wait until it is ready.

    For ``testenv start --with velero`` and anything else outside pytest; the caller stops it.
    """
    binaries = ensure_binaries(env, beside=plane.assets.directory)
    install_velero_crds(plane, env)
    velero = Velero(plane=plane, binaries=binaries, s3=s3, data_dir=data_dir)
    velero.start()
    return velero

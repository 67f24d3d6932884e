"""Start and stop etcd + kube-apiserver (+ kube-controller-manager) on loopback.

The trade-offs, in short:

* Real binaries, not an imitation: what passes here passes against a real API server.
* Authentication is a static bearer token (``--token-auth-file``) for the ``admin`` user in
  ``system:masters``: the simplest thing every client, kubectl included, understands.
  Authorization is RBAC, so the operator's own RBAC can be exercised by impersonation.
* kube-controller-manager runs only the garbage-collector and namespace controllers: enough for
  owner-reference cascades and namespace deletion, nothing that would schedule workloads. Its
  garbage collector re-reads discovery every 30 s, so objects of a CRD installed after it started
  can take that long to be collected.
* On request (``with_scheduler``/``with_workload_controllers``, or
  :meth:`ControlPlane.start_scheduler` and :meth:`ControlPlane.start_workload_controllers` on a
  running plane) kube-scheduler and a
  second kube-controller-manager running the workload controllers (Deployment, ReplicaSet,
  StatefulSet, DaemonSet, Job, CronJob) join: with kwok's simulated Nodes
  (:mod:`vworkspace.testing.kwok`) Pods get placed and workloads report real status. Off by
  default: the other tiers write those statuses themselves and must not race a controller. Both
  serve /healthz on their own loopback port with the control plane's serving certificate and
  are ready-checked there; leader election is off.
* ``podtemplates`` are served without the apiserver's watch cache (``--watch-cache-sizes``), so
  a watch on them goes straight to etcd and a compacted resourceVersion yields 410 Gone at once.
  Every other resource keeps the watch cache, exactly as in a real cluster.
* Ports are picked free just before start; if a port was taken meanwhile the start is retried
  with new ports (as controller-runtime's envtest does).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

import yaml

from vworkspace.testing.assets import Assets
from vworkspace.testing.pki import ControlPlanePki, write_pki
from vworkspace.testing.processes import ManagedProcess, StartStop
from vworkspace.testing.rest import ApiError, RestClient

ADMIN_USER = "admin"
KUBECONFIG_NAME = "vworkspace-testenv"
# The one resource served without the watch cache; see the module docstring.
UNCACHED_RESOURCE = "podtemplates"
SCHEDULER = "kube-scheduler"
WORKLOAD_CONTROLLER_MANAGER = "kube-controller-manager-workloads"
# What Deployments, Jobs and Helm charts' usual workloads need to report real status.
WORKLOAD_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
)

_START_ATTEMPTS = 3
_live: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message carries the failing process's log tail."""


def _require(path: Path | None, name: str, assets: Assets) -> Path:
    if path is None:
        raise ControlPlaneError(
            f"{name} is not in {assets.directory} ({assets.source}); "
            "build it with scripts/build-test-assets.sh"
        )
    return path


def free_port() -> int:
    """A loopback TCP port free right now (it may be taken before it is bound: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ControlPlane(StartStop):
    """A running etcd + kube-apiserver (+ kube-controller-manager).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`stop` is safe to
    call twice and runs at interpreter exit for any control plane still up.
    """

    def __init__(
        self,
        *,
        assets: Assets,
        data_dir: Path | None = None,
        keep_data_dir: bool = False,
        start_timeout: float = 90.0,
        with_controller_manager: bool = True,
        with_scheduler: bool = False,
        with_workload_controllers: bool = False,
        extra_apiserver_args: tuple[str, ...] = (),
    ) -> None:
        if with_controller_manager and assets.kube_controller_manager is None:
            raise ControlPlaneError(
                f"kube-controller-manager is not in {assets.directory} ({assets.source}); "
                "pass with_controller_manager=False to run without garbage collection"
            )
        if with_scheduler:
            _require(assets.kube_scheduler, SCHEDULER, assets)
        if with_workload_controllers:
            _require(assets.kube_controller_manager, "kube-controller-manager", assets)
        self.assets = assets
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vworkspace-testenv-"))
        self.keep_data_dir = keep_data_dir
        self.start_timeout = start_timeout
        self.with_controller_manager = with_controller_manager
        self.with_scheduler = with_scheduler
        self.with_workload_controllers = with_workload_controllers
        self.extra_apiserver_args = extra_apiserver_args
        self.token = secrets.token_urlsafe(24)
        self.apiserver_port = 0
        self.etcd_port = 0
        self.startup_seconds: float | None = None
        self.apiserver_restarts = 0
        self._processes: list[ManagedProcess] = []
        self._pki: ControlPlanePki | None = None
        self._lock = threading.Lock()

    # -- addresses -------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def ca_path(self) -> Path:
        if self._pki is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._pki.ca_cert

    def rest(self, timeout: float = 30.0) -> RestClient:
        """A small synchronous client with admin rights (for fixtures and helpers)."""
        return RestClient(
            server=self.server, token=self.token, ca_file=str(self.ca_path), timeout=timeout
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self._pki = write_pki(self.data_dir / "pki")
        (self.data_dir / "tokens.csv").write_text(
            f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        (self.data_dir / "tokens.csv").chmod(0o600)
        _live.add(self)
        last_error: ControlPlaneError | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once(attempt)
            except ControlPlaneError as err:
                last_error = err
                self._stop_processes()
                if "address already in use" not in str(err):
                    break
                continue
            self.startup_seconds = time.monotonic() - started
            return
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        with self._lock:
            self._stop_processes()
            _live.discard(self)
            if self._own_dir and not self.keep_data_dir and self.data_dir.exists():
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` if any process of the control plane has exited."""
        for proc in self._processes:
            code = proc.exit_code()
            if code is not None:
                raise ControlPlaneError(f"{proc.name} exited with {code}:\n{proc.log_tail()}")

    def _stop_processes(self) -> None:
        # Reverse start order: the controller-manager and apiserver first, etcd last.
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()

    def _start_once(self, attempt: int) -> None:
        self.etcd_port = free_port()
        peer_port = free_port()
        self.apiserver_port = free_port()
        logs = self.data_dir / "logs"
        etcd_dir = self.data_dir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)

        etcd = ManagedProcess(
            name="etcd",
            argv=[
                str(self.assets.etcd),
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                # Kubernetes expects progress notifications every 5 s (etcd's default is 10 min).
                "--watch-progress-notify-interval=5s",
                "--logger=zap",
                "--log-level=warn",
            ],
            log_path=logs / f"etcd.{attempt}.log",
        )
        self._processes.append(etcd)
        etcd.start()
        self._wait_http(etcd, f"{self.etcd_url}/health", expect=b'"health":"true"', timeout=30)

        apiserver = ManagedProcess(
            name="kube-apiserver",
            argv=[str(self.assets.kube_apiserver), *self._apiserver_args()],
            log_path=logs / f"kube-apiserver.{attempt}.log",
        )
        self._processes.append(apiserver)
        apiserver.start()
        self._wait_http(
            apiserver, f"{self.server}/readyz", expect=b"ok", timeout=self.start_timeout
        )
        self._write_kubeconfig()
        rest = self.rest()
        rest.wait_for(
            "namespace default",
            lambda: rest.exists("/api/v1/namespaces/default"),
            timeout=30,
        )

        if self.with_controller_manager:
            assert self.assets.kube_controller_manager is not None
            kcm = ManagedProcess(
                name="kube-controller-manager",
                argv=[
                    str(self.assets.kube_controller_manager),
                    f"--kubeconfig={self.kubeconfig_path}",
                    "--controllers=garbage-collector-controller,namespace-controller",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--use-service-account-credentials=false",
                    "--concurrent-gc-syncs=5",
                    "--v=1",
                ],
                log_path=logs / f"kube-controller-manager.{attempt}.log",
            )
            self._processes.append(kcm)
            kcm.start()
            # It has no serving port (--secure-port=0); give it a moment and make sure it lives.
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if not kcm.running():
                    raise ControlPlaneError(
                        f"kube-controller-manager exited with {kcm.exit_code()}:\n{kcm.log_tail()}"
                    )
                time.sleep(0.1)
        if self.with_workload_controllers:
            self._start_component(WORKLOAD_CONTROLLER_MANAGER, attempt)
        if self.with_scheduler:
            self._start_component(SCHEDULER, attempt)

    # -- optional components: kube-scheduler, workload controllers -------------------------

    def running(self, name: str) -> bool:
        """Whether the process called ``name`` (e.g. ``kube-scheduler``) is running."""
        return any(p.name == name and p.running() for p in self._processes)

    def start_scheduler(self) -> None:
        """Start kube-scheduler on this running control plane (a no-op if it runs)."""
        self._start_late(SCHEDULER)

    def start_workload_controllers(self) -> None:
        """Start the workload controllers (:data:`WORKLOAD_CONTROLLERS`) in a second
        kube-controller-manager on this running control plane (a no-op if they run)."""
        self._start_late(WORKLOAD_CONTROLLER_MANAGER)

    def _start_late(self, name: str) -> None:
        with self._lock:
            if self._pki is None or not self.running("kube-apiserver"):
                raise ControlPlaneError(f"start the control plane before {name}")
            if self.running(name):
                return
            # A free port can be taken between the pick and the bind: retry, as start() does.
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    self._start_component(name, attempt)
                    return
                except ControlPlaneError as err:
                    if "address already in use" not in str(err) or attempt == _START_ATTEMPTS:
                        raise

    def _start_component(self, name: str, attempt: int) -> None:
        assert self._pki is not None
        port = free_port()
        if name == SCHEDULER:
            binary = _require(self.assets.kube_scheduler, SCHEDULER, self.assets)
            specific = ["--v=1"]
        else:
            binary = _require(
                self.assets.kube_controller_manager, "kube-controller-manager", self.assets
            )
            specific = [
                f"--controllers={','.join(WORKLOAD_CONTROLLERS)}",
                "--use-service-account-credentials=false",
                "--v=1",
            ]
        kubeconfig = str(self.kubeconfig_path)
        proc = ManagedProcess(
            name=name,
            argv=[
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={self._pki.serving_cert}",
                f"--tls-private-key-file={self._pki.serving_key}",
                *specific,
            ],
            log_path=self.data_dir / "logs" / f"{name}.{attempt}.log",
        )
        proc.start()
        try:
            self._wait_http(
                proc, f"https://127.0.0.1:{port}/healthz", expect=b"ok", timeout=self.start_timeout
            )
        except ControlPlaneError:
            proc.stop()
            raise
        self._processes.append(proc)

    def _apiserver_args(self) -> list[str]:
        assert self._pki is not None
        pki = self._pki
        return [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            # Without it the apiserver looks for a default route and dies on hosts without one.
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.data_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={self.data_dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_public}",
            f"--service-account-signing-key-file={pki.service_account_private}",
            # No controller creates `default` ServiceAccounts here (as in envtest).
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type=none",
            f"--watch-cache-sizes={UNCACHED_RESOURCE}#0",
            *self.extra_apiserver_args,
        ]

    def _wait_http(self, proc: ManagedProcess, url: str, *, expect: bytes, timeout: float) -> None:
        context = (
            ssl.create_default_context(cafile=str(self.ca_path))
            if url.startswith("https")
            else None
        )
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = proc.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with {code} before it was ready "
                    f"(log {proc.log_path}):\n{proc.log_tail()}"
                )
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, timeout=5, context=context) as resp:
                    body = resp.read()
                    if resp.status == 200 and expect in body:
                        return
                    last = f"{resp.status} {body[:200]!r}"
            except urllib.error.HTTPError as err:
                last = f"{err.code} {err.read()[:300]!r}"
            except (OSError, urllib.error.URLError) as err:
                last = str(err)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{proc.name} not ready at {url} after {timeout:.0f}s (last: {last}); "
            f"log {proc.log_path}:\n{proc.log_tail()}"
        )

    def _write_kubeconfig(self) -> None:
        self.kubeconfig_path.write_text(self.kubeconfig_yaml())
        self.kubeconfig_path.chmod(0o600)

    def kubeconfig_yaml(self, server: str | None = None) -> str:
        """A self-contained admin kubeconfig (CA embedded, bearer token). ``server`` overrides
        the address, e.g. to go through a :class:`~vworkspace.testing.proxy.TcpProxy`."""
        ca = base64.b64encode(self.ca_path.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": KUBECONFIG_NAME,
                    "cluster": {"server": server or self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": KUBECONFIG_NAME,
                    "context": {"cluster": KUBECONFIG_NAME, "user": ADMIN_USER},
                }
            ],
            "current-context": KUBECONFIG_NAME,
        }
        return yaml.safe_dump(config, sort_keys=False)

    def restart_apiserver(self, *, down_for: float = 0.0) -> float:
        """Stop kube-apiserver and start a new one on the same port over the same etcd.

        Clients keep their address and token; every watch breaks and the new apiserver's watch
        cache starts empty, as after a control-plane upgrade. ``down_for`` keeps it down that
        long (a test's outage). Returns the seconds until it was ready again.
        """
        with self._lock:
            old = next((p for p in self._processes if p.name == "kube-apiserver"), None)
            if old is None:
                raise ControlPlaneError("kube-apiserver is not running")
            started = time.monotonic()
            old.stop()
            if down_for > 0:
                time.sleep(down_for)
            self.apiserver_restarts += 1
            new = ManagedProcess(
                name="kube-apiserver",
                argv=old.argv,
                log_path=old.log_path.with_suffix(f".restart{self.apiserver_restarts}.log"),
            )
            self._processes[self._processes.index(old)] = new
            new.start()
            self._wait_http(new, f"{self.server}/readyz", expect=b"ok", timeout=self.start_timeout)
            return time.monotonic() - started

    # -- etcd ------------------------------------------------------------------------------

    def _etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def etcd_revision(self) -> int:
        """etcd's current revision (what Kubernetes calls the latest resourceVersion)."""
        header = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]
        return int(header["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision, as the apiserver does every 5 minutes.

        Returns the revision compacted to. Watches from an older resourceVersion that are not
        served from the apiserver's watch cache then fail with 410 Gone.
        """
        revision = self.etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision


@atexit.register
def _stop_all() -> None:
    for plane in list(_live):
        with contextlib.suppress(Exception):
            plane.stop()


__all__ = ["ApiError", "ControlPlane", "ControlPlaneError"]

"""Argo Workflows' real ``workflow-controller`` (v3.6.10) against a local control plane.

Built by ``scripts/build-backup-controllers.sh`` into the same cache as kube-apiserver. It runs as
a :class:`~vworkspace.testing.processes.ManagedProcess`:

* ``--kubeconfig`` (the admin one) and ``--namespace argo``, cluster-wide (no ``--namespaced``:
  Runbook Workflows run in each target's release namespace, which a test makes up);
* ``LEADER_ELECTION_DISABLE=true`` (single instance, no Lease) and ``DEFAULT_REQUEUE_TIME=1s``
  (the controller looks at a Workflow at most every 10 s by default; 1 s is what Argo's own
  Makefile runs its tests with);
* its ConfigMap ``workflow-controller-configmap`` in ``argo`` (the controller exits without it)
  with ``metricsConfig.enabled: false``: the metrics server would bind ``:9090`` on every
  interface. Its pprof/healthz server has no flag and always tries ``:6060``; a second
  controller on the machine only logs that the port is taken, so readiness is not asked of it;
* the executor image is irrelevant: kwok runs no container.

"Ready" is the log line ``Starting CronWorkflow controller``, which ``WorkflowController.Run``
(workflow/controller/controller.go) reaches only after ``cache.WaitForCacheSync`` over all its
informers (Workflows, WorkflowTemplates, Pods, ConfigMaps, WorkflowTaskSets,
WorkflowArtifactGCTasks, WorkflowTaskResults); it starts its workers right after. The controller
needs the CRDs of all of those (and CronWorkflows, ClusterWorkflowTemplates) Established first;
``scripts/testenv/third-party-crds.txt`` pins them and :func:`install_argo_crds` installs them.

How Workflow Pods finish without an executor (read in the v3.6.10 source):

* A Pod has the init container ``init``, the ``wait`` container (``argoexec wait``, which in a
  cluster writes the node's WorkflowTaskResult: outputs, and the label
  ``workflows.argoproj.io/report-outputs-completed``) and ``main``, whose command the controller
  rewrote to ``/var/run/argo/argoexec emissary --loglevel .. -- <command> <args>``
  (workflowpod.go, ``createWorkflowPod``): the template's argv is still there after ``--``.
* ``assessNodeStatus`` (operator.go) takes a node's phase from the Pod's phase: Pending ->
  Pending, Running -> Running, Succeeded -> Succeeded, Failed -> ``inferFailedReason``: the
  Pod's ``status.message`` if any, else the first container (init, then main, then wait) that
  terminated non-zero: ``"<reason> (exit code N)"``, phase Failed for ``main``, Error for
  ``init``/``wait``; a container still Waiting -> Error ``Pod failed before .. starts``. The
  main container's exit code becomes ``outputs.exitCode``.
* WorkflowTaskResults only hold a node back when one exists: ``taskResultReconciliation``
  (taskresult.go) is the only place that marks a result incomplete (its label ``"false"``), and
  ``IsTaskResultIncomplete`` answers false for a node without an entry ("workflows from older
  versions do not have this status, so assume completed", workflow_types.go). With no
  WorkflowTaskResult at all, a node completes from the Pod alone; only outputs beyond the exit
  code (parameters, artifacts) are missing, and our Runbooks pass none between steps.
* A ``wait`` container still Running holds a completed node back, and the controller signals the
  Pod's running containers through ``pods/exec`` once ``main`` has terminated
  (``podHasContainerNeedingTermination``): kwok serves no exec, so the Pod must end with every
  container terminated at once, as our stage does.

So the kwok stage ``scripts/testenv/kwok-stages/pod-argo-exit.yaml`` finishes every Argo Pod one
second after it ran: ``wait`` exits 0, a template container whose argv after ``--`` is
``sh -c "exit N"`` exits N (reason Error), any other 0; the Pod ends Failed or Succeeded. The
controller then does the rest for real (steps, retries, the Workflow's phase and message).
Nothing writes a WorkflowTaskResult or a Workflow's status but the controller.

Trade-offs: one controller per session; no executor, so no output parameters or artifacts; the
fixed ``:6060`` (see above).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vworkspace.testing.assets import ensure_built, find_built
from vworkspace.testing.controlplane import ControlPlane, ControlPlaneError
from vworkspace.testing.crds import (
    FIELD_MANAGER,
    ThirdPartyCrdsError,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.processes import ManagedProcess, StartStop

WORKFLOW_CONTROLLER = "workflow-controller"
# What scripts/build-backup-controllers.sh pins; the stamp in the cache holds it.
VERSION = "v3.6.10"
NAMESPACE = "argo"
CONFIGMAP = "workflow-controller-configmap"
ARGO_GROUP = "argoproj.io"
BUILD_SCRIPT = "build-backup-controllers.sh"
# Logged by the CronWorkflow controller, which Run starts once every informer has synced.
READY_LINE = "Starting CronWorkflow controller"
REQUEUE_TIME = "1s"
# Never pulled (kwok runs no container); the controller's own default, made explicit.
EXECUTOR_IMAGE = f"quay.io/argoproj/argoexec:{VERSION}"
# The controller's configuration (config/config.go): no metrics server on :9090.
CONTROLLER_CONFIG = "metricsConfig:\n  enabled: false\ntelemetryConfig:\n  enabled: false\n"


class ArgoError(ControlPlaneError):
    """The controller is missing or did not become ready; the message carries its log tail.
    A :class:`ControlPlaneError`, so ``testenv start`` reports it as it reports kwok's."""


def find_controller(env: Mapping[str, str], *, beside: Path | None = None) -> Path:
    """The ``workflow-controller`` binary, beside the control plane's or in the cache."""
    found = find_built(
        [WORKFLOW_CONTROLLER], env, beside=beside, script=BUILD_SCRIPT, error=ArgoError
    )
    return found[WORKFLOW_CONTROLLER]


def ensure_controller(env: Mapping[str, str], *, beside: Path | None = None) -> Path:
    """:func:`find_controller`, built first when missing in a checkout with Go (the script
    builds whatever of its four binaries is missing, one line each)."""
    found = ensure_built(
        [WORKFLOW_CONTROLLER], env, beside=beside, script=BUILD_SCRIPT, error=ArgoError
    )
    return found[WORKFLOW_CONTROLLER]


def install_argo_crds(plane: ControlPlane, env: Mapping[str, str]) -> list[str]:
    """Install (and wait for) the Argo Workflows CRDs from the third-party CRD cache."""
    crds = [
        crd
        for crd in load_crds([ensure_third_party_crds(env)])
        if crd.get("spec", {}).get("group") == ARGO_GROUP
    ]
    return install_crds(plane.rest(), crds)


def _configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
        "data": {"config": CONTROLLER_CONFIG},
    }


class ArgoController(StartStop):
    """One ``workflow-controller`` for one control plane.

    Use it as a context manager, or :meth:`start` and :meth:`stop` (safe twice). The Argo CRDs
    must be Established before :meth:`start`; Workflow Pods need kwok's Nodes and our stage.
    """

    def __init__(
        self,
        *,
        plane: ControlPlane,
        binary: Path,
        data_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.plane = plane
        self.binary = binary
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vworkspace-argo-"))
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self._process: ManagedProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / f"{WORKFLOW_CONTROLLER}.log"

    def start(self) -> None:
        started = time.monotonic()
        rest = self.plane.rest()
        rest.apply(
            f"/api/v1/namespaces/{NAMESPACE}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            field_manager=FIELD_MANAGER,
        )
        rest.apply(
            f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}",
            _configmap(),
            field_manager=FIELD_MANAGER,
        )
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            name=WORKFLOW_CONTROLLER,
            argv=[
                str(self.binary),
                f"--kubeconfig={self.plane.kubeconfig_path}",
                f"--namespace={NAMESPACE}",
                f"--configmap={CONFIGMAP}",
                f"--executor-image={EXECUTOR_IMAGE}",
                "--loglevel=info",
                # A test runs a handful of Workflows; the defaults (32 + 8 + ...) are for a fleet.
                "--workflow-workers=4",
                "--cron-workflow-workers=1",
                "--workflow-archive-workers=1",
                "--workflow-ttl-workers=1",
                "--pod-cleanup-workers=2",
            ],
            log_path=self.log_path,
            # Its whole environment: no ARGO_* variable of the caller's reaches its flags.
            env={
                "LEADER_ELECTION_DISABLE": "true",
                # How soon a Workflow is looked at again after a change (default 10 s; the
                # value Argo's own Makefile runs its tests with).
                "DEFAULT_REQUEUE_TIME": REQUEUE_TIME,
                "HOME": str(home),
            },
        )
        try:
            self._process.start()
            self._wait_ready(self._process)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, proc: ManagedProcess) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = proc.exit_code()
            if code is not None:
                raise ArgoError(
                    f"{proc.name} exited with {code} before it was ready "
                    f"(log {proc.log_path}):\n{proc.log_tail()}"
                )
            if proc.log_path.is_file() and READY_LINE in proc.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise ArgoError(
            f"{proc.name} did not log {READY_LINE!r} (its caches synced) within "
            f"{self.start_timeout:.0f}s; log {proc.log_path}:\n{proc.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise :class:`ArgoError` if the controller has exited."""
        proc = self._process
        if proc is not None and (code := proc.exit_code()) is not None:
            raise ArgoError(f"{proc.name} exited with {code}:\n{proc.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The controller's last log lines, for a failing test's report."""
        if self._process is None:
            return ""
        return f"--- {WORKFLOW_CONTROLLER} ({self.log_path})\n{self._process.log_tail(lines)}"

    def stop(self, *, keep_data_dir: bool = False) -> None:
        proc, self._process = self._process, None
        if proc is not None:
            proc.stop()
        if self._own_dir and not keep_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def summary(self) -> str:
        """One line for ``testenv start --with argo``."""
        secs = f"{self.startup_seconds:.1f}s" if self.startup_seconds is not None else "?"
        return (
            f"argo: {WORKFLOW_CONTROLLER} {VERSION} (cluster-wide, namespace {NAMESPACE}) "
            f"ready in {secs} (log {self.log_path})"
        )


def start_argo(
    plane: ControlPlane, env: Mapping[str, str], *, data_dir: Path | None = None
) -> ArgoController:
    """Install the Argo CRDs, then start the controller and wait until it is ready.

    For ``testenv start --with argo`` and anything else outside pytest; the caller stops it.
    Its log goes to ``data_dir``, by default ``argo/`` in the plane's data directory (which
    ``testenv start --data-dir`` keeps).
    """
    binary = ensure_controller(env, beside=plane.assets.directory)
    try:
        install_argo_crds(plane, env)
    except ThirdPartyCrdsError as err:
        raise ArgoError(f"the Argo CRDs: {err}") from err
    controller = ArgoController(
        plane=plane, binary=binary, data_dir=data_dir or plane.data_dir / "argo"
    )
    controller.start()
    return controller

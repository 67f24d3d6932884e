"""The demo's shared parts: its steps, how they are printed, what they create, how they wait.

``python -m vworkspace demo`` (:mod:`vworkspace.devtools.demo_cmd`) starts everything and drives
the job; :mod:`vworkspace.devtools.demo_install` follows the real install. Both print through
one :class:`Reporter` and keep what they start on one :class:`Demo`, defined here so that
neither imports the other's internals.

Each step names the log a newcomer should read when it does not happen (:data:`STEPS`): a step
that fails or times out ends the demo with that step's number, what it waited for, what the
object it watched last said, and those log files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TypeVar

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.devtools.demo_watch import Watch
from vworkspace.kube.rest.client import KubeClient
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.testing.assets import Assets
from vworkspace.testing.chartrepo import ChartRepository
from vworkspace.testing.controlplane import ControlPlane
from vworkspace.testing.flux import Flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.processes import ManagedProcess
from vworkspace.testing.s3 import SeaweedS3
from vworkspace.testing.velero import Velero

T = TypeVar("T")
POLL_SECONDS = 0.2
CLUSTER_ID = "demo-cluster-1"

# Log files and folders, relative to the work dir (``*``: the start attempt, 1 unless a port
# was taken meanwhile).
KUBE_LOGS = "kubernetes/logs/"
KWOK_LOG = "kubernetes/logs/kwok.*.log"
SCHEDULER_LOG = "kubernetes/logs/kube-scheduler.*.log"
WORKLOADS_LOG = "kubernetes/logs/kube-controller-manager-workloads.*.log"
SOURCE_LOG = "flux/logs/source-controller.log"
HELM_LOG = "flux/logs/helm-controller.log"
FLUX_LOGS = "flux/logs/"
OPERATOR_LOG = "operator.log"
MOCK_LOG = "mock-control-plane.log"
S3_LOG = "s3/logs/weed.log"
VELERO_LOG = "velero/logs/velero.log"


@attrs.frozen
class Step:
    """One numbered step: what it means, and the logs to read when it does not happen."""

    text: str
    logs: tuple[str, ...] = ()


STEPS = {
    "inputs": Step("find the binaries (Kubernetes, kwok, Flux, helm) and the CRDs"),
    "kubernetes": Step(
        "start Kubernetes on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager",
        (KUBE_LOGS,),
    ),
    "crds": Step("install the CRDs: vworkspace's own, Flux, Velero, Argo Workflows", (KUBE_LOGS,)),
    "mock": Step("start the mock vWorkspace control plane: it sends jobs, receives status"),
    "operator": Step(
        "start the operator (python -m vworkspace run) with its Pull agent", (OPERATOR_LOG,)
    ),
    "nodes": Step(
        "start simulated Nodes: kube-scheduler, the Deployment controllers, kwok",
        (KWOK_LOG, SCHEDULER_LOG, WORKLOADS_LOG),
    ),
    "charts": Step("serve the demo-app Helm chart from a chart repository on 127.0.0.1"),
    "flux": Step(
        "start Flux: source-controller fetches charts, helm-controller installs them",
        (SOURCE_LOG, HELM_LOG),
    ),
    "register": Step("register this cluster with the control plane", (OPERATOR_LOG,)),
    "enqueue": Step("control plane: queue an apply job for an ApplicationInstance", (MOCK_LOG,)),
    "ack": Step("agent: fetch the job over its long poll and ack it", (OPERATOR_LOG, MOCK_LOG)),
    "instance": Step("agent: server-side apply the ApplicationInstance", (OPERATOR_LOG,)),
    "result": Step("agent: report the job's result to the control plane", (OPERATOR_LOG,)),
    "source": Step(
        "operator: create the chart source (HelmRepository) and the HelmRelease", (OPERATOR_LOG,)
    ),
    "fetched": Step(
        "source-controller: fetch the repository index and the chart", (SOURCE_LOG, HELM_LOG)
    ),
    "installed": Step("helm-controller: install the chart (Deployment, Service, ...)", (HELM_LOG,)),
    "available": Step(
        "Kubernetes: the Deployment becomes Available, its Pods Running on kwok Nodes",
        (WORKLOADS_LOG, SCHEDULER_LOG, KWOK_LOG, HELM_LOG),
    ),
    "released": Step("helm-controller: the HelmRelease becomes Ready", (HELM_LOG,)),
    "ready": Step("operator: the ApplicationInstance becomes Ready", (OPERATOR_LOG,)),
    "reported": Step(
        "agent: Ready=True reaches the control plane as a condition event",
        (OPERATOR_LOG, MOCK_LOG),
    ),
}
# --signed: one more step, after which a tampered job must be refused.
SIGNED_STEPS = {
    "tampered": Step(
        "enqueue a job changed after signing: the agent must refuse it", (OPERATOR_LOG,)
    ),
}
# --backup: the installed application backed up by the real Velero into S3 (demo_backup).
BACKUP_STEPS = {
    "s3": Step("start S3 on 127.0.0.1: SeaweedFS (weed mini) with a bucket for Velero", (S3_LOG,)),
    "velero": Step(
        "start Velero (server, velero-plugin-for-aws): its BackupStorageLocation Available",
        (VELERO_LOG, S3_LOG),
    ),
    "backup-job": Step(
        "control plane: queue an apply job for a Backup Operation; the agent applies it",
        (OPERATOR_LOG, MOCK_LOG),
    ),
    "backed-up": Step(
        "operator: a Velero Backup of the namespace; Velero writes it to the bucket",
        (OPERATOR_LOG, VELERO_LOG, S3_LOG),
    ),
    "backup-succeeded": Step(
        "operator: the Operation Succeeded; Succeeded=True reaches the control plane",
        (OPERATOR_LOG, MOCK_LOG),
    ),
    "bucket": Step("S3: list the backup's objects in the bucket", (S3_LOG,)),
}


def steps_for(*, signed: bool, backup: bool) -> dict[str, Step]:
    """The demo's numbered steps: the install's, then ``--signed``'s, then ``--backup``'s."""
    return {**STEPS, **(SIGNED_STEPS if signed else {}), **(BACKUP_STEPS if backup else {})}


class ProcessDiedError(RuntimeError):
    """A process the demo started has exited; ``logs`` are its logs (relative to the work
    dir), which say more than the step's own."""

    def __init__(self, message: str, *, logs: tuple[str, ...]) -> None:
        super().__init__(message)
        self.logs = logs


class DemoFailedError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class Reporter:
    """Numbered step lines with the seconds since the demo started."""

    def __init__(self, steps: dict[str, Step] | None = None) -> None:
        self.started = time.monotonic()
        self.current = "startup"
        self.current_logs: tuple[str, ...] = ()
        self.steps = steps or STEPS

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def detail(self, text: str) -> None:
        self.say(f"      {text}")

    @contextlib.contextmanager
    def step(self, key: str) -> Iterator[None]:
        steps = self.steps
        number = list(steps).index(key) + 1
        self.current = f"step {number}/{len(steps)} ({steps[key].text})"
        self.current_logs = steps[key].logs
        self.say(f"{number:>2}/{len(steps)} {steps[key].text}")
        try:
            yield
        except DemoFailedError:
            raise
        except Exception as err:  # every failure of a step is reported with the step's name
            if isinstance(err, ProcessDiedError):
                self.current_logs = err.logs
            raise DemoFailedError(self.current, _describe(err)) from err


def _describe(err: BaseException) -> str:
    if isinstance(err, (RuntimeError, TimeoutError, LookupError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


@attrs.frozen
class Prepared:
    """Work started at step 1 in worker threads, that needs no cluster: the third-party CRDs
    parsed, the chart repository packaged and serving, ``manifests/`` rendered (None: no
    kubectl, the operator then uses the admin kubeconfig)."""

    crds: Future[list[JsonObj]]
    charts: Future[ChartRepository]
    rendering: Future[list[JsonObj]] | None


@attrs.frozen
class BackupBinaries:
    """What ``--backup`` runs: ``weed`` and the Velero server with its AWS plugin."""

    weed: Path
    velero: dict[str, Path]


@attrs.define
class Demo:
    """What the steps create, for the later steps and for the shutdown."""

    args: argparse.Namespace
    workdir: Path
    out: Reporter = attrs.field(factory=Reporter)
    assets: Assets | None = None
    flux_binaries: dict[str, Path] = attrs.field(factory=dict)
    third_party: Path | None = None
    prepared: Prepared | None = None
    instance: JsonObj = attrs.field(factory=dict)
    plane: ControlPlane | None = None
    kubeconfig: Path | None = None
    nodes: KwokNodes | None = None
    charts: ChartRepository | None = None
    flux: Flux | None = None
    mock: MockControlPlane | None = None
    mock_log: IO[str] | None = None
    admin: AdminClient | None = None
    admin_token: str = ""
    registration_token: str = ""
    operator: ManagedProcess | None = None
    operator_identity: str = "the admin kubeconfig"
    shipped_rbac: bool = False
    metrics_url: str = ""
    probes_url: str = ""
    kube: KubeClient | None = None
    events: list[JsonObj] = attrs.field(factory=list)
    enqueued_at: float = 0.0
    release: Watch | None = None
    application: Watch | None = None
    deployment: JsonObj = attrs.field(factory=dict)
    pods: list[JsonObj] = attrs.field(factory=list)
    # --backup (demo_backup): the S3 endpoint and Velero, the Operation and the Backup polled.
    backup_binaries: BackupBinaries | None = None
    s3: SeaweedS3 | None = None
    velero: Velero | None = None
    operation: Watch | None = None
    backup: Watch | None = None
    backup_enqueued_at: float = 0.0
    bucket_objects: list[str] = attrs.field(factory=list)
    stop: asyncio.Event | None = None
    interruptible: bool = True

    @property
    def timeout(self) -> float:
        return float(self.args.timeout)

    def instance_key(self) -> ObjectKey:
        meta = self.instance["metadata"]
        return ObjectKey(meta["namespace"], meta["name"])

    def release_key(self) -> ObjectKey:
        return ObjectKey(self.instance_key().namespace, self.instance["spec"]["release"]["name"])

    def log_paths(self, logs: tuple[str, ...]) -> str:
        """The logs as paths, each pattern expanded to the files that exist (or kept)."""
        paths = [sorted(self.workdir.glob(log)) or [self.workdir / log] for log in logs]
        return ", ".join(str(path) for group in paths for path in group)


async def wait_for(
    demo: Demo,
    *,
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns a value; fail naming ``what`` (and what ``explain``
    says the watched object last said) after the step timeout, or at once when a process the
    demo started has died."""
    deadline = time.monotonic() + demo.timeout
    while True:
        check_processes(demo)
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            why = f"; {explain()}" if explain is not None else ""
            raise TimeoutError(f"{what} did not happen within {demo.timeout:g}s{why}")
        await asyncio.sleep(POLL_SECONDS)


def check_processes(demo: Demo) -> None:
    """Raise :class:`ProcessDiedError` (naming the process, its log and the log's tail) if
    anything the demo started has died."""
    if demo.operator is not None:
        code = demo.operator.exit_code()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            raise ProcessDiedError(
                f"the operator {how}; the end of {demo.operator.log_path}:\n"
                f"{demo.operator.log_tail(20)}",
                logs=(OPERATOR_LOG,),
            )
    parts = (
        (demo.plane, (KUBE_LOGS,)),
        (demo.nodes, (KWOK_LOG,)),
        (demo.flux, (FLUX_LOGS,)),
        (demo.s3, (S3_LOG,)),
        (demo.velero, (VELERO_LOG,)),
    )
    for part, logs in parts:
        if part is None:
            continue
        try:
            part.check_alive()
        except RuntimeError as err:  # ControlPlaneError, KwokError, FluxError, S3/Velero's
            raise ProcessDiedError(str(err), logs=logs) from None

"""Simulated Nodes: kwok against the test control plane.

kwok (``sigs.k8s.io/kwok``) plays the kubelet for Nodes it manages: it marks them Ready and moves
their Pods through the stages it is given (``-c`` files, built next to the binary by
``scripts/build-kwok.sh``): Pods go Running at once, Pods owned by a Job then Succeeded. Stages
of ours (scripts/testenv/kwok-stages) let the real Job controller report a real failure:
a Pod annotated :data:`FAIL_ANNOTATION` ends Failed with that exit code, and so does a Pod with
``restartPolicy: Never`` whose container runs ``sh -c "exit N"`` (:data:`SHELL_EXIT_STAGE`, the
trigger an Operation can ask for). A third finishes the Pods of Argo Workflows the same way,
reading the script after argoexec's ``--`` (``pod-argo-exit.yaml``; see
:mod:`vworkspace.testing.argo`). :meth:`KwokNodes.start` refuses a cache whose copies of our
stages are missing or older than the checkout's, naming the script that refreshes them.

With kube-scheduler and the workload controllers of
:class:`~vworkspace.testing.controlplane.ControlPlane`, Deployments become Available and Jobs
Complete through the real controllers, without a container runtime.

Trade-offs: no container ever runs, so what a Pod would do (its logs, its exit code) is what the
stages say; readiness and probes are not simulated. kwok manages only the Nodes that carry
:data:`NODE_LABEL`, so a test that creates a Node of its own is left alone. The Nodes carry no
taint, so any Pod (a Helm chart's too) lands on them.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from vworkspace.testing.assets import Assets
from vworkspace.testing.controlplane import ControlPlane, ControlPlaneError, free_port
from vworkspace.testing.processes import ManagedProcess, StartStop
from vworkspace.testing.rest import MERGE_PATCH, ApiError

NODE_LABEL = "testing.vworkspace.io/kwok"
# A running Pod with this annotation fails with the annotation's value as exit code (our stage,
# scripts/testenv/kwok-stages/pod-fail.yaml).
FAIL_ANNOTATION = "pod-fail.stage.vworkspace.io/exit-code"
# A Job's Pod whose container's command + args are [sh, -c, "exit N"] fails with exit code N
# (scripts/testenv/kwok-stages/pod-shell-exit.yaml).
SHELL_EXIT_STAGE = "pod-shell-exit.yaml"
# Our stage files in a source checkout; scripts/build-kwok.sh copies each to the cache's
# kwok-stages/ as vworkspace-<name>.
CHECKOUT_STAGES = Path(__file__).resolve().parents[2] / "scripts" / "testenv" / "kwok-stages"
DEFAULT_NODES = 3
_START_ATTEMPTS = 3
# The API server's TaintNodesByCondition admission taints every new Node with this until the
# node-lifecycle-controller sees it Ready and lifts it. That controller does not run here (it
# would also mark kwok's Nodes NotReady when their heartbeats stop), so we lift it ourselves.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_FIELD_MANAGER = "vworkspace-testing-kwok"


class KwokError(ControlPlaneError):
    """kwok did not start, or its Nodes did not go Ready; the message carries kwok's log tail."""


def node_manifest(name: str) -> dict[str, Any]:
    """A Node for kwok: the label it selects on; kwok's node-initialize stage fills the status
    (capacity, addresses, Ready)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                NODE_LABEL: "true",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
    }


def stale_stages(installed: list[Path], ours: Path = CHECKOUT_STAGES) -> list[str]:
    """Our stage files (in ``ours``, a checkout's) whose copy among ``installed`` is missing or
    differs: the cache was built from an older checkout. Empty outside a checkout."""
    if not ours.is_dir():
        return []
    copies = {path.name: path for path in installed}
    stale = []
    for stage in sorted(ours.glob("*.yaml")):
        copy = copies.get(f"vworkspace-{stage.name}")
        if copy is None or copy.read_bytes() != stage.read_bytes():
            stale.append(stage.name)
    return stale


def node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_schedulable(node: dict[str, Any]) -> bool:
    """Ready and without the not-ready taint: the scheduler will place Pods on it."""
    taints = node.get("spec", {}).get("taints") or []
    return node_ready(node) and not any(t.get("key") == NOT_READY_TAINT for t in taints)


def _without_not_ready(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    taints = node.get("spec", {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != NOT_READY_TAINT]
    return kept or None


class KwokNodes(StartStop):
    """kwok as a managed process plus ``count`` Nodes it keeps Ready.

    :meth:`start` also starts kube-scheduler and the workload controllers on ``plane`` if they
    are not running: Nodes nobody schedules onto would be of no use. :meth:`stop` stops kwok and
    deletes the Nodes (their Pods are then orphans nobody runs); the scheduler and controllers
    stay with the control plane.
    """

    def __init__(
        self,
        *,
        plane: ControlPlane,
        assets: Assets,
        count: int = DEFAULT_NODES,
        ready_timeout: float = 60.0,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        missing = assets.missing_for_nodes()
        if missing:
            raise KwokError(
                f"simulated nodes need {', '.join(missing)} in {assets.directory} "
                f"({assets.source}); build them with scripts/build-test-assets.sh"
            )
        assert assets.kwok is not None
        self.plane = plane
        self.binary = assets.kwok
        self.stages = assets.kwok_stages
        self.names = [f"kwok-node-{i}" for i in range(count)]
        self.ready_timeout = ready_timeout
        self.ready_seconds: float | None = None
        self._proc: ManagedProcess | None = None

    @property
    def log_path(self) -> Path | None:
        return self._proc.log_path if self._proc else None

    def start(self) -> None:
        """Start the scheduler, the workload controllers and kwok; create the Nodes; wait until
        every Node is Ready. Sets :attr:`ready_seconds`."""
        stale = stale_stages(self.stages)
        if stale:
            # Else a Pod meant to fail would complete, and a test would time out mysteriously.
            raise KwokError(
                f"kwok's stages next to {self.binary} are older than {CHECKOUT_STAGES} "
                f"({', '.join(stale)} missing or different); refresh them with "
                "scripts/build-kwok.sh"
            )
        started = time.monotonic()
        self.plane.start_workload_controllers()
        self.plane.start_scheduler()
        # A free port can be taken between the pick and kwok's bind: retry, as the plane does.
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_kwok(attempt)
                break
            except KwokError as err:
                if "address already in use" not in str(err) or attempt == _START_ATTEMPTS:
                    raise
        try:
            self._create_nodes()
            self._wait_nodes_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started

    def _start_kwok(self, attempt: int) -> None:
        port = free_port()
        argv = [
            str(self.binary),
            f"--kubeconfig={self.plane.kubeconfig_path}",
            f"--manage-nodes-with-label-selector={NODE_LABEL}=true",
            f"--server-address=127.0.0.1:{port}",
            "--node-lease-duration-seconds=0",
        ]
        for stage in self.stages:
            argv += ["-c", str(stage)]
        self._proc = ManagedProcess(
            name="kwok", argv=argv, log_path=self.plane.data_dir / "logs" / f"kwok.{attempt}.log"
        )
        self._proc.start()
        try:
            self._wait_healthy(f"http://127.0.0.1:{port}/healthz")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.stop()
        if not self.plane.running("kube-apiserver"):
            return
        rest = self.plane.rest()
        for name in self.names:
            try:
                rest.delete(f"/api/v1/nodes/{name}")
            except ApiError as err:
                if err.status != 404:
                    raise

    def check_alive(self) -> None:
        """Raise :class:`KwokError` if kwok has exited."""
        if self._proc is not None and self._proc.exit_code() is not None:
            raise KwokError(f"kwok exited with {self._proc.exit_code()}:\n{self._proc.log_tail()}")

    def _fail(self, what: str) -> KwokError:
        assert self._proc is not None
        return KwokError(f"{what}; log {self._proc.log_path}:\n{self._proc.log_tail()}")

    def _wait_healthy(self, url: str) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self._proc.exit_code()
            if code is not None:
                raise self._fail(f"kwok exited with {code} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = str(resp.status)
            except (OSError, urllib.error.URLError) as err:
                last = str(err)
            time.sleep(0.1)
        raise self._fail(f"kwok not healthy at {url} after {self.ready_timeout:.0f}s ({last})")

    def _create_nodes(self) -> None:
        rest = self.plane.rest()
        for name in self.names:
            rest.apply(f"/api/v1/nodes/{name}", node_manifest(name), field_manager=_FIELD_MANAGER)

    def _wait_nodes_ready(self) -> None:
        rest = self.plane.rest()

        def all_ready() -> bool:
            self.check_alive()
            ready = True
            for name in self.names:
                node = rest.get(f"/api/v1/nodes/{name}")
                if node_ready(node) and not node_schedulable(node):
                    # What the node-lifecycle-controller does once a Node is Ready.
                    rest.request(
                        "PATCH",
                        f"/api/v1/nodes/{name}",
                        body={"spec": {"taints": _without_not_ready(node)}},
                        content_type=MERGE_PATCH,
                    )
                    node = rest.get(f"/api/v1/nodes/{name}")
                ready = ready and node_schedulable(node)
            return ready

        try:
            rest.wait_for(
                f"Nodes {', '.join(self.names)} Ready", all_ready, timeout=self.ready_timeout
            )
        except TimeoutError as err:
            raise self._fail(str(err)) from None

"""`python -m vworkspace demo`: one application through the whole Pull loop, installed for real.

It starts a real local Kubernetes control plane (the test substrate: etcd, kube-apiserver,
kube-controller-manager), simulated Nodes (kube-scheduler, the Deployment controllers and kwok
playing the kubelet), a Helm chart repository on 127.0.0.1 holding the project's demo-app chart,
Flux's real source-controller and helm-controller, the mock vWorkspace control plane and the
operator with its agent. It registers the cluster, queues one ``apply`` job for an
ApplicationInstance of demo-app 0.1.0 with two replicas, and shows each hop as it happens:
the job acked, the instance applied, the job's result, the operator's HelmRepository and
HelmRelease, the chart fetched by source-controller, installed by helm-controller, the
Deployment Available with its Pods on kwok Nodes, the HelmRelease Ready, the instance Ready, and
Ready=True back at the control plane (:mod:`vworkspace.devtools.demo_install`). With
``--backup`` it then starts SeaweedFS S3 and the real Velero server and sends a Backup
Operation the same way, through to the backup's objects in the bucket
(:mod:`vworkspace.devtools.demo_backup`). Then it prints where to look and keeps running until
Ctrl-C (or stops at once with ``--exit``).

Trade-offs:

* The cluster is the test substrate, not kind: no Docker and ready in seconds, but no container
  ever runs. kwok moves Pods to Running on its Nodes, so Deployments become Available and
  helm-controller's wait succeeds exactly as on a cluster; what the container would do is not
  simulated. The binaries come from the cache ``scripts/build-test-assets.sh`` fills.
* The operator is a child process running exactly ``python -m vworkspace run`` (JSON logs to a
  file in the work dir), as its own ServiceAccount with only the RBAC rendered from
  ``manifests/`` (``vworkspace.testing.identity``; a token kubeconfig, 24 h), so the demo shows
  what an install on a cluster does and its own output stays a short, readable list of steps.
  Without kubectl to render the manifests it falls back to the admin kubeconfig and says so.
  Registration goes through ``python -m vworkspace register``, the documented break-glass path,
  with the admin kubeconfig, also as a child process.
* The mock control plane runs in this process. Jobs, results and events go through its admin API
  over HTTP, as a real tool would use it; the one-time registration token and the ack record are
  taken from its in-memory state because its admin API has no endpoints for them.
* Processes cannot outlive the demo: etcd, kube-apiserver, the controllers, kwok, Flux and the
  operator run in their own sessions (Ctrl-C reaches only this process, which stops them in
  order) and get SIGKILL from the kernel if this process dies (``vworkspace.testing.processes``).
* Every wait polls every 0.2 s with a per-step timeout (``--timeout``) and checks that every
  process it started is still alive, so a crash fails the step at once with the log tail
  instead of after the timeout; a HelmRelease Flux gave up on fails it at once too.

Every long-running process is started from the main thread (PDEATHSIG is tied to the thread
that forks): steps 1-3 before the asyncio loop, the rest inside it, which runs on the main thread
too, because the in-process mock must keep serving the agent while the demo waits. Steps 6-8
(kwok, the chart repository, Flux) block the loop for a second or two while the operator boots
in its own process; nothing calls the mock before the cluster is registered. ``--backup``'s S3
and Velero start the same way after the install, blocking the loop for their start (about 5 s
each) while the agent's requests wait. Work that needs no
cluster (parsing the CRDs, packaging the charts with short-lived ``helm`` calls, rendering
``manifests/`` with ``kubectl``) runs in worker threads while Kubernetes starts, as the pytest
fixtures start processes while the chart repository's thread serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import IO, Any

import aiohttp
import attrs
import structlog

from vworkspace.agent.trustedkeys import DEFAULT_NAME as TRUSTED_KEYS
from vworkspace.api import crdgen
from vworkspace.api.constants import capability_annotation
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.keys_cmd import PRIVATE_FILE, PUBLIC_FILE, write_key_pair
from vworkspace.devtools import testenv_cmd
from vworkspace.devtools.demo_backup import (
    BACKUP_JOB_ID,
    describe_binaries,
    find_backup_binaries,
    follow_backup,
    start_storage,
    stop_storage,
)
from vworkspace.devtools.demo_core import (
    CLUSTER_ID,
    KUBE_LOGS,
    MOCK_LOG,
    OPERATOR_LOG,
    POLL_SECONDS,
    S3_LOG,
    VELERO_LOG,
    Demo,
    DemoFailedError,
    Prepared,
    Reporter,
    check_processes,
    steps_for,
    wait_for,
)
from vworkspace.devtools.demo_install import follow_install
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import AlreadyExistsError, NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CONFIG_MAPS, NAMESPACES
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.mockcontrolplane.server import ADMIN_HEADER
from vworkspace.mockcontrolplane.signer import Signer
from vworkspace.testing.chartrepo import DEMO_CHART, find_helm, start_chart_repository
from vworkspace.testing.crds import (
    THIRD_PARTY_ENV,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.flux import VERSIONS, Flux, find_controllers
from vworkspace.testing.identity import (
    find_kubectl,
    forbidden_requests,
    install_shipped_identity,
    render_manifests,
    request_token,
)
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.processes import ManagedProcess

JOB_ID = "demo-apply-1"
OPERATOR_NAMESPACE = "vworkspace-system"
FIELD_MANAGER = "vworkspace-demo"
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# The application: demo-app (tests/fixtures/charts) with two replicas, on two simulated Nodes.
INSTANCE = ObjectKey("demo", "hello")
CHART_VERSION = "0.1.0"
REPLICAS = 2
NODES = 2
# The operator's ServiceAccount token: long enough for a demo left running for a day.
TOKEN_SECONDS = 24 * 3600
# A user's agent settings would win over the credentials Secret that registration writes.
AGENT_ENV_OVERRIDES = ("CONTROL_PLANE_BASE_URL", "VWORKSPACE_CLUSTER_ID", "VWORKSPACE_AGENT_TOKEN")
KEY_ID = "demo-key-1"
BACKUP_CAPABILITY = capability_annotation("backup")
TAMPERED_JOB_ID = "demo-tampered-1"

DESCRIPTION = """\
Run the whole Pull loop on this machine, with real controllers: a local Kubernetes control
plane (etcd, kube-apiserver, kube-controller-manager), simulated Nodes (kube-scheduler, the
Deployment controllers, kwok), a Helm chart repository on 127.0.0.1 with the demo-app chart,
Flux's source-controller and helm-controller, the mock vWorkspace control plane, and the operator
with its agent (`python -m vworkspace run --agent-enabled`, a child process, as its own
ServiceAccount). After cluster registration (`python -m vworkspace register`), one `apply` job
for an ApplicationInstance of demo-app goes from the control plane to the agent, the operator
makes a HelmRelease of it, Flux installs the chart, its Deployment becomes Available on the
simulated Nodes, and Ready=True goes back to the control plane. With --backup, SeaweedFS S3
(weed mini) and the real Velero server start next, a Backup Operation job goes the same way,
Velero backs the application's namespace up into the bucket, the Operation succeeds and the
backup's objects in the bucket are listed. Each step is printed as it happens; then the
kubeconfig, the mock's admin URL and the log paths are printed and everything keeps running
until Ctrl-C."""

EPILOG = """\
needs:
  the binaries ($VWORKSPACE_TEST_ASSETS, $KUBEBUILDER_ASSETS or the cache filled by
  scripts/build-test-assets.sh: Kubernetes, kube-scheduler, kwok, helm, source-controller,
  helm-controller; for --backup also weed, velero and velero-plugin-for-aws) and the
  Flux/Velero/Argo CRDs (the cache filled from the Go module proxy by
  scripts/fetch-third-party-crds.sh; $VWORKSPACE_THIRD_PARTY_CRDS overrides).
  scripts/dev-pull-loop.sh prepares .venv, the binaries and the CRDs, then runs this command.

Exit codes: 0 success (also after Ctrl-C), 1 a step failed (the message names the step and the
log to read; with --backup and no Velero or weed: step 1, naming what is missing), 130
interrupted during a step.

examples:
  python -m vworkspace demo                         run, then keep everything up until Ctrl-C
  python -m vworkspace demo --exit                  stop once Ready=True is at the control plane
  python -m vworkspace demo --signed --exit         signed jobs required; a tampered job refused
  python -m vworkspace demo --backup --exit         also back it up with Velero into S3
  python -m vworkspace demo --workdir ./demo --timeout 120"""


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_parser(commands: Any, *, summary: str) -> None:
    demo = commands.add_parser(
        "demo",
        help=summary,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--exit",
        "--no-wait",
        dest="exit",
        action="store_true",
        help="stop everything right after the summary instead of waiting for Ctrl-C",
    )
    demo.add_argument(
        "--signed",
        action="store_true",
        help="zero-trust Pull: generate a signing key, trust it on the cluster, sign every job "
        "at the mock, run the operator with --agent-require-signed-jobs, and show a tampered "
        "job being refused",
    )
    demo.add_argument(
        "--backup",
        action="store_true",
        help="after the install, start SeaweedFS S3 and the Velero server, send a Backup "
        "Operation of the application through the same Pull path, wait for Velero to complete "
        "it and list the backup's objects in the bucket (about 16 s more)",
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="kubeconfig, logs and Kubernetes data go here (default: a new temporary directory; "
        "logs are kept after exit, etcd data is removed)",
    )
    demo.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long each step may take (default: %(default)s)",
    )
    demo.set_defaults(handler=run_demo)


# -- the command -----------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    workdir = _workdir(args.workdir)
    steps = steps_for(signed=args.signed, backup=args.backup)
    demo = Demo(args=args, workdir=workdir, out=Reporter(steps))
    _print_intro(demo)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    code = 1
    try:
        _find_inputs(demo)
        _start_kubernetes(demo)
        _install_crds(demo)
        code = asyncio.run(_pull_loop(demo))
    except DemoFailedError as err:
        _report_failure(demo, err)
    except KeyboardInterrupt:
        demo.out.say(f"interrupted during {demo.out.current}; stopping")
        code = 130
    finally:
        # The stop is bounded (SIGKILL after 10 s per process); a second Ctrl-C must not cut it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_cluster(demo)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    if code == 1:
        print(f"demo failed: {demo.out.current} did not happen{_read_logs(demo)}", flush=True)
    if args.workdir is None and not any(workdir.iterdir()):
        workdir.rmdir()  # nothing was started: leave no empty temporary directory behind
    return code


def _print_intro(demo: Demo) -> None:
    signed = " Jobs must be signed (--signed)." if demo.args.signed else ""
    backup = (
        "\nThen a Backup Operation job: the real Velero backs the application up into "
        "SeaweedFS S3 (--backup)."
        if demo.args.backup
        else ""
    )
    logs = f", {S3_LOG}, {VELERO_LOG}" if demo.args.backup else ""
    print(
        "vworkspace demo: a mock vWorkspace control plane sends one application job; the "
        "operator\n"
        "pulls it and Flux installs the chart for real, onto simulated Nodes, on a local "
        f"Kubernetes.{signed}{backup}\n"
        f"  work dir: {demo.workdir} (kubeconfig; every log: {OPERATOR_LOG}, {MOCK_LOG}, "
        f"flux/logs/, {KUBE_LOGS}{logs})",
        flush=True,
    )


def _read_logs(demo: Demo) -> str:
    logs = demo.out.current_logs
    if not logs or demo.plane is None:
        return ""
    return f"; read {demo.log_paths(logs)}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM during the synchronous steps: unwind like Ctrl-C so the finally blocks run.
    raise KeyboardInterrupt(f"signal {signum}")


def _workdir(requested: Path | None) -> Path:
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="vworkspace-demo-"))
    requested.mkdir(parents=True, exist_ok=True)
    return requested.resolve()


def _report_failure(demo: Demo, err: DemoFailedError) -> None:
    demo.out.say(f"FAILED {err.step}: {err.message}")


# -- steps 1-3, and 6-8 inside the loop: synchronous, on the main thread ------------------------


def _find_inputs(demo: Demo) -> None:
    with demo.out.step("inputs"):
        env = dict(os.environ)
        demo.assets = testenv_cmd.find_assets(build=False)
        missing = demo.assets.missing_for_nodes()
        if missing:
            raise RuntimeError(
                f"simulated Nodes need {', '.join(missing)} in {demo.assets.directory}: "
                "run scripts/build-test-assets.sh"
            )
        demo.flux_binaries = find_controllers(env, beside=demo.assets.directory)
        if demo.args.backup:  # before anything starts: a missing Velero fails here, at once
            demo.backup_binaries = find_backup_binaries(env, beside=demo.assets.directory)
        helm = find_helm(env)
        demo.third_party = ensure_third_party_crds(env)
        # The chart's URL once the repository serves.
        demo.instance = _instance(chart_url="", backup=demo.args.backup)
        demo.prepared = _prepare(demo, env)
        demo.out.detail(
            f"binaries: {demo.assets.directory} ({demo.assets.source}): Kubernetes, kwok, "
            f"{helm.name}, source-controller {VERSIONS['source-controller']}, helm-controller "
            f"{VERSIONS['helm-controller']}"
        )
        if demo.backup_binaries is not None:
            demo.out.detail(describe_binaries(demo.backup_binaries))
        demo.out.detail(f"CRDs: Flux/Velero/Argo in {demo.third_party}")


def _prepare(demo: Demo, env: dict[str, str]) -> Prepared:
    """Start what needs no cluster in worker threads, while Kubernetes starts: the CRDs parsed,
    the charts packaged and served, the manifests rendered (about 2 s of work, off the critical
    path). Each result is taken, and its failure reported, by the step that needs it."""
    assert demo.third_party is not None
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="demo-prepare")
    kubectl = find_kubectl(env)
    prepared = Prepared(
        crds=pool.submit(load_crds, [demo.third_party]),
        charts=pool.submit(start_chart_repository, env, work_dir=demo.workdir / "charts"),
        rendering=pool.submit(render_manifests, kubectl, MANIFESTS) if kubectl else None,
    )
    pool.shutdown(wait=False)  # the threads end with their one task each
    return prepared


def _instance(*, chart_url: str, backup: bool) -> JsonObj:
    """The ApplicationInstance the job carries: demo-app from the local chart repository; with
    ``--backup`` it grants Backup Operations to Velero (its capability annotation), as an
    Operation's target must."""
    metadata: JsonObj = {"name": INSTANCE.name, "namespace": INSTANCE.namespace}
    if backup:
        metadata["annotations"] = {BACKUP_CAPABILITY: "velero"}
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": metadata,
        "spec": {
            "appRef": {"catalogId": DEMO_CHART},
            "mode": "managed",
            "chart": {
                "sourceType": "helm",
                "url": chart_url,
                "name": DEMO_CHART,
                "version": CHART_VERSION,
            },
            "release": {"name": INSTANCE.name, "namespace": INSTANCE.namespace},
            "values": {
                "source": "inline",
                "inline": {"replicas": REPLICAS, "message": "hello from the vworkspace demo"},
            },
        },
    }


def _start_kubernetes(demo: Demo) -> None:
    assert demo.assets is not None
    with demo.out.step("kubernetes"):
        demo.plane = testenv_cmd.new_control_plane(
            demo.assets, data_dir=demo.workdir / "kubernetes", start_timeout=demo.timeout
        )
        demo.plane.start()
        demo.kubeconfig = testenv_cmd.copy_kubeconfig(demo.plane, demo.workdir / "kubeconfig")
        demo.out.detail(
            f"API server {demo.plane.server} ready in {demo.plane.startup_seconds or 0:.1f}s; "
            f"kubeconfig {demo.kubeconfig}"
        )


def _install_crds(demo: Demo) -> None:
    assert demo.plane is not None
    with demo.out.step("crds"):
        assert demo.prepared is not None
        third = demo.prepared.crds.result(timeout=demo.timeout)
        if not third:
            raise RuntimeError(
                f"no CustomResourceDefinition in {demo.third_party} (set {THIRD_PARTY_ENV})"
            )
        own = [crdgen.crd(info) for info in crdgen.RESOURCES]
        # One call: every CRD applied, then all waited for together.
        install_crds(demo.plane.rest(), [*own, *third], timeout=demo.timeout)
        kinds = ", ".join(crd["spec"]["names"]["plural"] for crd in own)
        demo.out.detail(
            f"{len(own)} vworkspace CRDs ({kinds}) and {len(third)} Flux/Velero/Argo CRDs "
            "Established"
        )


def _start_nodes(demo: Demo) -> None:
    assert demo.plane is not None
    assert demo.assets is not None
    with demo.out.step("nodes"):
        demo.nodes = KwokNodes(
            plane=demo.plane, assets=demo.assets, count=NODES, ready_timeout=demo.timeout
        )
        demo.nodes.start()
        demo.out.detail(
            f"{len(demo.nodes.names)} Nodes Ready in {demo.nodes.ready_seconds or 0:.1f}s "
            f"({', '.join(demo.nodes.names)}): kwok plays their kubelet, so Pods go Running "
            "without containers"
        )


def _serve_charts(demo: Demo) -> None:
    with demo.out.step("charts"):
        assert demo.prepared is not None
        demo.charts = demo.prepared.charts.result(timeout=demo.timeout)
        demo.instance = _instance(chart_url=demo.charts.url, backup=demo.args.backup)
        demo.out.detail(
            f"{demo.charts.url}/index.yaml: {DEMO_CHART} 0.1.0 and 0.2.0 "
            "(tests/fixtures/charts/demo-app: a Deployment, a Service, a ConfigMap)"
        )


def _start_flux(demo: Demo) -> None:
    assert demo.plane is not None
    with demo.out.step("flux"):
        demo.flux = Flux(
            plane=demo.plane,
            binaries=demo.flux_binaries,
            data_dir=demo.workdir / "flux",
            start_timeout=demo.timeout,
        )
        demo.flux.start()
        demo.out.detail(
            f"source-controller {VERSIONS['source-controller']} and helm-controller "
            f"{VERSIONS['helm-controller']} ready in {demo.flux.startup_seconds or 0:.1f}s "
            f"(logs {demo.workdir / 'flux' / 'logs'})"
        )


def _stop_cluster(demo: Demo) -> None:
    """Everything the synchronous steps started, in reverse order."""
    started = time.monotonic()
    stopped = stop_storage(demo)
    if demo.charts is None and demo.prepared is not None:
        # Started in the background but not taken yet (a failure or Ctrl-C before step 7).
        with contextlib.suppress(Exception):
            demo.charts = demo.prepared.charts.result()
    if demo.flux is not None:
        demo.flux.stop(keep_data_dir=True)
    if demo.nodes is not None:
        with contextlib.suppress(Exception):  # deleting the Nodes needs a live API server
            demo.nodes.stop()
    if demo.charts is not None:
        demo.charts.stop()
    if demo.plane is None:
        return
    demo.plane.stop()
    shutil.rmtree(demo.workdir / "kubernetes" / "etcd", ignore_errors=True)
    shutil.rmtree(demo.workdir / "flux" / "storage", ignore_errors=True)
    demo.out.say(
        f"stopped {stopped}Flux, kwok and the Kubernetes control plane in "
        f"{time.monotonic() - started:.1f}s; logs kept in {demo.workdir}"
    )


# -- steps 4 on: one asyncio loop, so the in-process mock serves while the demo waits ---------


async def _pull_loop(demo: Demo) -> int:
    demo.stop = asyncio.Event()
    _install_signal_handlers(demo)
    try:
        await _start_mock(demo)
        await _start_operator(demo)
        # Synchronous, on the main thread (PDEATHSIG), while the operator boots: the loop does
        # not serve the mock meanwhile, and nobody calls it before the cluster is registered.
        _start_nodes(demo)
        _serve_charts(demo)
        _start_flux(demo)
        await _register(demo)
        await _enqueue(demo)
        await _await_ack(demo)
        await _await_instance(demo)
        await _await_result(demo)
        await follow_install(demo)
        if demo.args.signed:
            await _tampered(demo)
        if demo.args.backup:
            await start_storage(demo)
            await follow_backup(demo)
        await _print_summary(demo)
        return await _wait_or_exit(demo)
    except DemoFailedError as err:
        _report_failure(demo, err)
        return 1
    except asyncio.CancelledError:
        demo.out.say(f"interrupted during {demo.out.current}; stopping")
        return 130
    finally:
        demo.interruptible = False
        await _stop_pull_side(demo)


def _install_signal_handlers(demo: Demo) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        assert demo.stop is not None
        demo.stop.set()
        if demo.interruptible and task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


def _configure_mock_log(path: Path) -> IO[str]:
    """The in-process mock logs each request with structlog: to a file, not over the steps."""
    handle = path.open("w", buffering=1)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=handle),
        cache_logger_on_first_use=False,
    )
    return handle


async def _start_mock(demo: Demo) -> None:
    with demo.out.step("mock"):
        demo.mock_log = _configure_mock_log(demo.workdir / MOCK_LOG)
        demo.admin_token = secrets.token_hex(8)
        signer = _signing_key(demo) if demo.args.signed else None
        demo.mock = await MockControlPlane(
            strict_registration=True, admin_token=demo.admin_token, signer=signer
        ).start()
        demo.admin = AdminClient(demo.mock.url, admin_token=demo.admin_token, timeout=10)
        demo.registration_token = f"demo-registration-{secrets.token_hex(6)}"
        demo.mock.add_registration_token(demo.registration_token, CLUSTER_ID)
        demo.out.detail(
            f"{demo.mock.url} (agent API /api/agent, admin /api/admin); one-time registration "
            f"token issued for cluster {CLUSTER_ID}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _operator_environment(demo: Demo) -> None:
    """The child inherits this environment: the operator's namespace, and no agent settings
    that would win over the credentials Secret registration writes."""
    os.environ["POD_NAMESPACE"] = OPERATOR_NAMESPACE
    for name in AGENT_ENV_OVERRIDES:
        if os.environ.pop(name, None) is not None:
            demo.out.detail(f"ignoring ${name} from your environment")


def _operator_kubeconfig(demo: Demo) -> Path:
    """A token kubeconfig of the operator's own ServiceAccount, with the RBAC of ``manifests/``
    applied; the admin kubeconfig when there is no kubectl to render them."""
    assert demo.plane is not None
    assert demo.kubeconfig is not None
    assert demo.prepared is not None
    if demo.prepared.rendering is None:
        return demo.kubeconfig
    rendered = demo.prepared.rendering.result(timeout=demo.timeout)
    identity = install_shipped_identity(demo.plane, rendered, namespace=OPERATOR_NAMESPACE)
    token = request_token(
        demo.plane.rest(),
        namespace=identity.namespace,
        service_account=identity.service_account,
        seconds=TOKEN_SECONDS,
    )
    identity = attrs.evolve(identity, token=token)
    demo.shipped_rbac = True
    demo.operator_identity = f"ServiceAccount {identity.namespace}/{identity.service_account}"
    return identity.write_kubeconfig(demo.workdir / "operator.kubeconfig")


async def _start_operator(demo: Demo) -> None:
    assert demo.mock is not None
    assert demo.kubeconfig is not None
    with demo.out.step("operator"):
        demo.kube = await KubeClient.from_kubeconfig(str(demo.kubeconfig))
        with contextlib.suppress(AlreadyExistsError):
            await demo.kube.create(
                NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
                field_manager=FIELD_MANAGER,
            )
        kubeconfig = await asyncio.to_thread(_operator_kubeconfig, demo)
        probes, metrics = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        demo.metrics_url = f"https://{metrics}/metrics"
        argv = [
            *("-m", "vworkspace", "run", "--kubeconfig", str(kubeconfig), "--agent-enabled"),
            *("--control-plane-base-url", demo.mock.url, "--log-format", "json"),
            "--allow-insecure-control-plane",  # the demo's mock is plain http on 127.0.0.1
            *("--health-probe-bind-address", probes, "--metrics-bind-address", metrics),
        ]
        if demo.args.signed:
            await _trust_key(demo)
            argv.append("--agent-require-signed-jobs")
        _operator_environment(demo)
        log = demo.workdir / OPERATOR_LOG
        log.unlink(missing_ok=True)
        demo.operator = ManagedProcess(name="operator", argv=[sys.executable, *argv], log_path=log)
        demo.operator.start()
        demo.probes_url = f"http://{probes}/readyz"
        demo.out.detail(f"POD_NAMESPACE={OPERATOR_NAMESPACE} python {shlex.join(argv)}")
        demo.out.detail(
            f"pid {demo.operator.pid}, log {log}, as {demo.operator_identity}; it boots while "
            "the next steps run"
        )


async def _await_operator(demo: Demo) -> None:
    assert demo.operator is not None
    await wait_for(demo, what="the operator's /readyz", probe=_http_ok(demo.probes_url))
    demo.out.detail(f"operator ready (/readyz answers 200): {demo.operator_identity}")


def _http_ok(url: str) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as resp,
            ):
                return True if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    return probe


async def _register(demo: Demo) -> None:
    assert demo.mock is not None
    assert demo.kubeconfig is not None
    with demo.out.step("register"):
        argv = [
            *("-m", "vworkspace", "register", "--control-plane-endpoint", demo.mock.url),
            *("--registration-token", demo.registration_token, "--cluster-id", CLUSTER_ID),
            *("--kubeconfig", str(demo.kubeconfig), "--namespace", OPERATOR_NAMESPACE),
            *("--timeout", f"{demo.timeout:g}"),
            "--allow-insecure-control-plane",
        ]
        demo.out.detail(f"python {shlex.join(argv)}")
        # Both at once: register applies the Cluster and waits for the operator to act on it.
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_await_operator(demo))
                child = group.create_task(
                    _run_child(demo, argv, what="`python -m vworkspace register` to finish")
                )
        except ExceptionGroup as errors:  # the first failure, as the step's own
            raise errors.exceptions[0] from None
        code = child.result()
        if code != 0:
            raise RuntimeError(f"`python -m vworkspace register` exited with {code}")
        if demo.mock.state.token_for(CLUSTER_ID) is None:
            raise RuntimeError(f"the mock issued no bearer token for {CLUSTER_ID}")
        demo.out.detail("the mock exchanged the one-time token for the agent's bearer token")


async def _run_child(demo: Demo, argv: list[str], *, what: str) -> int:
    """Run ``python argv``, printing its output as details; its exit code. Fails early when a
    process the demo started dies meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C is for the demo, which then stops the child
    )
    relay = asyncio.create_task(_relay(demo, proc))
    limit = demo.timeout + 10  # the child has its own --timeout; this is the backstop
    try:
        async with asyncio.timeout(limit):
            while not relay.done():
                check_processes(demo)
                await asyncio.wait({relay}, timeout=POLL_SECONDS)
            await relay
            return await proc.wait()
    except TimeoutError:
        raise TimeoutError(f"{what} did not happen within {limit:g}s") from None
    finally:
        relay.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _relay(demo: Demo, proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        demo.out.detail(f"| {line.decode(errors='replace').rstrip()}")


def _job(demo: Demo) -> JsonObj:
    key = demo.instance_key()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": JOB_ID,
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{key.namespace}/{key.name}@1",
        "createdAt": now,
        "payload": demo.instance,
    }


async def _enqueue(demo: Demo) -> None:
    assert demo.admin is not None
    with demo.out.step("enqueue"):
        await demo.admin.enqueue(CLUSTER_ID, _job(demo))
        demo.enqueued_at = time.monotonic()
        spec = demo.instance["spec"]
        chart, values = spec["chart"], spec["values"]["inline"]
        annotations = demo.instance["metadata"].get("annotations") or {}
        granted = "".join(f", annotation {k}={v}" for k, v in annotations.items())
        demo.out.detail(
            f"job {JOB_ID} (kind apply): ApplicationInstance {demo.instance_key()}, chart "
            f"{chart['name']} {chart['version']} from {chart['url']}, values {values}{granted}"
        )


async def _await_ack(demo: Demo) -> None:
    mock = demo.mock
    assert mock is not None

    async def acked() -> bool | None:
        return True if mock.was_acked(JOB_ID) else None

    with demo.out.step("ack"):
        await wait_for(demo, what=f"the agent's ack of job {JOB_ID}", probe=acked)
        demo.out.detail(f"job {JOB_ID} acked: delivered to the agent over its long poll")


async def _get_instance(demo: Demo, key: ObjectKey) -> JsonObj | None:
    assert demo.kube is not None
    try:
        return await demo.kube.get(APPLICATION_INSTANCES, key)
    except NotFoundError:
        return None


async def _await_instance(demo: Demo) -> None:
    key = demo.instance_key()
    with demo.out.step("instance"):
        instance = await wait_for(
            demo, what=f"ApplicationInstance {key}", probe=lambda: _get_instance(demo, key)
        )
        labels = instance["metadata"].get("labels") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        demo.out.detail(f"ApplicationInstance {key} created by the agent (labels: {shown})")


async def _await_result(demo: Demo) -> None:
    admin = demo.admin
    assert admin is not None
    with demo.out.step("result"):
        result = await wait_for(
            demo,
            what=f"the result of job {JOB_ID}",
            probe=lambda: admin.job_result(JOB_ID),
        )
        if result.get("outcome") != "succeeded":
            raise RuntimeError(
                f"job {JOB_ID} result is {result.get('outcome')}: {result.get('error', '')}"
            )
        ref = result.get("appliedRef") or {}
        demo.out.detail(
            f"job result: succeeded (applied {ref.get('kind')} {ref.get('namespace')}/"
            f"{ref.get('name')}, generation {ref.get('generation')}); the install follows"
        )


def _signing_key(demo: Demo) -> Signer:
    keys = demo.workdir / "keys"
    write_key_pair(keys, key_id=KEY_ID, force=True)
    demo.out.detail(
        f"generated Ed25519 signing key {KEY_ID} ({keys / PRIVATE_FILE}, {keys / PUBLIC_FILE}); "
        "the mock signs every job with it"
    )
    return Signer.load(keys / PRIVATE_FILE, KEY_ID)


async def _trust_key(demo: Demo) -> None:
    """The public key into the trusted-keys ConfigMap, before the operator starts."""
    assert demo.kube is not None
    pem = (demo.workdir / "keys" / PUBLIC_FILE).read_text()
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": TRUSTED_KEYS, "namespace": OPERATOR_NAMESPACE},
        "data": {KEY_ID: pem},
    }
    await demo.kube.apply(CONFIG_MAPS, body, field_manager=FIELD_MANAGER)
    demo.out.detail(f"trusted key {KEY_ID}: ConfigMap {OPERATOR_NAMESPACE}/{TRUSTED_KEYS}")


async def _tampered(demo: Demo) -> None:
    """A job a hostile hop changed after signing: failed, naming the cause; nothing applied."""
    admin = demo.admin
    assert admin is not None
    instance = {**demo.instance, "metadata": {**demo.instance["metadata"], "name": "tampered"}}
    key = ObjectKey(demo.instance_key().namespace, "tampered")
    with demo.out.step("tampered"):
        job = {"id": TAMPERED_JOB_ID, "kind": "apply", "payload": instance}
        await admin.enqueue(CLUSTER_ID, job, signing="tampered-payload")
        demo.out.detail(
            f"job {TAMPERED_JOB_ID}: signed by the mock, then its payload changed "
            f"(ApplicationInstance {key}, one label added)"
        )
        result = await wait_for(
            demo,
            what=f"the result of job {TAMPERED_JOB_ID}",
            probe=lambda: admin.job_result(TAMPERED_JOB_ID),
        )
        error = str(result.get("error", ""))
        if result.get("outcome") != "failed" or not error.startswith("signature:"):
            raise RuntimeError(f"the tampered job was not refused: {result}")
        demo.out.detail(f"job result: failed: {error}")
        if await _get_instance(demo, key) is not None:
            raise RuntimeError(f"ApplicationInstance {key} exists: the tampered job was applied")
        demo.out.detail(f"ApplicationInstance {key} does not exist: nothing was applied")


# -- summary, wait, shutdown -----------------------------------------------------------------


async def _forbidden(demo: Demo) -> str:
    """One line on the 403s the operator got under its shipped RBAC (none expected): its
    ``rest_client_requests_total{code="403"}``, scraped with the admin token, and its log."""
    if demo.operator is None or demo.plane is None or not demo.shipped_rbac:
        return f"operator identity:   {demo.operator_identity}"
    headers = {"Authorization": f"Bearer {demo.plane.token}"}
    metrics: str | None = None
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(demo.metrics_url, headers=headers, ssl=False) as resp,
        ):
            metrics = await resp.text() if resp.status == 200 else None
    log = demo.operator.log_path.read_text(errors="replace")
    findings = forbidden_requests(metrics_text=metrics, log_text=log)
    verdict = "no request refused (403)" if not findings else "; ".join(findings)
    checked = "its metrics and log" if metrics is not None else "its log (metrics unreadable)"
    return f"operator identity:   {demo.operator_identity}, shipped RBAC: {verdict} ({checked})"


async def _print_summary(demo: Demo) -> None:
    assert demo.mock is not None
    url, header = demo.mock.url, f"{ADMIN_HEADER}: {demo.admin_token}"
    key = demo.instance_key()
    nodes = sorted({(p.get("spec") or {}).get("nodeName", "?") for p in demo.pods})
    lines = [
        "",
        f"  kubeconfig:          {demo.kubeconfig}",
        f"    kubectl --kubeconfig {demo.kubeconfig} get applicationinstances,helmreleases,"
        f"helmrepositories,helmcharts,deployments,pods -n {key.namespace} -o wide",
        f"  mock control plane:  {url}  (admin token {demo.admin_token}, header {ADMIN_HEADER})",
        f"    curl -H '{header}' '{url}/api/admin/events?cluster={CLUSTER_ID}'",
        f"    curl -H '{header}' {url}/api/admin/jobs/{JOB_ID}/result",
        f"  operator log:        {demo.workdir / OPERATOR_LOG}  (JSON lines)",
        f"  {await _forbidden(demo)}",
        f"  Flux logs:           {demo.workdir / 'flux' / 'logs'}",
        f"  Kubernetes logs:     {demo.workdir / KUBE_LOGS}  (kube-apiserver, kwok, scheduler)",
        f"  mock request log:    {demo.workdir / MOCK_LOG}",
        "",
        f"demo complete: job {JOB_ID} -> ApplicationInstance {key} -> HelmRelease installed by "
        f"helm-controller -> Deployment Available ({len(demo.pods)} Pods on {', '.join(nodes)}) "
        f"-> Ready=True at the control plane ({len(demo.out.steps)} steps in "
        f"{demo.out.elapsed():.1f}s)",
    ]
    if demo.args.signed:
        lines.insert(6, f"    curl -H '{header}' {url}/api/admin/jobs/{TAMPERED_JOB_ID}/result")
        lines[-1] += f"; signed with key {KEY_ID}, tampered job {TAMPERED_JOB_ID} refused"
    if demo.args.backup:
        lines[-2:-1] = _backup_summary(demo)
        lines[-1] += (
            f"; job {BACKUP_JOB_ID} -> Operation Backup -> Velero Backup Completed -> "
            f"{len(demo.bucket_objects)} objects in the bucket"
        )
    print("\n".join(lines), flush=True)


def _backup_summary(demo: Demo) -> list[str]:
    """The ``--backup`` lines: where S3 and Velero are, how to look at the backup."""
    assert demo.s3 is not None
    assert demo.velero is not None
    backup = demo.backup.key.name if demo.backup is not None else "?"
    return [
        f"  S3 (SeaweedFS):      {demo.s3.endpoint_url}  bucket {demo.s3.bucket}, keys in "
        f"{demo.s3.credentials_file}",
        f"    AWS_SHARED_CREDENTIALS_FILE={demo.s3.credentials_file} aws --endpoint-url "
        f"{demo.s3.endpoint_url} s3 ls --recursive s3://{demo.s3.bucket}/",
        f"    kubectl --kubeconfig {demo.kubeconfig} get operations -n "
        f"{demo.instance_key().namespace}; kubectl --kubeconfig {demo.kubeconfig} get "
        f"backups.velero.io -n {demo.velero.namespace} {backup} -o yaml",
        f"  Velero log:          {demo.velero.log_path}",
        f"  S3 log:              {demo.s3.log_path}",
        "",
    ]


async def _wait_or_exit(demo: Demo) -> int:
    assert demo.stop is not None
    demo.out.current = "the wait for Ctrl-C"
    if demo.args.exit:
        demo.out.say("--exit: stopping")
        return 0
    demo.interruptible = False
    demo.out.say("everything keeps running; press Ctrl-C to stop")
    while not demo.stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await demo.stop.wait()
        try:
            check_processes(demo)
        except RuntimeError as err:
            demo.out.say(f"FAILED while running: {err}")
            return 1
    demo.out.say("stopping")
    return 0


async def _stop_pull_side(demo: Demo) -> None:
    # The operator first, while the mock still answers its last requests.
    if demo.operator is not None:
        started = time.monotonic()
        await asyncio.to_thread(demo.operator.stop, 30.0)
        demo.out.say(f"stopped the operator in {time.monotonic() - started:.1f}s")
    if demo.kube is not None:
        await demo.kube.close()
    if demo.mock is not None:
        await demo.mock.stop()
        demo.out.say("stopped the mock control plane")
    if demo.mock_log is not None:
        structlog.reset_defaults()
        demo.mock_log.close()

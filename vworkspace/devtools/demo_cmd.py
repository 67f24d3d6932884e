"""`python -m vworkspace demo`: one job through the whole Pull loop on this machine, one command.

It starts a real local Kubernetes control plane (the test substrate: etcd, kube-apiserver,
kube-controller-manager), installs the vworkspace, Flux and Velero CRDs, starts the mock
vWorkspace control plane and the operator with its agent, registers the cluster, enqueues an
``apply`` job for the sample ApplicationInstance and shows each hop: the job acked, the
ApplicationInstance created, the operator's HelmRelease created, the result ``succeeded`` and the
condition events back at the control plane. Then it prints where to look and keeps running until
Ctrl-C (or stops at once with ``--exit``).

Trade-offs:

* The cluster is the test substrate, not kind: no Docker and ready in about 5 s, but nothing runs
  Pods and no Flux controller exists, so the HelmRelease never becomes Ready. The output says so
  rather than pretending otherwise.
* The operator is a child process running exactly ``python -m vworkspace run`` (JSON logs to a
  file in the work dir), so the demo shows what ``run`` does and its own output stays a short,
  readable list of steps. Registration goes through ``python -m vworkspace register``, the
  documented break-glass path, also as a child process.
* The mock control plane runs in this process. Jobs, results and events go through its admin API
  over HTTP, as a real tool would use it; the one-time registration token and the ack record are
  taken from its in-memory state because its admin API has no endpoints for them.
* Processes cannot outlive the demo: etcd, kube-apiserver, kube-controller-manager and the operator
  run in their own sessions (Ctrl-C reaches only this process, which stops them in order) and get
  SIGKILL from the kernel if this process dies (``vworkspace.testing.processes``).
* Every wait polls every 0.2 s with a per-step timeout (``--timeout``) and checks that the
  operator and the control plane are still alive, so a crash fails the step at once with the
  log tail instead of after the timeout.

Steps 1-3 run synchronously on the main thread (the control plane's children must be started
from it for PDEATHSIG); the rest runs in one asyncio loop, because the in-process mock must keep
serving the agent while the demo waits.
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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import aiohttp
import attrs
import structlog
import yaml

from vworkspace.agent.trustedkeys import DEFAULT_NAME as TRUSTED_KEYS
from vworkspace.api import crdgen
from vworkspace.api.meta import ObjectKey
from vworkspace.app.keys_cmd import PRIVATE_FILE, PUBLIC_FILE, write_key_pair
from vworkspace.devtools import testenv_cmd
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import AlreadyExistsError, NotFoundError
from vworkspace.kube.resources import (
    APPLICATION_INSTANCES,
    CONFIG_MAPS,
    NAMESPACES,
    ResourceType,
)
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.mockcontrolplane.server import ADMIN_HEADER
from vworkspace.mockcontrolplane.signer import Signer
from vworkspace.testing.assets import Assets
from vworkspace.testing.controlplane import ControlPlane
from vworkspace.testing.crds import (
    THIRD_PARTY_ENV,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.processes import ManagedProcess

T = TypeVar("T")
JsonObj = dict[str, Any]

CLUSTER_ID = "demo-cluster-1"
JOB_ID = "demo-apply-1"
OPERATOR_NAMESPACE = "vworkspace-system"
FIELD_MANAGER = "vworkspace-demo"
POLL_SECONDS = 0.2
SAMPLE = Path(__file__).resolve().parents[2] / "manifests/samples/applicationinstance-helm.yaml"
# A user's agent settings would win over the credentials Secret that registration writes.
AGENT_ENV_OVERRIDES = ("CONTROL_PLANE_BASE_URL", "VWORKSPACE_CLUSTER_ID", "VWORKSPACE_AGENT_TOKEN")

STEPS = {
    "inputs": "find the Kubernetes binaries, the CRDs and the sample application",
    "kubernetes": "start the local Kubernetes control plane",
    "crds": "install the CRDs (vworkspace, Flux, Velero, Argo Workflows)",
    "mock": "start the mock vWorkspace control plane",
    "operator": "start the operator with the Pull agent",
    "register": "register the cluster with the control plane",
    "enqueue": "enqueue an apply job at the control plane",
    "ack": "wait for the agent to fetch and ack the job",
    "instance": "wait for the ApplicationInstance",
    "helmrelease": "wait for the operator's HelmRelease",
    "result": "wait for the job result at the control plane",
    "events": "wait for condition events at the control plane",
}
# --signed: one more step, after which a tampered job must be refused.
SIGNED_STEPS = {
    **STEPS,
    "tampered": "enqueue a job changed after signing: the agent must refuse it",
}
KEY_ID = "demo-key-1"
TAMPERED_JOB_ID = "demo-tampered-1"

DESCRIPTION = """\
Run the whole Pull loop on this machine: a real local Kubernetes control plane (etcd,
kube-apiserver, kube-controller-manager), the vworkspace, Flux and Velero CRDs, the mock
vWorkspace control plane, the operator with its agent (`python -m vworkspace run
--agent-enabled`, a child process), cluster registration (`python -m vworkspace register`), and
one `apply` job for manifests/samples/applicationinstance-helm.yaml. Each step is printed as it
happens; then the kubeconfig, the mock's admin URL and the log paths are printed and everything
keeps running until Ctrl-C."""

EPILOG = """\
needs:
  the Kubernetes binaries ($VWORKSPACE_TEST_ASSETS, $KUBEBUILDER_ASSETS or the cache filled by
  scripts/build-test-assets.sh) and the Flux/Velero/Argo CRDs (the cache filled from the Go module
  proxy by scripts/fetch-third-party-crds.sh; $VWORKSPACE_THIRD_PARTY_CRDS overrides).
  scripts/dev-pull-loop.sh prepares .venv, the binaries and the CRDs, then runs this command.

No Flux controller runs here, so the HelmRelease is created but never becomes Ready.
Exit codes: 0 success (also after Ctrl-C), 1 a step failed, 130 interrupted during a step.

examples:
  python -m vworkspace demo                         run, then keep everything up until Ctrl-C
  python -m vworkspace demo --exit                  stop right after the summary (CI)
  python -m vworkspace demo --signed --exit         signed jobs required; a tampered job refused
  python -m vworkspace demo --workdir ./demo --timeout 120"""


class DemoFailedError(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class Reporter:
    """Numbered step lines with the seconds since the demo started."""

    def __init__(self, steps: dict[str, str] | None = None) -> None:
        self.started = time.monotonic()
        self.current = "startup"
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
        self.current = f"step {number}/{len(steps)} ({steps[key]})"
        self.say(f"{number:>2}/{len(steps)} {steps[key]}")
        try:
            yield
        except DemoFailedError:
            raise
        except Exception as err:  # every failure of a step is reported with the step's name
            raise DemoFailedError(self.current, _describe(err)) from err


def _describe(err: BaseException) -> str:
    if isinstance(err, (RuntimeError, TimeoutError, LookupError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


@attrs.define
class Demo:
    """What the steps create, for the later steps and for the shutdown."""

    args: argparse.Namespace
    workdir: Path
    out: Reporter = attrs.field(factory=Reporter)
    assets: Assets | None = None
    third_party: Path | None = None
    third_party_crds: list[JsonObj] = attrs.field(factory=list)
    sample: JsonObj = attrs.field(factory=dict)
    plane: ControlPlane | None = None
    kubeconfig: Path | None = None
    mock: MockControlPlane | None = None
    mock_log: IO[str] | None = None
    admin: AdminClient | None = None
    admin_token: str = ""
    registration_token: str = ""
    operator: ManagedProcess | None = None
    kube: KubeClient | None = None
    events: list[JsonObj] = attrs.field(factory=list)
    stop: asyncio.Event | None = None
    interruptible: bool = True

    @property
    def timeout(self) -> float:
        return float(self.args.timeout)

    def sample_key(self) -> ObjectKey:
        meta = self.sample["metadata"]
        return ObjectKey(meta.get("namespace") or "demo", meta["name"])


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
    demo = Demo(args=args, workdir=workdir, out=Reporter(SIGNED_STEPS if args.signed else STEPS))
    signed = ", signed jobs only" if args.signed else ""
    print(
        f"vworkspace demo: one job through the Pull loop on this machine{signed} "
        f"(work dir {workdir})"
    )
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
        _stop_kubernetes(demo)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    if code == 1:
        logs = f"; logs are in {workdir}" if demo.plane is not None else ""
        print(f"demo failed at {demo.out.current}{logs}", flush=True)
    if args.workdir is None and not any(workdir.iterdir()):
        workdir.rmdir()  # nothing was started: leave no empty temporary directory behind
    return code


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


# -- steps 1-3: synchronous, on the main thread -----------------------------------------------


def _find_inputs(demo: Demo) -> None:
    with demo.out.step("inputs"):
        demo.assets = testenv_cmd.find_assets(build=False)
        demo.third_party, demo.third_party_crds = _third_party_crds()
        demo.sample = _load_sample(SAMPLE)
        demo.out.detail(f"Kubernetes binaries: {demo.assets.directory} ({demo.assets.source})")
        crds = demo.third_party_crds
        demo.out.detail(f"Flux/Velero/Argo CRDs: {len(crds)} in {demo.third_party}")
        demo.out.detail(f"sample: {SAMPLE}")


def _third_party_crds() -> tuple[Path, list[JsonObj]]:
    folder = ensure_third_party_crds(os.environ)
    crds = load_crds([folder])
    if not crds:
        raise RuntimeError(f"no CustomResourceDefinition in {folder} (set {THIRD_PARTY_ENV})")
    return folder, crds


def _load_sample(path: Path) -> JsonObj:
    if not path.is_file():
        raise RuntimeError(f"the sample {path} is missing (run the demo from a checkout)")
    sample = yaml.safe_load(path.read_text())
    if not isinstance(sample, dict) or sample.get("kind") != "ApplicationInstance":
        raise RuntimeError(f"{path} is not an ApplicationInstance")
    return sample


def _start_kubernetes(demo: Demo) -> None:
    assert demo.assets is not None
    with demo.out.step("kubernetes"):
        demo.plane = testenv_cmd.new_control_plane(
            demo.assets, data_dir=demo.workdir / "kubernetes", start_timeout=demo.timeout
        )
        demo.plane.start()
        demo.kubeconfig = testenv_cmd.copy_kubeconfig(demo.plane, demo.workdir / "kubeconfig")
        parts = "etcd, kube-apiserver" + (
            ", kube-controller-manager" if demo.plane.with_controller_manager else ""
        )
        demo.out.detail(
            f"API server {demo.plane.server} ready in {demo.plane.startup_seconds or 0:.1f}s "
            f"({parts})"
        )


def _install_crds(demo: Demo) -> None:
    assert demo.plane is not None
    with demo.out.step("crds"):
        rest = demo.plane.rest()
        own = install_crds(
            rest, [crdgen.crd(info) for info in crdgen.RESOURCES], timeout=demo.timeout
        )
        third = install_crds(rest, demo.third_party_crds, timeout=demo.timeout)
        demo.out.detail(f"{len(own)} vworkspace CRDs Established: {', '.join(own)}")
        demo.out.detail(f"{len(third)} Flux/Velero/Argo CRDs Established: {', '.join(third)}")


def _stop_kubernetes(demo: Demo) -> None:
    if demo.plane is None:
        return
    started = time.monotonic()
    demo.plane.stop()
    shutil.rmtree(demo.workdir / "kubernetes" / "etcd", ignore_errors=True)
    demo.out.say(
        f"stopped the Kubernetes control plane in {time.monotonic() - started:.1f}s; "
        f"logs kept in {demo.workdir}"
    )


# -- steps 4-12: one asyncio loop, so the in-process mock serves while the demo waits --------


async def _pull_loop(demo: Demo) -> int:
    demo.stop = asyncio.Event()
    _install_signal_handlers(demo)
    try:
        await _start_mock(demo)
        await _start_operator(demo)
        await _register(demo)
        await _enqueue(demo)
        await _observe(demo)
        if demo.args.signed:
            await _tampered(demo)
        _print_summary(demo)
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
        demo.mock_log = _configure_mock_log(demo.workdir / "mock-control-plane.log")
        demo.admin_token = secrets.token_hex(8)
        signer = _signing_key(demo) if demo.args.signed else None
        demo.mock = await MockControlPlane(
            strict_registration=True, admin_token=demo.admin_token, signer=signer
        ).start()
        demo.admin = AdminClient(demo.mock.url, admin_token=demo.admin_token, timeout=10)
        demo.registration_token = f"demo-registration-{secrets.token_hex(6)}"
        demo.mock.add_registration_token(demo.registration_token, CLUSTER_ID)
        demo.out.detail(f"listening on {demo.mock.url} (agent API /api/agent, admin /api/admin)")
        demo.out.detail(f"issued a one-time registration token for cluster {CLUSTER_ID}")


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
        probes = f"127.0.0.1:{_free_port()}"
        argv = [
            *("-m", "vworkspace", "run", "--kubeconfig", str(demo.kubeconfig), "--agent-enabled"),
            *("--control-plane-base-url", demo.mock.url, "--log-format", "json"),
            "--allow-insecure-control-plane",  # the demo's mock is plain http on 127.0.0.1
            *("--health-probe-bind-address", probes),
            *("--metrics-bind-address", f"127.0.0.1:{_free_port()}"),
        ]
        if demo.args.signed:
            await _trust_key(demo)
            argv.append("--agent-require-signed-jobs")
        _operator_environment(demo)
        log = demo.workdir / "operator.log"
        log.unlink(missing_ok=True)
        demo.operator = ManagedProcess(name="operator", argv=[sys.executable, *argv], log_path=log)
        demo.operator.start()
        demo.out.detail(f"POD_NAMESPACE={OPERATOR_NAMESPACE} python {shlex.join(argv)}")
        await _wait_for(
            demo, what="the operator's /readyz", probe=_http_ok(f"http://{probes}/readyz")
        )
        demo.out.detail(f"operator ready (pid {demo.operator.pid}, log {log})")


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
        code = await _run_child(demo, argv, what="`python -m vworkspace register` to finish")
        if code != 0:
            raise RuntimeError(f"`python -m vworkspace register` exited with {code}")
        if demo.mock.state.token_for(CLUSTER_ID) is None:
            raise RuntimeError(f"the mock issued no bearer token for {CLUSTER_ID}")
        demo.out.detail("the mock exchanged the one-time token for the agent's bearer token")


async def _run_child(demo: Demo, argv: list[str], *, what: str) -> int:
    """Run ``python argv``, printing its output as details; its exit code. Fails early when the
    operator or the control plane dies meanwhile."""
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
                _check_processes(demo)
                await asyncio.wait({relay}, timeout=POLL_SECONDS)
            await relay
            return await proc.wait()
    except TimeoutError:
        raise TimeoutError(f"timed out after {limit:g}s waiting for {what}") from None
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
    key = demo.sample_key()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": JOB_ID,
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{key.namespace}/{key.name}@1",
        "createdAt": now,
        "payload": demo.sample,
    }


async def _enqueue(demo: Demo) -> None:
    assert demo.admin is not None
    with demo.out.step("enqueue"):
        await demo.admin.enqueue(CLUSTER_ID, _job(demo))
        chart = demo.sample["spec"].get("chart") or {}
        demo.out.detail(
            f"POST {demo.admin.base_url}/api/admin/enqueue: job {JOB_ID}, kind apply, "
            f"ApplicationInstance {demo.sample_key()} (chart {chart.get('name')} "
            f"{chart.get('version')} from {chart.get('url')})"
        )


async def _observe(demo: Demo) -> None:
    await _await_ack(demo)
    await _await_instance(demo)
    await _await_helmrelease(demo)
    await _await_result(demo)
    await _await_events(demo)


async def _await_ack(demo: Demo) -> None:
    mock = demo.mock
    assert mock is not None

    async def acked() -> bool | None:
        return True if mock.was_acked(JOB_ID) else None

    with demo.out.step("ack"):
        await _wait_for(demo, what=f"the agent to ack job {JOB_ID}", probe=acked)
        demo.out.detail(f"job {JOB_ID} acked: delivered to the agent over its long poll")


def _get(
    demo: Demo, *, resource: ResourceType, key: ObjectKey
) -> Callable[[], Awaitable[JsonObj | None]]:
    kube = demo.kube
    assert kube is not None

    async def probe() -> JsonObj | None:
        try:
            return await kube.get(resource, key)
        except NotFoundError:
            return None

    return probe


async def _await_instance(demo: Demo) -> None:
    key = demo.sample_key()
    with demo.out.step("instance"):
        instance = await _wait_for(
            demo,
            what=f"ApplicationInstance {key}",
            probe=_get(demo, resource=APPLICATION_INSTANCES, key=key),
        )
        labels = instance["metadata"].get("labels") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        demo.out.detail(f"ApplicationInstance {key} created by the agent (labels: {shown})")


async def _await_helmrelease(demo: Demo) -> None:
    ns = demo.sample_key().namespace
    key = ObjectKey(ns, demo.sample["spec"]["release"]["name"])
    with demo.out.step("helmrelease"):
        release = await _wait_for(
            demo, what=f"HelmRelease {key}", probe=_get(demo, resource=HELM_RELEASES, key=key)
        )
        chart = ((release.get("spec") or {}).get("chart") or {}).get("spec") or {}
        source = chart.get("sourceRef") or {}
        demo.out.detail(
            f"HelmRelease {key} created by the operator (chart {chart.get('chart')} "
            f"{chart.get('version')} from {source.get('kind')} {ns}/{source.get('name')})"
        )
        demo.out.detail(
            "no Flux controller runs in this demo, so the HelmRelease gets no status and will "
            "not become Ready; on a cluster with Flux it would install the chart"
        )


async def _await_result(demo: Demo) -> None:
    admin = demo.admin
    assert admin is not None
    with demo.out.step("result"):
        result = await _wait_for(
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
            f"job result: succeeded (appliedRef {ref.get('kind')} {ref.get('namespace')}/"
            f"{ref.get('name')}, uid {ref.get('uid')}, generation {ref.get('generation')})"
        )


async def _await_events(demo: Demo) -> None:
    admin = demo.admin
    assert admin is not None
    key = demo.sample_key()

    async def delivered() -> list[JsonObj] | None:
        found = await admin.events(
            CLUSTER_ID, kind="ApplicationInstance", namespace=key.namespace or "", name=key.name
        )
        return found or None

    with demo.out.step("events"):
        demo.events = await _wait_for(
            demo, what=f"condition events of ApplicationInstance {key}", probe=delivered
        )
        demo.out.detail(
            f"{len(demo.events)} condition events delivered for ApplicationInstance {key}:"
        )
        for event in demo.events:
            for cond in event.get("conditions") or []:
                message = f": {cond['message']}" if cond.get("message") else ""
                demo.out.detail(
                    f"  {cond.get('type')}={cond.get('status')} ({cond.get('reason')}){message}"
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
    sample = {**demo.sample, "metadata": {**demo.sample["metadata"], "name": "tampered-app"}}
    key = ObjectKey(demo.sample_key().namespace, "tampered-app")
    with demo.out.step("tampered"):
        job = {"id": TAMPERED_JOB_ID, "kind": "apply", "payload": sample}
        await admin.enqueue(CLUSTER_ID, job, signing="tampered-payload")
        demo.out.detail(
            f"job {TAMPERED_JOB_ID}: signed by the mock, then its payload changed "
            f"(ApplicationInstance {key}, one label added)"
        )
        result = await _wait_for(
            demo,
            what=f"the result of job {TAMPERED_JOB_ID}",
            probe=lambda: admin.job_result(TAMPERED_JOB_ID),
        )
        error = str(result.get("error", ""))
        if result.get("outcome") != "failed" or not error.startswith("signature:"):
            raise RuntimeError(f"the tampered job was not refused: {result}")
        demo.out.detail(f"job result: failed: {error}")
        if await _get(demo, resource=APPLICATION_INSTANCES, key=key)() is not None:
            raise RuntimeError(f"ApplicationInstance {key} exists: the tampered job was applied")
        demo.out.detail(f"ApplicationInstance {key} does not exist: nothing was applied")


async def _wait_for(demo: Demo, *, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``probe`` until it returns a value; fail naming ``what`` after the step timeout,
    or at once when the operator or the control plane has died."""
    deadline = time.monotonic() + demo.timeout
    while True:
        _check_processes(demo)
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {demo.timeout:g}s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


def _check_processes(demo: Demo) -> None:
    if demo.operator is not None:
        code = demo.operator.exit_code()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            raise RuntimeError(
                f"the operator {how}; the end of {demo.operator.log_path}:\n"
                f"{demo.operator.log_tail(20)}"
            )
    if demo.plane is not None:
        demo.plane.check_alive()


# -- summary, wait, shutdown -----------------------------------------------------------------


def _print_summary(demo: Demo) -> None:
    assert demo.mock is not None
    url, header = demo.mock.url, f"{ADMIN_HEADER}: {demo.admin_token}"
    key = demo.sample_key()
    lines = [
        "",
        f"  kubeconfig:          {demo.kubeconfig}",
        f"    kubectl --kubeconfig {demo.kubeconfig} get applicationinstances,helmreleases -A",
        f"  mock control plane:  {url}  (admin token {demo.admin_token}, header {ADMIN_HEADER})",
        f"    curl -H '{header}' '{url}/api/admin/events?cluster={CLUSTER_ID}'",
        f"    curl -H '{header}' {url}/api/admin/jobs/{JOB_ID}/result",
        f"  operator log:        {demo.workdir / 'operator.log'}  (JSON lines)",
        f"  mock request log:    {demo.workdir / 'mock-control-plane.log'}",
        f"  Kubernetes logs:     {demo.workdir / 'kubernetes' / 'logs'}",
        "",
        f"demo complete: job {JOB_ID} went from the control plane through the agent to "
        f"ApplicationInstance {key} and its HelmRelease; result succeeded, "
        f"{len(demo.events)} condition events back ({len(demo.out.steps)} steps in "
        f"{demo.out.elapsed():.1f}s)",
    ]
    if demo.args.signed:
        lines.insert(6, f"    curl -H '{header}' {url}/api/admin/jobs/{TAMPERED_JOB_ID}/result")
        lines[-1] += f"; signed with key {KEY_ID}, tampered job {TAMPERED_JOB_ID} refused"
    print("\n".join(lines), flush=True)


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
            _check_processes(demo)
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

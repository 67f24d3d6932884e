"""`python -m vworkspace testenv start`: run the test control plane in the foreground.

For trying the operator (or kubectl) against a real API server without a cluster. The binaries
are found as the tests find them (VWORKSPACE_TEST_ASSETS, KUBEBUILDER_ASSETS, the cache); with
``--build`` an empty cache is filled from the Go module proxy first.

``--with kwok,flux`` adds components on top of the control plane, each ready-checked before the
kubeconfig is printed. They are a small registry (:data:`COMPONENTS`): a component names the
ones it implies (kwok implies the scheduler: simulated Nodes nobody schedules onto are of no use)
and a start function returning something that can be checked and stopped, so adding one (Flux,
Velero, ...) is one entry. ``flux`` implies ``charts`` (the local chart repository), so what it
installs is at hand. ``velero`` implies ``s3`` (SeaweedFS ``weed mini``, the bucket it backs up
to) and reads that component's endpoint and credentials file from :attr:`Options.started`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import attrs

from vworkspace.api import crdgen
from vworkspace.testing import assets as assets_mod
from vworkspace.testing.argo import start_argo
from vworkspace.testing.chartrepo import (
    SAMPLE_CHARTS_PORT,
    ChartRepository,
    start_chart_repository,
)
from vworkspace.testing.controlplane import (
    SCHEDULER,
    WORKLOAD_CONTROLLER_MANAGER,
    ControlPlane,
    ControlPlaneError,
)
from vworkspace.testing.crds import install_crds
from vworkspace.testing.flux import start_flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.s3 import SeaweedS3, start_seaweed_s3
from vworkspace.testing.velero import start_velero


class Running(Protocol):
    """A started component: checked every second while the control plane runs, stopped on exit
    (in reverse start order)."""

    def check_alive(self) -> None: ...

    def stop(self) -> None: ...


@attrs.frozen
class Options:
    """What the command line says about the components (one field per setting, so a start
    function reads what it needs and nothing else), and the components started so far."""

    charts_port: int = SAMPLE_CHARTS_PORT
    started: dict[str, Running] = attrs.field(factory=dict, eq=False)
    """By name, filled in start order; a component reads those it implies (velero: s3)."""


@attrs.frozen
class Component:
    """One ``--with`` choice."""

    summary: str
    start: Callable[[ControlPlane, assets_mod.Assets, Options], tuple[Running, str]]
    """Start it against a running control plane; returns it and one line for the summary."""
    implies: tuple[str, ...] = ()


class _PlaneParts:
    """The scheduler and the workload controllers live and die with the control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def check_alive(self) -> None:
        self.plane.check_alive()

    def stop(self) -> None:
        """Nothing: :meth:`ControlPlane.stop` stops them."""


def _start_scheduler(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    plane.start_workload_controllers()
    plane.start_scheduler()
    return _PlaneParts(plane), f"{SCHEDULER} + {WORKLOAD_CONTROLLER_MANAGER}: running"


def _start_kwok(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    nodes = KwokNodes(plane=plane, assets=assets)
    nodes.start()
    return nodes, (
        f"kwok: {len(nodes.names)} Nodes Ready in {nodes.ready_seconds:.1f}s "
        f"({', '.join(nodes.names)}; log {nodes.log_path})"
    )


class _ServedCharts:
    """The local chart repository, served from a thread of this process."""

    def __init__(self, repo: ChartRepository) -> None:
        self.repo = repo

    def check_alive(self) -> None:
        """Nothing to check: the thread lives as long as this process."""

    def stop(self) -> None:
        self.repo.stop()


def _start_charts(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    """On a fixed port by default (:data:`SAMPLE_CHARTS_PORT`), so the URL in
    ``manifests/samples/applicationinstance-demo-app.yaml`` is the one served here."""
    try:
        repo = start_chart_repository(dict(os.environ), port=options.charts_port)
    except OSError as err:
        raise ControlPlaneError(
            f"the chart repository cannot listen on 127.0.0.1:{options.charts_port} ({err}); "
            "pass --charts-port with a free port, or 0 for any"
        ) from err
    return _ServedCharts(repo), (
        f"charts: the project's demo-app chart (0.1.0, 0.2.0) served at {repo.url} "
        "(an ApplicationInstance's spec.chart.url)"
    )


def _start_flux(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    flux = start_flux(plane, dict(os.environ))
    return flux, flux.summary()


def _start_s3(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    s3 = start_seaweed_s3(dict(os.environ), beside=assets.directory)
    return s3, s3.summary()


def _start_velero(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    s3 = options.started.get("s3")
    if not isinstance(s3, SeaweedS3):  # resolve_components puts s3 first; this is a bug guard
        raise ControlPlaneError("velero needs the s3 component started before it")
    # The project's CRDs first: Velero learns what it can back up when it starts and then only
    # every 5 minutes, so a Velero started before them would back up no ApplicationInstance.
    install_crds(plane.rest(), [crdgen.crd(info) for info in crdgen.RESOURCES])
    velero = start_velero(plane, dict(os.environ), s3)
    return velero, velero.summary()


def _start_argo(
    plane: ControlPlane, assets: assets_mod.Assets, options: Options
) -> tuple[Running, str]:
    """Argo's workflow-controller with the Argo CRDs; its Workflow Pods run on kwok's Nodes,
    whose stage finishes them (so ``argo`` implies ``kwok``)."""
    controller = start_argo(plane, dict(os.environ))
    return controller, controller.summary()


COMPONENTS: dict[str, Component] = {
    "scheduler": Component(
        summary="kube-scheduler and the workload controllers (Deployment, Job, ...)",
        start=_start_scheduler,
    ),
    "kwok": Component(
        summary="kwok with simulated Nodes that go Ready; Pods run on them",
        start=_start_kwok,
        implies=("scheduler",),
    ),
    "charts": Component(
        summary="a Helm HTTP repository on 127.0.0.1 with the project's demo-app chart",
        start=_start_charts,
    ),
    "flux": Component(
        summary="Flux source-controller and helm-controller (built from their Go modules)",
        start=_start_flux,
        implies=("charts",),
    ),
    "s3": Component(
        summary="SeaweedFS weed mini: an S3 endpoint on 127.0.0.1 with its own keys and the "
        "bucket velero",
        start=_start_s3,
    ),
    "velero": Component(
        summary="the Velero server with the AWS plugin, backing up to the s3 bucket",
        start=_start_velero,
        implies=("s3",),
    ),
    "argo": Component(
        summary="Argo Workflows' workflow-controller (built from its Go module); Workflow Pods "
        "run on kwok's Nodes",
        start=_start_argo,
        implies=("kwok",),
    ),
}


def resolve_components(spec: str) -> list[str]:
    """The components a ``--with`` value asks for, each after the ones it implies, no repeats.

    Raises ValueError naming an unknown component and the known ones.
    """
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        component = COMPONENTS.get(name)
        if component is None:
            raise ValueError(
                f"--with: unknown component {name!r} (known: {', '.join(sorted(COMPONENTS))})"
            )
        for implied in component.implies:
            add(implied)
        order.append(name)

    for raw in spec.split(","):
        name = raw.strip()
        if name:
            add(name)
    return order


def _components_arg(value: str) -> list[str]:
    try:
        return resolve_components(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


EPILOG = """\
The binaries are looked up in $VWORKSPACE_TEST_ASSETS, then $KUBEBUILDER_ASSETS, then
~/.cache/vworkspace/testenv/v<version>/bin (filled by scripts/build-test-assets.sh or --build).
Stop with Ctrl-C or SIGTERM; the data directory is removed unless --data-dir was given."""


def add_parser(commands: Any, *, summary: str) -> None:
    testenv = commands.add_parser(
        "testenv",
        help=summary,
        description="A real local Kubernetes control plane for development and tests.",
    )
    sub = testenv.add_subparsers(dest="testenv_command", metavar="ACTION", required=True)
    start = sub.add_parser(
        "start",
        help="start the control plane in the foreground",
        description="Start etcd, kube-apiserver and kube-controller-manager on loopback and "
        "wait until the API server is ready; stop on Ctrl-C or SIGTERM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument(
        "--kubeconfig-out",
        type=Path,
        metavar="PATH",
        help="also write the admin kubeconfig to PATH",
    )
    start.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="keep etcd data, logs and certificates in DIR (kept after exit)",
    )
    start.add_argument(
        "--no-controller-manager",
        action="store_true",
        help="do not run kube-controller-manager (no garbage collection)",
    )
    start.add_argument(
        "--start-timeout",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long to wait for /readyz (default: %(default)s)",
    )
    start.add_argument(
        "--with",
        dest="components",
        type=_components_arg,
        default=[],
        metavar="A,B",
        help="also start these components, comma-separated: "
        + "; ".join(f"{name} ({c.summary})" for name, c in COMPONENTS.items()),
    )
    start.add_argument(
        "--charts-port",
        type=_port_arg,
        default=SAMPLE_CHARTS_PORT,
        metavar="PORT",
        help="the local chart repository's port on 127.0.0.1 (with charts or flux; default "
        "%(default)s, the URL manifests/samples/applicationinstance-demo-app.yaml names; 0: any)",
    )
    start.add_argument(
        "--build",
        action="store_true",
        help="build the binaries from the Go module proxy if none are found",
    )
    start.set_defaults(handler=run_start)


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--charts-port: {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--charts-port: {port} is not a port (0-65535)")
    return port


def find_assets(*, build: bool) -> assets_mod.Assets:
    """The binaries, as the tests find them; with ``build`` an empty cache is filled first.
    Shared with ``demo``."""
    env = dict(os.environ)
    try:
        return assets_mod.find_assets(env)
    except assets_mod.AssetsNotFoundError:
        if not build:
            raise
        return assets_mod.build_assets(env)


def new_control_plane(
    assets: assets_mod.Assets,
    *,
    data_dir: Path | None,
    start_timeout: float,
    controller_manager: bool = True,
) -> ControlPlane:
    """A (not yet started) control plane; kube-controller-manager when the assets have it."""
    return ControlPlane(
        assets=assets,
        data_dir=data_dir,
        start_timeout=start_timeout,
        with_controller_manager=assets.has_controller_manager and controller_manager,
    )


def copy_kubeconfig(plane: ControlPlane, dest: Path) -> Path:
    """Copy the admin kubeconfig to ``dest`` (mode 0600); returns its absolute path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plane.kubeconfig_path, dest)
    dest.chmod(0o600)
    return dest.resolve()


def run_start(args: argparse.Namespace) -> int:
    try:
        assets = find_assets(build=args.build)
    except assets_mod.AssetsNotFoundError as err:
        print(f"error: {err}\n(or pass --build)", file=sys.stderr)
        return 1
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    plane = new_control_plane(
        assets,
        data_dir=args.data_dir,
        start_timeout=args.start_timeout,
        controller_manager=not args.no_controller_manager,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"starting Kubernetes control plane from {assets.directory} ({assets.source}) ...",
        flush=True,
    )
    running: list[Running] = []
    lines: list[str] = []
    options = Options(charts_port=args.charts_port)
    try:
        plane.start()
        for name in args.components:
            print(f"starting {name} ...", flush=True)
            component, line = COMPONENTS[name].start(plane, assets, options)
            running.append(component)
            options.started[name] = component
            lines.append(line)
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        _stop_all(running, plane)
        return 1
    kubeconfig = plane.kubeconfig_path
    if args.kubeconfig_out is not None:
        kubeconfig = copy_kubeconfig(plane, args.kubeconfig_out)
    kcm = "running" if plane.with_controller_manager else "not running"
    print(
        f"control plane ready in {plane.startup_seconds:.1f}s\n"
        f"  API server:              {plane.server}\n"
        f"  kube-controller-manager: {kcm}\n"
        + "".join(f"  {line}\n" for line in lines)
        + f"  data directory:          {plane.data_dir}\n"
        f"  kubeconfig:              {kubeconfig}\n"
        f"\n  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl --kubeconfig {kubeconfig} get --raw /readyz\n"
        f"\nPress Ctrl-C to stop.",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            plane.check_alive()
            for component in running:
                component.check_alive()
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        started = time.monotonic()
        _stop_all(running, plane)
        print(f"stopped in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def _stop_all(running: list[Running], plane: ControlPlane) -> None:
    for component in reversed(running):
        component.stop()
    plane.stop()

"""`python -m vworkspace demo` and scripts/dev-pull-loop.sh, run as a user runs them.

The demo starts its own Kubernetes control plane, simulated Nodes (kwok), a chart repository,
Flux's real source-controller and helm-controller, the mock control plane and the operator; the
application is installed for real. These tests check the printed steps, that the install really
happened (read back from the cluster while the demo waits for Ctrl-C, not only from what it
prints), the exit codes, the failure message of a step that does not happen, and that nothing it
started is left running (every process it starts has the work dir in its command line or its
environment: etcd's data dir, the apiserver's certificates, the kubeconfig of the controllers,
kwok and Flux, the operator and register; with ``--backup``, weed and Velero, whose HOME is
in it).

``--backup`` shares the ``--exit`` run (the install steps are the same with and without it; the
run without ``--exit`` checks that nothing of it starts without the option): S3 and the real
Velero start, a Backup Operation goes the Pull path, and the step listing the bucket must name
the backup's objects. The run prints ``velero-phases:`` lines, like the real tier's.

Marked ``real`` as well: the real controllers write the status the demo waits for. The demo
runs its own control plane, so it does not disturb the session's (whose ``control_plane``
fixture only makes sure the binaries exist).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.devtools.demo_backup import find_backup_binaries
from vworkspace.testing import ControlPlane
from vworkspace.testing.crds import THIRD_PARTY_ENV, third_party_dir
from vworkspace.testing.flux import FluxError, find_controllers
from vworkspace.testing.pytest_plugin import unavailable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.real,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find leftover processes"),
]

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "vworkspace", "demo"]
STEPS = 20
BACKUP_STEPS = (
    26  # --backup: S3, Velero, the Backup job, Velero's Backup, the Operation, the bucket
)
# What a user must see, in this order: the job, then each hop of the real install.
MILESTONES = (
    "API server https://127.0.0.1:",
    "CRDs Established",
    "Nodes Ready in",
    "/index.yaml: demo-app 0.1.0",
    "source-controller v1.9.1 and helm-controller v1.4.5 ready in",
    "operator ready (/readyz answers 200): ServiceAccount vworkspace-system/vworkspace-operator",
    "registered: cluster id demo-cluster-1",
    "job demo-apply-1 acked",
    "ApplicationInstance demo/hello created by the agent",
    "job result: succeeded",
    "HelmRelease demo/hello: chart demo-app 0.1.0",
    "HelmChart demo/demo-hello Ready: pulled 'demo-app' chart with version '0.1.0'",
    "Deployment demo/hello-demo-app created by helm-controller",
    "Available=True, 2/2 replicas ready",
    "Ready=True/InstallSucceeded",
    "Ready=True/HelmReleaseReady",
    "-> True/HelmReleaseReady",
    "no request refused (403)",
    "demo complete:",
)
# --backup, after the install: what a user must see, in this order.
BACKUP_MILESTONES = (
    "weed mini ready in",
    "BackupStorageLocation velero/default Available",
    "job demo-backup-1 (kind apply): Operation demo/hello-backup, type Backup, engine velero",
    "job demo-backup-1 acked, result: succeeded (applied Operation demo/hello-backup)",
    "Backup velero/demo--hello-backup: namespaces ['demo'], storage location default:",
    "Velero Backup phases seen: ",
    "Succeeded=True/EngineCompleted: Backup Completed",
    "Operation phases seen: ",
    "objects, ",
    "demo--hello-backup.tar.gz (",
    "velero-backup.json (",
)
# The whole --backup run: the install's milestones, the backup's, then the summary's.
ALL_MILESTONES = (*MILESTONES[:-2], *BACKUP_MILESTONES, *MILESTONES[-2:])


@pytest.fixture(scope="module")
def demo_env(control_plane: ControlPlane, third_party_crds: list[str]) -> dict[str, str]:
    """The environment the demo runs in: the session's binaries (which must include kwok and
    Flux's controllers: skip saying so, or fail under VWORKSPACE_REQUIRE_TESTENV as CI runs)."""
    assets = control_plane.assets
    missing = list(assets.missing_for_nodes())
    try:
        find_controllers(os.environ, beside=assets.directory)
    except FluxError as err:
        missing.append(str(err))
    if missing:
        unavailable(
            f"the demo needs {'; '.join(missing)} (scripts/build-test-assets.sh builds them)"
        )
    return {**os.environ, "VWORKSPACE_TEST_ASSETS": str(assets.directory)}


@pytest.fixture(scope="module")
def backup_binaries(demo_env: dict[str, str]) -> None:
    """``--backup`` also needs weed, velero and velero-plugin-for-aws: skip saying so, or fail
    under VWORKSPACE_REQUIRE_TESTENV as CI runs."""
    try:
        find_backup_binaries(demo_env, beside=Path(demo_env["VWORKSPACE_TEST_ASSETS"]))
    except RuntimeError as err:
        unavailable(str(err))


def processes_mentioning(text: str) -> dict[int, str]:
    """Live processes with ``text`` in their command line or environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if (text in cmdline or text in environ) and state != "Z":
            found[int(entry.name)] = cmdline[:120]
    return found


def leftovers(workdir: Path, timeout: float = 5.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (found := processes_mentioning(str(workdir))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def assert_steps_in_order(
    out: str, *, steps: int = STEPS, milestones: tuple[str, ...] = MILESTONES
) -> None:
    numbered = [f"{n:>2}/{steps} " for n in range(1, steps + 1)]
    positions = [out.find(text) for text in (*numbered, *milestones)]
    missing = [text for text, at in zip((*numbered, *milestones), positions, strict=True) if at < 0]
    assert not missing, f"missing {missing} in:\n{out}"
    assert positions[:steps] == sorted(positions[:steps]), out
    assert positions[steps:] == sorted(positions[steps:]), out
    assert f" {steps + 1}/" not in out, out


def print_condition_sequences(out: str) -> None:
    """The real tier's ``flux-conditions:`` lines, from what the demo saw; the time is from the
    job queued to Ready=True at the control plane."""
    took = re.search(r"([\d.]+)s after the job was queued", out)
    assert took is not None, out
    for kind in ("HelmRelease", "ApplicationInstance"):
        match = re.search(rf"{kind} conditions seen: (.*)", out)
        assert match is not None, out
        print(f"\nflux-conditions: demo, {kind} demo/hello install ({took[1]}s): {match[1]}")


def kubectl_json(plane: ControlPlane, kubeconfig: Path, *args: str) -> JsonObj:
    done = subprocess.run(
        [str(plane.assets.directory / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: JsonObj = json.loads(done.stdout)
    return result


def condition(obj: JsonObj, type_: str) -> JsonObj:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def print_backup_sequences(out: str) -> None:
    """The real tier's ``velero-phases:`` lines, from what the demo saw: the Velero Backup's
    phases, and the Operation's phases and conditions; the time is from the Backup job queued to
    Succeeded=True at the control plane."""
    took = re.search(r"Succeeded=True at the control plane ([\d.]+)s after the job was queued", out)
    phases = re.search(r"Velero Backup phases seen: (.*)", out)
    operation = re.search(r"Operation phases seen: (.*); conditions seen: (.*)", out)
    assert took is not None, out
    assert phases is not None, out
    assert operation is not None, out
    print(f"\nvelero-phases: demo, Backup velero/demo--hello-backup ({took[1]}s): {phases[1]}")
    print(f"velero-phases: demo, Operation demo/hello-backup phases: {operation[1]}")
    print(f"velero-phases: demo, Operation demo/hello-backup conditions: {operation[2]}")


def test_demo_exit_with_backup_installs_backs_up_into_s3_and_leaves_nothing_running(
    demo_env: dict[str, str], backup_binaries: None, tmp_path: Path
) -> None:
    """The plain install and the --backup steps in one run (the install part is the same with
    and without --backup; the SIGTERM test below runs without it)."""
    workdir = tmp_path / "demo"
    started = time.monotonic()
    proc = subprocess.run(
        [*DEMO, "--exit", "--backup", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=demo_env,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert_steps_in_order(out, steps=BACKUP_STEPS, milestones=ALL_MILESTONES)
    # The instance grants Backup Operations to Velero, as an Operation's target must.
    assert (
        "values {'replicas': 2, 'message': 'hello from the vworkspace demo'}, annotation ops.vworkspace.io/backup=velero"
        in out
    )
    pods = re.findall(r"Pod demo/hello-demo-app-\S+ on (kwok-node-\d): Running", out)
    assert len(pods) == 2, out
    kubeconfig = workdir / "kubeconfig"
    assert f"kubectl --kubeconfig {kubeconfig} get applicationinstances,helmreleases" in out
    assert "X-Mock-Control-Plane-Admin-Token" in out
    assert f"operator log:        {workdir / 'operator.log'}" in out
    assert '"msg": "job done"' in (workdir / "operator.log").read_text()
    # helm-controller's own record of the install, in the log the demo points at.
    assert "running 'install' action" in (workdir / "flux/logs/helm-controller.log").read_text()
    # The bucket step: the count it prints is the objects it names, the backup's own among them.
    listing = re.search(
        r"s3://\S+/backups/demo--hello-backup/ at http://127\.0\.0\.1:\d+: (\d+) objects", out
    )
    assert listing is not None, out
    named = re.findall(
        r"^\[\s*[\d.]+s\]\s{7}(demo--hello-backup\S*|velero-backup\.json) \(\d+ bytes\)$", out, re.M
    )
    assert len(named) == int(listing[1]) >= 2, (named, out)
    assert {"velero-backup.json", "demo--hello-backup.tar.gz"} <= set(named), named
    assert "--exit: stopping" in out
    assert "stopped Velero, S3, Flux, kwok and the Kubernetes control plane" in out
    assert leftovers(workdir) == {}, out
    assert not (workdir / "kubernetes" / "etcd").exists()  # the bulky part is removed
    print_condition_sequences(out)
    print_backup_sequences(out)
    print(f"demo --exit --backup took {elapsed:.1f}s; backup objects: {', '.join(named)}")


def test_demo_keeps_running_with_the_install_in_place_until_sigterm_then_stops_everything(
    demo_env: dict[str, str], control_plane: ControlPlane, tmp_path: Path
) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [*DEMO, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env,
    )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C to stop" in line:
                break
        out = "".join(lines)
        assert "press Ctrl-C to stop" in out, out
        assert_steps_in_order(out)
        # What the demo printed is what the cluster holds: read back, independently of it.
        kubeconfig = workdir / "kubeconfig"
        instance = kubectl_json(
            control_plane,
            kubeconfig,
            "get",
            "applicationinstance",
            "-n",
            "demo",
            "hello",
            "-o",
            "json",
        )
        ready = condition(instance, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "HelmReleaseReady"), instance
        assert instance["status"]["observedGeneration"] == instance["metadata"]["generation"]
        release = kubectl_json(
            control_plane, kubeconfig, "get", "helmrelease", "-n", "demo", "hello", "-o", "json"
        )
        ready = condition(release, "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "InstallSucceeded"), release
        latest = release["status"]["history"][0]
        assert (latest["status"], latest["chartVersion"]) == ("deployed", "0.1.0")
        deployment = kubectl_json(
            control_plane,
            kubeconfig,
            "get",
            "deployment",
            "-n",
            "demo",
            "hello-demo-app",
            "-o",
            "json",
        )
        assert condition(deployment, "Available")["status"] == "True", deployment
        assert deployment["status"]["readyReplicas"] == 2
        pods = kubectl_json(control_plane, kubeconfig, "get", "pods", "-n", "demo", "-o", "json")
        placed = [(p["spec"].get("nodeName", ""), p["status"]["phase"]) for p in pods["items"]]
        assert len(placed) == 2, placed
        assert all(node.startswith("kwok-node-") and phase == "Running" for node, phase in placed)
        # ... and the control plane got Ready=True for the instance.
        match = re.search(r"curl -H '(\S+): (\S+)' '(http://\S+/api/admin/events\?\S+)'", out)
        assert match is not None, out
        request = urllib.request.Request(match[3], headers={match[1]: match[2]})
        with urllib.request.urlopen(request, timeout=10) as resp:
            events = json.loads(resp.read())["events"]
        assert any(
            c["type"] == "Ready" and c["status"] == "True"
            for event in events
            if (event.get("resourceRef") or {}).get("name") == "hello"
            for c in event.get("conditions") or []
        ), events
        running = processes_mentioning(str(workdir))
        assert running, "nothing running while the demo waits"
        # Without --backup nothing of it starts: no S3, no Velero, no backup step.
        programs = {Path(cmdline.split(" ", 1)[0]).name for cmdline in running.values()}
        assert not programs & {"weed", "velero"}, running
        assert "start S3" not in out, out
        assert "Backup Operation" not in out, out
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, out + rest
        assert "stopped the operator" in rest
        assert "stopped Flux, kwok and the Kubernetes control plane" in rest
        assert leftovers(workdir) == {}, out + rest
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def helm_controller_of(workdir: Path) -> int | None:
    """The demo's helm-controller: the binary whose environment names the demo's kubeconfig."""
    for pid, cmdline in processes_mentioning(str(workdir)).items():
        if cmdline.split(" ", 1)[0].endswith("/helm-controller"):
            return pid
    return None


def test_a_step_that_does_not_happen_fails_the_demo_naming_the_step_and_the_log_to_read(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    """helm-controller frozen (SIGSTOP) once it is ready: the install never happens, and the
    demo says which step timed out, what the HelmRelease last said and which logs to read."""
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [*DEMO, "--exit", "--workdir", str(workdir), "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env,
    )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    frozen = None
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if frozen is None and "helm-controller v1.4.5 ready in" in line:
                frozen = helm_controller_of(workdir)
                assert frozen is not None, "".join(lines)
                os.kill(frozen, signal.SIGSTOP)
            if "FAILED" in line and frozen is not None:
                os.kill(frozen, signal.SIGCONT)  # so that it stops at once, not after 10 s
        out = "".join(lines)
        assert proc.wait(timeout=60) == 1, out
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # helm-controller makes the HelmChart that source-controller fetches: frozen, step 15 waits.
    step = f"step 15/{STEPS} (source-controller: fetch the repository index and the chart)"
    assert (
        f"FAILED {step}: the HelmRepository and HelmChart Ready did not happen within 20s; "
        "HelmRelease demo/hello: no conditions yet; no HelmChart yet (helm-controller makes it)"
        in out
    ), out
    logs = workdir / "flux" / "logs"
    helm_log = logs / "helm-controller.log"
    read = f"read {logs / 'source-controller.log'}, {helm_log}"
    assert f"demo failed: {step} did not happen; {read}" in out, out
    assert helm_log.is_file()
    assert "demo complete" not in out
    assert leftovers(workdir) == {}, out


def test_demo_fails_at_once_naming_where_it_looked_for_the_third_party_crds(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-crds-here"
    proc = subprocess.run(
        [*DEMO, "--exit", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**demo_env, "VWORKSPACE_THIRD_PARTY_CRDS": str(missing)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (
        f"FAILED step 1/{STEPS} (find the binaries (Kubernetes, kwok, Flux, helm) and the CRDs): the Flux/Velero/Argo CRDs are not at {missing} ($VWORKSPACE_THIRD_PARTY_CRDS names it"
        in out
    )
    assert f"demo failed: step 1/{STEPS}" in out
    assert f" 2/{STEPS} " not in out  # nothing was started
    assert leftovers(tmp_path / "demo") == {}


def test_demo_backup_without_velero_fails_at_once_naming_what_is_missing_and_how_to_build_it(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    """Every binary the demo needs but velero (links to the real ones), and an empty cache."""
    assets = Path(demo_env["VWORKSPACE_TEST_ASSETS"])
    partial = tmp_path / "bin"
    partial.mkdir()
    for binary in assets.iterdir():
        if binary.name != "velero":
            (partial / binary.name).symlink_to(binary)
    env = {
        **demo_env,
        "VWORKSPACE_TEST_ASSETS": str(partial),
        "VWORKSPACE_TESTENV_CACHE": str(tmp_path / "empty-cache"),
        THIRD_PARTY_ENV: str(third_party_dir(os.environ)),
    }
    proc = subprocess.run(
        [*DEMO, "--exit", "--backup", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    failed = re.search(rf"FAILED step 1/{BACKUP_STEPS} \(.*?\): (.*)", out)
    assert failed is not None, out
    assert (
        f"--backup cannot start Velero: velero and velero-plugin-for-aws are not in {partial} nor "
        in failed[1]
    ), out
    assert "scripts/build-test-assets.sh" in failed[1], out
    assert f" 2/{BACKUP_STEPS} " not in out  # nothing was started
    assert leftovers(tmp_path / "demo") == {}


def test_help_of_the_script_and_the_command() -> None:
    script = subprocess.run(
        ["bash", str(REPO / "scripts" / "dev-pull-loop.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,  # installs into .venv first when pyproject.toml changed
    )
    assert script.returncode == 0, script.stdout + script.stderr
    assert "usage: python -m vworkspace demo" in script.stdout
    assert "--exit" in script.stdout
    assert "--workdir DIR" in script.stdout
    assert "--timeout SECONDS" in script.stdout
    assert "--backup" in script.stdout
    assert "helm-controller" in script.stdout
    top = subprocess.run(
        [sys.executable, "-m", "vworkspace", "--help"], capture_output=True, text=True, timeout=60
    )
    assert top.returncode == 0
    assert "demo" in top.stdout

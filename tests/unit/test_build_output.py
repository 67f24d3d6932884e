"""scripts/build-test-assets.sh keeps the go command's chatter out of the terminal: one line per
component, the chatter in a log per component, the log's end shown when a build fails.

Nothing is built: a fake ``go`` on the PATH prints chatter (``go: downloading ...``) and writes
stand-in binaries, or fails. The script runs from a copy of ``scripts/`` whose sub-steps (the
CRD fetch, kwok, the Flux controllers, weed, Velero and Argo, which have tests of their own) are stubbed out, into a
temporary cache, so the developer's cache is never touched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vworkspace.testing.assets import KUBERNETES_VERSION

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
HELPER = SCRIPTS / "testenv" / "quiet-build.sh"
CHATTER = "go: downloading example.com/chatter v1.0.0"
STUBBED = (
    "fetch-third-party-crds.sh",
    "build-kwok.sh",
    "build-flux-controllers.sh",
    "build-backup-controllers.sh",
)

# A stand-in `go`: chatter on stderr, like the real one; `go build -o DIR/ ./cmd/X...` and
# `go install` write executables that print a version. FAKE_GO_FAIL=<subcommand> makes that
# subcommand fail with a message, as a refused module download would.
FAKE_GO = f"""#!/bin/sh
echo '{CHATTER}' >&2
if [ "$1" = "$FAKE_GO_FAIL" ]; then
  echo "go: example.com/chatter@v1.0.0: reading https://proxy.golang.org: 403 Forbidden" >&2
  exit 1
fi
stand_in() {{ printf '#!/bin/sh\\necho %s\\n' "$2" > "$1"; chmod +x "$1"; }}
case "$1" in
  build)
    shift
    while [ $# -gt 0 ]; do
      case "$1" in
        -o) out=$2; shift ;;
        ./cmd/*) stand_in "$out/${{1#./cmd/}}" "Kubernetes vfake" ;;
      esac
      shift
    done ;;
  install) stand_in "$GOBIN/helm" "vfake+g0" ;;
esac
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A copy of scripts/ with the sub-steps stubbed and a fake ``go`` beside it."""
    copy = tmp_path / "scripts"
    shutil.copytree(SCRIPTS / "testenv", copy / "testenv")
    shutil.copy2(SCRIPTS / "build-test-assets.sh", copy)
    for name in STUBBED:
        (copy / name).write_text("#!/usr/bin/env bash\nexit 0\n")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "go").write_text(FAKE_GO)
    (fake / "go").chmod(0o755)
    return copy


def run(
    tmp_path: Path, script: Path, *args: str, fail: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{tmp_path / 'fakebin'}:/usr/bin:/bin",
        "VWORKSPACE_TESTENV_CACHE": str(tmp_path / "cache"),
        "FAKE_GO_FAIL": fail,
    }
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def bin_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / f"v{KUBERNETES_VERSION}" / "bin"


def test_a_cold_build_prints_one_line_per_component_and_logs_the_chatter(
    tmp_path: Path, scripts: Path
) -> None:
    done = run(tmp_path, scripts / "build-test-assets.sh")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert [line.split(" ... ")[0] for line in lines] == [
        f"build-test-assets: Kubernetes v{KUBERNETES_VERSION} (etcd kube-apiserver "
        "kube-controller-manager kubectl; tens of minutes cold on 2 cores)",
        f"build-test-assets: kube-scheduler v{KUBERNETES_VERSION}",
        "build-test-assets: helm v3.22.0 (about 2 minutes on 2 cores)",
    ]
    # Each line ends with the time and what the built binary says it is.
    assert lines[0].endswith("(Kubernetes vfake)"), lines[0]
    assert lines[2].endswith("(vfake+g0)"), lines[2]
    logs = tmp_path / "cache" / "logs"
    for name in ("kubernetes", "kube-scheduler", "helm"):
        assert CHATTER in (logs / f"build-{name}.log").read_text(), name
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm"):
        assert (bin_dir(tmp_path) / binary).is_file(), binary
    assert list(bin_dir(tmp_path).glob(".*-build.*")) == []  # no scratch folder left
    warm = run(tmp_path, scripts / "build-test-assets.sh")
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.splitlines() == [
        f"build-test-assets: Kubernetes v{KUBERNETES_VERSION} binaries and helm v3.22.0 are "
        f"current in {bin_dir(tmp_path)}"
    ]


def test_a_failed_build_shows_the_log_end_and_installs_nothing(
    tmp_path: Path, scripts: Path
) -> None:
    done = run(tmp_path, scripts / "build-test-assets.sh", fail="build")
    assert done.returncode == 1
    assert done.stdout == (
        f"build-test-assets: Kubernetes v{KUBERNETES_VERSION} (etcd kube-apiserver "
        "kube-controller-manager kubectl; tens of minutes cold on 2 cores) ... "
    )
    log = tmp_path / "cache" / "logs" / "build-kubernetes.log"
    assert done.stderr.startswith("FAILED after "), done.stderr
    assert f"the go command's output is in {log}, its end:" in done.stderr
    assert "403 Forbidden" in done.stderr  # the go command's own words, not only "failed"
    assert CHATTER in log.read_text()
    assert not (bin_dir(tmp_path) / ".stamp").exists()
    assert not (bin_dir(tmp_path) / "kube-apiserver").exists()
    assert list(bin_dir(tmp_path).glob(".*-build.*")) == []


def test_the_helper_returns_the_commands_status_and_tails_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    snippet = (
        f"source {HELPER}; QUIET_BUILD_PREFIX=me QUIET_BUILD_TAIL=2; build_start thing; "
        "noisy() { seq 1 50; echo boom >&2; return 3; }; "
        f"build_step {log} noisy; echo status=$?"
    )
    done = subprocess.run(
        ["bash", "-c", snippet], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout == "me: thing ... status=3\n"
    assert done.stderr.splitlines()[1:] == ["50", "boom"]
    assert log.read_text().count("\n") == 52  # its header, 50 numbers and the error

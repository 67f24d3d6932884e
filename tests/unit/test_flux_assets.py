"""scripts/build-flux-controllers.sh and the lookups of vworkspace.testing.flux / chartrepo,
without building anything: a fake cache and a fake `go` stand in for the real ones."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vworkspace.testing.assets import KUBERNETES_VERSION
from vworkspace.testing.chartrepo import ChartRepoError, find_helm, package_charts
from vworkspace.testing.flux import VERSIONS, FluxError, find_controllers

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-flux-controllers.sh"


def run_script(cache: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(cache), "PATH": path, "VWORKSPACE_TESTENV_CACHE": str(cache)}
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def cached_bin(cache: Path) -> Path:
    directory = cache / f"v{KUBERNETES_VERSION}" / "bin"
    directory.mkdir(parents=True)
    return directory


def fake_binary(path: Path) -> None:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_a_current_cache_is_a_no_op_that_needs_no_go(tmp_path: Path) -> None:
    bin_dir = cached_bin(tmp_path)
    for name, version in VERSIONS.items():
        fake_binary(bin_dir / name)
        (bin_dir / f".stamp-{name}").write_text(f"{version}\n")
    done = run_script(tmp_path, "/usr/bin:/bin")  # no go here
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"build-test-assets: source-controller {VERSIONS['source-controller']} is current in {bin_dir}",
        f"build-test-assets: helm-controller {VERSIONS['helm-controller']} is current in {bin_dir}",
    ]


def test_a_failed_build_prints_one_line_and_the_log_tail_and_installs_nothing(
    tmp_path: Path,
) -> None:
    bin_dir = cached_bin(tmp_path)
    fake_go = tmp_path / "fakebin"
    fake_go.mkdir()
    (fake_go / "go").write_text(
        "#!/bin/sh\necho 'go: downloading example.com/chatter v1.0.0' >&2\n"
        "echo 'proxy refused the module' >&2\nexit 1\n"
    )
    (fake_go / "go").chmod(0o755)
    (bin_dir / ".stamp-source-controller").write_text("v0.0.1\n")  # stale
    done = run_script(tmp_path, f"{fake_go}:/usr/bin:/bin")
    assert done.returncode == 1
    # The chatter went to the log, not the terminal; the failure shows the log's tail.
    assert (
        done.stdout == f"build-test-assets: source-controller {VERSIONS['source-controller']} ... "
    )
    assert "FAILED after" in done.stderr
    assert "proxy refused the module" in done.stderr
    log = tmp_path / f"v{KUBERNETES_VERSION}" / "build-flux-controllers.log"
    assert "go: downloading example.com/chatter" in log.read_text()
    assert not (bin_dir / "source-controller").exists()
    assert list(bin_dir.glob(".source-controller-build.*")) == []  # the scratch folder is gone


def test_the_controllers_are_found_beside_the_control_plane_first(tmp_path: Path) -> None:
    beside = tmp_path / "assets"
    beside.mkdir()
    for name in VERSIONS:
        fake_binary(beside / name)
    found = find_controllers({"VWORKSPACE_TESTENV_CACHE": str(tmp_path / "cache")}, beside=beside)
    assert found == {name: beside / name for name in VERSIONS}


def test_missing_controllers_name_where_they_were_looked_for_and_the_script(
    tmp_path: Path,
) -> None:
    with pytest.raises(FluxError) as err:
        find_controllers({"VWORKSPACE_TESTENV_CACHE": str(tmp_path)}, beside=tmp_path / "assets")
    assert str(tmp_path / "assets") in str(err.value)
    assert "scripts/build-test-assets.sh" in str(err.value)


def test_a_named_helm_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-helm"
    with pytest.raises(ChartRepoError, match=str(missing)):
        find_helm({"VWORKSPACE_HELM": str(missing), "PATH": os.defpath})


def test_a_folder_without_chart_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "demo-app").mkdir()
    with pytest.raises(ChartRepoError, match="demo-app is not a chart"):
        package_charts(tmp_path / "helm", tmp_path / "out", source=tmp_path)

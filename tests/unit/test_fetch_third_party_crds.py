"""scripts/fetch-third-party-crds.sh: pinned, verified, and a no-op when the cache is current.

These run the real script with the real `go mod download` (the Go module proxy, or Go's module
cache when it already holds the modules, as it does after scripts/build-test-assets.sh), into a
temporary cache, so the developer's cache is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch-third-party-crds.sh"
LIST = REPO / "scripts" / "testenv" / "third-party-crds.txt"

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None, reason="the script downloads Go modules: needs 'go' on the PATH"
)


def entries() -> list[list[str]]:
    lines = (line.split("#", 1)[0].split() for line in LIST.read_text().splitlines())
    return [fields for fields in lines if fields]


def run(
    cache: Path, *, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VWORKSPACE_THIRD_PARTY_CRDS"}
    env.update({"VWORKSPACE_TESTENV_CACHE": str(cache), **(extra_env or {})})
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_the_list_pins_every_crd_the_project_installs() -> None:
    files = {Path(path).name for _module, _version, path, _sum in entries()}
    assert {
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        "source.toolkit.fluxcd.io_ocirepositories.yaml",
        "source.toolkit.fluxcd.io_helmcharts.yaml",
        # The other three source-controller needs at start (the `real` tier runs it).
        "source.toolkit.fluxcd.io_buckets.yaml",
        "source.toolkit.fluxcd.io_externalartifacts.yaml",
        "source.toolkit.fluxcd.io_gitrepositories.yaml",
        "velero.io_backups.yaml",
        "velero.io_restores.yaml",
        "velero.io_schedules.yaml",
        "velero.io_backupstoragelocations.yaml",
        # The other nine velero server needs at start (the `real` tier runs it).
        "velero.io_backuprepositories.yaml",
        "velero.io_deletebackuprequests.yaml",
        "velero.io_downloadrequests.yaml",
        "velero.io_podvolumebackups.yaml",
        "velero.io_podvolumerestores.yaml",
        "velero.io_serverstatusrequests.yaml",
        "velero.io_volumesnapshotlocations.yaml",
        "velero.io_datadownloads.yaml",
        "velero.io_datauploads.yaml",
        "argoproj.io_workflows.yaml",
        "argoproj.io_workflowtemplates.yaml",
        # The others workflow-controller watches (the `real` tier runs it).
        "argoproj.io_clusterworkflowtemplates.yaml",
        "argoproj.io_cronworkflows.yaml",
        "argoproj.io_workflowartifactgctasks.yaml",
        "argoproj.io_workflowtaskresults.yaml",
        "argoproj.io_workflowtasksets.yaml",
    } == files
    for fields in entries():
        assert len(fields) == 4, fields
        assert len(fields[3]) == 64, fields


def test_fetches_verified_files_and_a_warm_run_downloads_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run(cache)
    assert first.returncode == 0, first.stderr
    for module, version, path, want in entries():
        copied = cache / "crds" / f"{module}@{version}" / Path(path).name
        assert hashlib.sha256(copied.read_bytes()).hexdigest() == want, copied
    # Warm: succeeds with no network and no Go at all (PATH without go, proxy off).
    warm = run(cache, extra_env={"PATH": "/usr/bin:/bin", "GOPROXY": "off"})
    assert warm.returncode == 0, warm.stderr
    assert f"{len(entries())} CRDs are current" in warm.stdout


def test_a_file_whose_sha256_differs_from_the_list_fails_naming_it(tmp_path: Path) -> None:
    rows = entries()
    module, version, path, good = next(r for r in rows if r[2].endswith("velero.io_backups.yaml"))
    bad = "0" * 64
    tampered = tmp_path / "list.txt"
    tampered.write_text(
        "\n".join(" ".join(row if row[2] != path else [module, version, path, bad]) for row in rows)
    )
    cache = tmp_path / "cache"
    done = run(cache, extra_env={"VWORKSPACE_THIRD_PARTY_CRDS_LIST": str(tampered)})
    assert done.returncode == 1
    assert (
        f"{module}@{version}/{path}: sha256 is {good}, but {tampered} expects {bad}" in done.stderr
    )
    assert not (cache / "crds").exists()  # nothing half-written is left for the tests to use


def test_a_corrupted_cache_is_fetched_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert run(cache).returncode == 0
    module, version, path, want = entries()[0]
    cached = cache / "crds" / f"{module}@{version}" / Path(path).name
    cached.write_text("not the CRD")
    again = run(cache)
    assert again.returncode == 0, again.stderr
    assert "fetching" in again.stdout
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == want


def test_an_explicit_folder_wins_and_nothing_is_fetched(tmp_path: Path) -> None:
    done = run(tmp_path / "cache", extra_env={"VWORKSPACE_THIRD_PARTY_CRDS": str(tmp_path)})
    assert done.returncode == 0
    assert "nothing fetched" in done.stdout
    assert not (tmp_path / "cache").exists()

"""Where the control-plane binaries are looked up, and in what order."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from vworkspace.testing import assets

REPO = Path(__file__).resolve().parents[2]


def fake_binaries(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


ALL = (assets.APISERVER, assets.ETCD, assets.CONTROLLER_MANAGER)


def test_pinned_version_matches_the_go_wrapper_module() -> None:
    go_mod = (REPO / "scripts" / "testenv" / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes v(\S+)", go_mod, re.MULTILINE)
    assert match is not None
    assert match.group(1) == assets.KUBERNETES_VERSION


def test_every_staging_module_is_replaced_at_the_matching_version() -> None:
    go_mod = (REPO / "scripts" / "testenv" / "go.mod").read_text()
    staging = "v0." + assets.KUBERNETES_VERSION.split(".", 1)[1]
    replaces = re.findall(r"^replace (k8s\.io/\S+) => (k8s\.io/\S+) (\S+)", go_mod, re.MULTILINE)
    # The 1.36 staging list (docs/development.md, "Another Kubernetes version").
    assert len(replaces) == 33
    for source, target, version in replaces:
        assert source == target
        assert version == staging, source


def test_explicit_directory_wins_over_kubebuilder_and_cache(tmp_path: Path) -> None:
    mine = fake_binaries(tmp_path / "mine", *ALL)
    fake_binaries(tmp_path / "kb", *ALL)
    fake_binaries(tmp_path / "cache" / f"v{assets.KUBERNETES_VERSION}" / "bin", *ALL)
    env = {
        assets.ASSETS_ENV: str(mine),
        assets.KUBEBUILDER_ENV: str(tmp_path / "kb"),
        assets.CACHE_ENV: str(tmp_path / "cache"),
    }
    found = assets.find_assets(env)
    assert found.directory == mine
    assert found.source == assets.ASSETS_ENV
    assert found.has_controller_manager


def test_kubebuilder_assets_without_controller_manager(tmp_path: Path) -> None:
    kb = fake_binaries(tmp_path / "kb", assets.APISERVER, assets.ETCD, "kubectl")
    found = assets.find_assets(
        {assets.KUBEBUILDER_ENV: str(kb), assets.CACHE_ENV: str(tmp_path / "c")}
    )
    assert found.source == assets.KUBEBUILDER_ENV
    assert found.kube_controller_manager is None
    assert not found.has_controller_manager


def test_cache_is_the_last_resort(tmp_path: Path) -> None:
    cache = fake_binaries(tmp_path / "cache" / f"v{assets.KUBERNETES_VERSION}" / "bin", *ALL)
    found = assets.find_assets({assets.CACHE_ENV: str(tmp_path / "cache")})
    assert (found.directory, found.source) == (cache, "cache")


def test_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    directory = assets.cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert (
        directory == tmp_path / "vworkspace" / "testenv" / f"v{assets.KUBERNETES_VERSION}" / "bin"
    )


def test_named_directory_without_binaries_is_an_error_not_a_fallthrough(tmp_path: Path) -> None:
    fake_binaries(tmp_path / "cache" / f"v{assets.KUBERNETES_VERSION}" / "bin", *ALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {assets.ASSETS_ENV: str(empty), assets.CACHE_ENV: str(tmp_path / "cache")}
    with pytest.raises(assets.AssetsNotFoundError, match=r"VWORKSPACE_TEST_ASSETS=.*empty"):
        assets.find_assets(env)


def test_nothing_found_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(assets.AssetsNotFoundError) as err:
        assets.find_assets({assets.CACHE_ENV: str(tmp_path / "nothing")})
    message = str(err.value)
    assert "scripts/build-test-assets.sh" in message
    assert str(tmp_path / "nothing") in message


def test_non_executable_files_do_not_count(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    for name in ALL:
        (directory / name).write_text("not executable")
    with pytest.raises(assets.AssetsNotFoundError):
        assets.find_assets({assets.ASSETS_ENV: str(directory)})


def test_scheduler_and_kwok_are_optional_and_found_next_to_the_apiserver(tmp_path: Path) -> None:
    plain = fake_binaries(tmp_path / "plain", *ALL)
    found = assets.find_assets({assets.ASSETS_ENV: str(plain)})
    assert found.kube_scheduler is None
    assert found.kwok is None
    assert found.missing_for_nodes() == [assets.SCHEDULER, assets.KWOK]

    full = fake_binaries(tmp_path / "full", *ALL, assets.SCHEDULER, assets.KWOK)
    found = assets.find_assets({assets.ASSETS_ENV: str(full)})
    assert found.kube_scheduler == full / assets.SCHEDULER
    assert found.kwok == full / assets.KWOK
    # kwok refuses to start without stages: their absence is named too.
    assert found.missing_for_nodes() == [f"{assets.KWOK_STAGES}/*.yaml"]
    stages = full / assets.KWOK_STAGES
    stages.mkdir()
    (stages / "b.yaml").write_text("kind: Stage\n")
    (stages / "a.yaml").write_text("kind: Stage\n")
    assert found.missing_for_nodes() == []
    assert found.kwok_stages == [stages / "a.yaml", stages / "b.yaml"]


def test_build_script_keeps_the_kubernetes_stamp_apart_from_the_scheduler() -> None:
    # Adding cmd/kube-scheduler must not change the stamp of the four original binaries, or
    # every cache would rebuild them (tens of minutes cold).
    script = (REPO / "scripts" / "build-test-assets.sh").read_text()
    assert "cmd/*/main.go" not in script
    assert "kube_cmds=(etcd kube-apiserver kube-controller-manager kubectl)" in script
    assert ".stamp-kube-scheduler" in script
    mains = sorted(p.parent.name for p in (REPO / "scripts" / "testenv" / "cmd").glob("*/main.go"))
    assert mains == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        assets.SCHEDULER,
        "kubectl",
    ]

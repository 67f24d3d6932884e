"""vworkspace.testing.s3 and .velero without running anything: the command lines, the files with
the keys, the BackupStorageLocation, and the errors when binaries are missing. The real tier
(tests/real/test_velero_server.py) runs both for real."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from vworkspace.testing import s3 as s3_mod
from vworkspace.testing import velero as velero_mod


@pytest.fixture
def s3(tmp_path: Path) -> s3_mod.SeaweedS3:
    store = s3_mod.SeaweedS3(binary=Path("/bin/weed"), data_dir=tmp_path)
    store.ports = {
        name: 40000 + i
        for i, name in enumerate(
            f"{service}{suffix}" for service in s3_mod._SERVICES for suffix in ("", ".grpc")
        )
    }
    return store


def test_weed_listens_on_loopback_only_on_ports_of_its_own(s3: s3_mod.SeaweedS3) -> None:
    argv = s3._argv(s3._write_config())
    assert argv[:3] == ["/bin/weed", "-logtostderr=true", "mini"]
    assert "-ip=127.0.0.1" in argv
    assert "-ip.bind=127.0.0.1" in argv
    ports = [arg.split("=")[1] for arg in argv if ".port" in arg and "=0" not in arg]
    assert len(ports) == 10
    assert len(set(ports)) == 10
    assert "-master.port.grpc=40001" in argv
    assert "-s3.port=40006" in argv
    # Off: nothing a test needs, each a listener (or a call home) more.
    for flag in ("-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0"):
        assert flag in argv
    assert f"-bucket={s3_mod.DEFAULT_BUCKET}" in argv
    assert s3.endpoint_url == "http://127.0.0.1:40006"


def test_the_secret_is_in_files_only_their_owner_reads(s3: s3_mod.SeaweedS3) -> None:
    config = s3._write_config()
    argv = s3._argv(config)
    for path in (config, s3.credentials_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert s3.secret_key in path.read_text()
    assert s3.credentials_file.read_text() == (
        f"[default]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    )
    shown = " ".join([*argv, repr(s3), s3.summary(), *s3.describe()])
    assert s3.secret_key not in shown
    assert str(s3.credentials_file) in s3.summary()


def test_each_instance_has_its_own_keys(tmp_path: Path) -> None:
    one = s3_mod.SeaweedS3(binary=Path("/bin/weed"), data_dir=tmp_path / "a")
    two = s3_mod.SeaweedS3(binary=Path("/bin/weed"), data_dir=tmp_path / "b")
    assert one.access_key != two.access_key
    assert one.secret_key != two.secret_key
    assert len(one.access_key) == 20
    assert len(one.secret_key) >= 40


def test_missing_weed_says_how_to_build_it(tmp_path: Path) -> None:
    env = {"VWORKSPACE_TESTENV_CACHE": str(tmp_path)}
    with pytest.raises(s3_mod.S3Error, match=r"weed is not in .*build-backup-controllers\.sh"):
        s3_mod.find_weed(env, beside=tmp_path / "bin")


def test_missing_velero_names_both_binaries(tmp_path: Path) -> None:
    (tmp_path / "velero").write_text("")
    (tmp_path / "velero").chmod(0o755)
    env = {"VWORKSPACE_TESTENV_CACHE": str(tmp_path / "cache")}
    with pytest.raises(velero_mod.VeleroError, match=r"velero and velero-plugin-for-aws"):
        velero_mod.find_binaries(env, beside=tmp_path)
    plugin = tmp_path / velero_mod.AWS_PLUGIN
    plugin.write_text("")
    plugin.chmod(0o755)
    assert velero_mod.find_binaries(env, beside=tmp_path)[velero_mod.AWS_PLUGIN] == plugin


def test_the_location_points_at_the_bucket_path_style(s3: s3_mod.SeaweedS3) -> None:
    bsl = velero_mod.backup_storage_location(s3)
    assert bsl["metadata"] == {"name": "default", "namespace": "velero"}
    assert bsl["spec"] == {
        "provider": "aws",
        "default": True,
        "objectStorage": {"bucket": "velero"},
        "config": {
            "region": s3_mod.REGION,
            "s3ForcePathStyle": "true",
            "s3Url": "http://127.0.0.1:40006",
        },
    }
    assert s3.secret_key not in repr(bsl)


def _velero(tmp_path: Path, s3: s3_mod.SeaweedS3) -> velero_mod.Velero:
    return velero_mod.Velero(
        plane=None,  # type: ignore[arg-type]  # the machine checks never reach the cluster
        binaries={},
        s3=s3,
        data_dir=tmp_path / "velero",
        lock_timeout=0.3,
    )


def test_a_second_velero_server_waits_for_the_first_then_says_why(
    tmp_path: Path, s3: s3_mod.SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(velero_mod, "LOCK_FILE", tmp_path / "velero.lock")
    with socket.socket() as spare:  # a free port stands in for 8080
        spare.bind(("127.0.0.1", 0))
        monkeypatch.setattr(velero_mod, "CONTROLLER_RUNTIME_METRICS_PORT", spare.getsockname()[1])
    first, second = _velero(tmp_path, s3), _velero(tmp_path, s3)
    first._take_machine()
    try:
        with pytest.raises(velero_mod.VeleroError, match=r"another Velero server .* 0s"):
            second._take_machine()
    finally:
        first._release_machine()
    second._take_machine()  # free again once the first let go
    second._release_machine()


def test_a_taken_metrics_port_is_named(
    tmp_path: Path, s3: s3_mod.SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(velero_mod, "LOCK_FILE", tmp_path / "velero.lock")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setattr(velero_mod, "CONTROLLER_RUNTIME_METRICS_PORT", port)
        server = _velero(tmp_path, s3)
        with pytest.raises(velero_mod.VeleroError, match=rf"port {port} is taken"):
            server._take_machine()
        server._release_machine()

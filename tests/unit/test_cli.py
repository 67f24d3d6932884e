"""The command line: help, version, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vworkspace import __version__
from vworkspace.app.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "testenv" in out
    assert "Pull mode" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"vworkspace {__version__}"


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vworkspace", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("vworkspace ")


def test_testenv_start_without_binaries_explains_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VWORKSPACE_TEST_ASSETS", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("VWORKSPACE_TESTENV_CACHE", str(tmp_path / "empty-cache"))
    assert main(["testenv", "start"]) == 1
    err = capsys.readouterr().err
    assert "scripts/build-test-assets.sh" in err
    assert "--build" in err


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_manifests_crds_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds"
    assert main(["manifests", "crds", "--out", str(out)]) == 0
    assert main(["manifests", "crds", "--out", str(out), "--check"]) == 0
    victim = out / "ops.vworkspace.io_operations.yaml"
    victim.write_text(victim.read_text().replace("minLength: 1", "minLength: 2"))
    capsys.readouterr()
    assert main(["manifests", "crds", "--out", str(out), "--check"]) == 1
    assert "ops.vworkspace.io_operations.yaml" in capsys.readouterr().err

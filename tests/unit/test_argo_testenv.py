"""The Argo workflow-controller's test-environment parts that need no cluster: where the binary
is looked for, what its configuration says, and ``testenv start --with argo``. What the
controller does with kwok's Pods is checked in tests/real/test_argo.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vworkspace.devtools import testenv_cmd
from vworkspace.testing.argo import (
    CONTROLLER_CONFIG,
    WORKFLOW_CONTROLLER,
    ArgoError,
    find_controller,
)
from vworkspace.testing.kwok import CHECKOUT_STAGES


def _binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_controller_is_found_beside_the_control_plane_first(tmp_path: Path) -> None:
    beside = _binary(tmp_path / "assets" / WORKFLOW_CONTROLLER)
    env = {"VWORKSPACE_TESTENV_CACHE": str(tmp_path / "cache")}
    _binary(tmp_path / "cache" / "v1.36.3" / "bin" / WORKFLOW_CONTROLLER)
    assert find_controller(env, beside=beside.parent) == beside


def test_a_missing_controller_names_where_it_was_looked_for_and_the_script(
    tmp_path: Path,
) -> None:
    with pytest.raises(ArgoError) as err:
        find_controller({"VWORKSPACE_TESTENV_CACHE": str(tmp_path)}, beside=tmp_path / "assets")
    assert str(tmp_path / "assets") in str(err.value)
    assert "scripts/build-backup-controllers.sh" in str(err.value)


def test_the_controller_config_turns_its_metrics_servers_off() -> None:
    # Else it binds :9090 on every interface; sessions share the machine.
    config = yaml.safe_load(CONTROLLER_CONFIG)
    assert config == {"metricsConfig": {"enabled": False}, "telemetryConfig": {"enabled": False}}


def test_argo_implies_kwok_and_the_scheduler_first() -> None:
    assert testenv_cmd.resolve_components("argo") == ["scheduler", "kwok", "argo"]


def test_the_argo_stage_is_in_the_checkout() -> None:
    stage = yaml.safe_load((CHECKOUT_STAGES / "pod-argo-exit.yaml").read_text())
    assert stage["kind"] == "Stage"
    keys = [e["jq"]["key"] for e in stage["spec"]["selector"]["matchExpressions"]]
    assert '.metadata.labels["workflows.argoproj.io/workflow"]' in keys

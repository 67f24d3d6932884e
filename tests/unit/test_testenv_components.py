"""`testenv start --with`: the component registry and what a value resolves to."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from vworkspace.devtools import testenv_cmd


def test_kwok_implies_the_scheduler_first() -> None:
    assert testenv_cmd.resolve_components("kwok") == ["scheduler", "kwok"]


def test_repeats_and_blanks_are_dropped_in_order() -> None:
    assert testenv_cmd.resolve_components(" scheduler, ,kwok,scheduler ") == ["scheduler", "kwok"]
    assert testenv_cmd.resolve_components("") == []


def test_unknown_component_is_named_with_the_known_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown component 'minio' \(known: argo, charts, flux, kwok, s3, scheduler, velero\)",
    ):
        testenv_cmd.resolve_components("kwok,minio")


def test_velero_implies_s3_first() -> None:
    assert testenv_cmd.resolve_components("velero") == ["s3", "velero"]
    assert testenv_cmd.resolve_components("velero,s3,kwok") == ["s3", "velero", "scheduler", "kwok"]


def test_velero_without_a_started_s3_is_a_clear_error() -> None:
    with pytest.raises(testenv_cmd.ControlPlaneError, match="velero needs the s3 component"):
        testenv_cmd.COMPONENTS["velero"].start(None, None, testenv_cmd.Options())  # type: ignore[arg-type]


def test_cli_rejects_an_unknown_component_as_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    testenv_cmd.add_parser(commands, summary="x")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["testenv", "start", "--with", "nope"])
    assert exit_info.value.code == 2
    assert "--with: unknown component 'nope'" in capsys.readouterr().err
    args = parser.parse_args(["testenv", "start", "--with", "kwok"])
    assert args.components == ["scheduler", "kwok"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("http", "--charts-port: 'http' is not a number"), ("70000", "70000 is not a port")],
)
def test_cli_rejects_a_charts_port_that_is_no_port(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    testenv_cmd.add_parser(parser.add_subparsers(), summary="x")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["testenv", "start", "--charts-port", value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_charts_default_port_is_the_one_the_sample_names() -> None:
    parser = argparse.ArgumentParser()
    testenv_cmd.add_parser(parser.add_subparsers(), summary="x")
    args = parser.parse_args(["testenv", "start", "--with", "flux"])
    sample = (
        Path(__file__).resolve().parents[2] / "manifests/samples/applicationinstance-demo-app.yaml"
    )
    url = yaml.safe_load(sample.read_text())["spec"]["chart"]["url"]
    assert url == f"http://127.0.0.1:{args.charts_port}"

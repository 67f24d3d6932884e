"""`testenv start --with`: the component registry and what a value resolves to."""

from __future__ import annotations

import argparse

import pytest

from vworkspace.devtools import testenv_cmd


def test_kwok_implies_the_scheduler_first() -> None:
    assert testenv_cmd.resolve_components("kwok") == ["scheduler", "kwok"]


def test_repeats_and_blanks_are_dropped_in_order() -> None:
    assert testenv_cmd.resolve_components(" scheduler, ,kwok,scheduler ") == ["scheduler", "kwok"]
    assert testenv_cmd.resolve_components("") == []


def test_unknown_component_is_named_with_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown component 'velero' \(known: charts, flux, kwok, scheduler\)"
    ):
        testenv_cmd.resolve_components("kwok,velero")


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

"""The Go operator's CLI spellings are accepted and mean the same (docs/operations.md,
"Migrating from the Go operator"): the mock control plane's single-dash flags, and `register
--token --cluster-name` with the CONTROL_PLANE_BASE_URL fallback."""

from __future__ import annotations

import argparse

import pytest

from vworkspace.app.cli import build_parser, main
from vworkspace.app.register_cmd import endpoint_from


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_mock_accepts_the_go_single_dash_flags() -> None:
    go = parse(
        "mock-control-plane",
        "-addr",
        ":9000",
        "-registration-token",
        "tok",
        "-cluster-id",
        "c-9",
        "-bootstrap-token",
        "boot",
        "-admin-token",
        "adm",
    )
    ours = parse(
        "mock-control-plane",
        "--addr",
        ":9000",
        "--registration-token",
        "tok",
        "--cluster-id",
        "c-9",
        "--bootstrap-token",
        "boot",
        "--admin-token",
        "adm",
    )
    assert vars(go) == vars(ours)
    assert (go.addr, go.cluster_id, go.admin_token) == (":9000", "c-9", "adm")


def test_register_accepts_the_go_spellings_and_the_environment_fallback() -> None:
    go = parse("register", "--token", "one-time", "--cluster-name", "prod-1")
    assert (go.registration_token, go.cluster_id) == ("one-time", "prod-1")
    assert endpoint_from(go, {"CONTROL_PLANE_BASE_URL": "https://cp.example"}) == (
        "https://cp.example"
    )
    flagged = parse(
        "register", "--token", "t", "--cluster-name", "c", "--control-plane-base-url", "http://x"
    )
    assert endpoint_from(flagged, {"CONTROL_PLANE_BASE_URL": "https://cp.example"}) == "http://x"


def test_register_without_any_endpoint_names_the_flag_and_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTROL_PLANE_BASE_URL", raising=False)
    assert main(["register", "--token", "t", "--cluster-name", "c"]) == 2
    err = capsys.readouterr().err
    assert "--control-plane-endpoint" in err
    assert "CONTROL_PLANE_BASE_URL" in err


def test_help_mentions_the_go_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("register", "mock-control-plane"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert ("--cluster-name" in out) if command == "register" else ("-addr" in out)

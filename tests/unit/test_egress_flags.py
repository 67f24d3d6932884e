"""The egress flags of `run` and `register` (app/flags/egress.py): each parsed into the agent's
EgressConfig, each refused with a message naming it when wrong, the proxy variables read once
with Go's rules, and `register`'s reachability check going out the same way."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.egress_helpers import connect_proxy
from vworkspace.app.cli import build_parser, main
from vworkspace.app.register_cmd import _reachable
from vworkspace.app.run_cmd import ignored_flags, settings_from

PIN_A = base64.b64encode(hashlib.sha256(b"key a").digest()).decode()
PIN_B = base64.b64encode(hashlib.sha256(b"key b").digest()).decode()


def run_settings(*argv: str, env: dict[str, str] | None = None) -> Any:
    return settings_from(build_parser().parse_args(["run", *argv]), env or {})


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in paths.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")  # contents are checked per request
    return paths


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


# -- --control-plane-proxy ------------------------------------------------------------------


def test_proxy_flag_is_the_agents_proxy_and_hides_its_password() -> None:
    settings = run_settings("--control-plane-proxy", "http://agent:pw-9@proxy.corp:3128")
    assert settings.agent.egress.proxy == "http://agent:pw-9@proxy.corp:3128"
    assert "pw-9" not in repr(settings)


@pytest.mark.parametrize("value", ["socks5://agent:pw-9@proxy:1080", "proxy.corp:3128", "http://"])
def test_proxy_flag_refuses_what_aiohttp_cannot_use(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["run", "--control-plane-proxy", value], capsys)
    assert err.startswith("error: --control-plane-proxy ")
    assert "give http://host:port" in err
    assert "pw-9" not in err


def test_without_the_flag_the_environment_decides_with_gos_rules() -> None:
    env = {
        "HTTPS_PROXY": "proxy.corp:3128",
        "https_proxy": "http://ignored:1",
        "NO_PROXY": ".internal",
    }
    settings = run_settings(env=env)
    environment = settings.agent.egress.environment
    assert environment.proxy_for("https://cp.example.com") == "http://proxy.corp:3128"
    assert environment.proxy_for("https://cp.internal") is None
    assert settings.proxies == environment  # the API server connection reads the same values


# -- --control-plane-ca-file, --control-plane-client-cert/-key ----------------------------------


def test_ca_file_flag(pem_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    settings = run_settings("--control-plane-ca-file", str(pem_files["ca"]))
    assert settings.agent.egress.ca_file == pem_files["ca"]
    err = refused(["run", "--control-plane-ca-file", "/nonexistent/ca.pem"], capsys)
    assert "error: --control-plane-ca-file /nonexistent/ca.pem: no such file" in err


def test_client_cert_and_key_flags(pem_files: dict[str, Path]) -> None:
    settings = run_settings(
        "--control-plane-client-cert",
        str(pem_files["cert"]),
        "--control-plane-client-key",
        str(pem_files["key"]),
    )
    assert settings.agent.egress.client_cert == pem_files["cert"]
    assert settings.agent.egress.client_key == pem_files["key"]


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("--control-plane-client-cert", "--control-plane-client-key"),
        ("--control-plane-client-key", "--control-plane-client-cert"),
    ],
)
def test_half_a_client_pair_is_refused(
    given: str, missing: str, pem_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["run", given, str(pem_files["cert"])], capsys)
    assert f"error: {given} needs {missing}" in err


def test_a_missing_client_key_file_is_named(
    pem_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(
        [
            "run",
            "--control-plane-client-cert",
            str(pem_files["cert"]),
            "--control-plane-client-key",
            "/nonexistent/tls.key",
        ],
        capsys,
    )
    assert "--control-plane-client-key /nonexistent/tls.key: no such file" in err


# -- --control-plane-pin-sha256 -----------------------------------------------------------------


def test_pin_flag_is_repeatable_and_takes_the_sha256_prefix() -> None:
    settings = run_settings(
        "--control-plane-pin-sha256", PIN_A, "--control-plane-pin-sha256", f"sha256/{PIN_B}"
    )
    assert settings.agent.egress.pins == {
        hashlib.sha256(b"key a").digest(),
        hashlib.sha256(b"key b").digest(),
    }


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_a_pin_that_is_not_a_sha256_is_refused_with_the_recipe(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(["run", "--control-plane-pin-sha256", value], capsys)
    assert "error: --control-plane-pin-sha256 " in err
    assert "openssl dgst -sha256 -binary | base64" in err


# -- the agent off, --help, register ------------------------------------------------------------


def test_egress_flags_with_the_agent_off_are_reported_as_ignored() -> None:
    args = build_parser().parse_args(
        ["run", "--agent-enabled=false", "--control-plane-pin-sha256", PIN_A]
    )
    assert settings_from(args, {}).agent is None
    notes = ignored_flags(args)
    assert any("--control-plane-pin-sha256" in note for note in notes)


@pytest.mark.parametrize("command", ["run", "register"])
def test_help_lists_every_egress_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--control-plane-proxy",
        "--control-plane-ca-file",
        "--control-plane-client-cert",
        "--control-plane-client-key",
        "--control-plane-pin-sha256",
    ):
        assert flag in out


def test_register_validates_the_same_flags(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(
        [
            "register",
            "--token",
            "t",
            "--cluster-id",
            "c1",
            "--control-plane-endpoint",
            "https://cp.example.com",
            "--control-plane-pin-sha256",
            "nope",
        ],
        capsys,
    )
    assert "error: --control-plane-pin-sha256 'nope'" in err


async def test_registers_reachability_check_goes_through_the_proxy_and_blames_it() -> None:
    args = build_parser().parse_args(
        ["register", "--token", "t", "--cluster-id", "c1", "--control-plane-proxy", "http://x:1"]
    )
    from vworkspace.app.flags.egress import config_from

    async with connect_proxy("407") as px:
        config = config_from(args, {"HTTPS_PROXY": px.url})
        # The flag wins over HTTPS_PROXY: http://x:1 is not reachable...
        problem = await _reachable("https://cp.example.test", config)
        assert problem is not None
        assert problem.startswith("proxy http://x:1: cannot reach the proxy")
        # ...and without it the environment's proxy is used, and its 407 named.
        args.control_plane_proxy = None
        problem = await _reachable(
            "https://cp.example.test", config_from(args, {"HTTPS_PROXY": px.url})
        )
    assert problem is not None
    assert problem.startswith(f"proxy {px.url}: CONNECT cp.example.test:443 answered 407")
    assert px.connects == ["CONNECT cp.example.test:443"]

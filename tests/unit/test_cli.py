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


def test_manifests_crds_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crds"
    assert main(["manifests", "crds", "--out", str(out)]) == 0
    assert main(["manifests", "crds", "--out", str(out), "--check"]) == 0
    victim = out / "ops.vworkspace.io_operations.yaml"
    victim.write_text(victim.read_text().replace("minLength: 1", "minLength: 2"))
    capsys.readouterr()
    assert main(["manifests", "crds", "--out", str(out), "--check"]) == 1
    assert "ops.vworkspace.io_operations.yaml" in capsys.readouterr().err


def run_args(*argv: str) -> object:
    from vworkspace.app.cli import build_parser

    return build_parser().parse_args(["run", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--reconcile-timeout", "-1"], "--reconcile-timeout must be positive"),
        (
            ["--metrics-bind-address", "localhost"],
            "--metrics-bind-address: 'localhost' is not HOST:PORT",
        ),
        (["--health-probe-bind-address", "x:y"], "--health-probe-bind-address"),
        (
            ["--webhooks-enabled", "--webhook-cert-path", "/nonexistent/certs"],
            "--webhook-cert-name: /nonexistent/certs/tls.crt does not exist",
        ),
        (
            ["--webhooks-enabled", "--webhook-bind-address", "0"],
            "--webhook-bind-address must not be 0 when --webhooks-enabled is set",
        ),
    ],
)
def test_run_refuses_bad_flags_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_run_settings_precedence_flag_over_env() -> None:
    from vworkspace.app.run_cmd import settings_from

    env = {"POD_NAMESPACE": "from-env", "KUBECONFIG": "/env/kubeconfig"}
    settings = settings_from(run_args("--leader-election-namespace", "from-flag"), env)  # type: ignore[arg-type]
    assert settings.namespace == "from-flag"
    assert settings.kubeconfig == "/env/kubeconfig"
    settings = settings_from(run_args("--kubeconfig", "/flag/kc"), env)  # type: ignore[arg-type]
    assert (settings.namespace, settings.kubeconfig) == ("from-env", "/flag/kc")
    settings = settings_from(run_args(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})  # type: ignore[arg-type]
    assert settings.in_cluster
    assert settings.service_account_dir == Path("/var/run/secrets/kubernetes.io/serviceaccount")
    assert settings.namespace == "vworkspace-system"
    assert settings.metrics is None  # "0" disables the metrics listener
    assert str(settings.probes) == "0.0.0.0:8081"


def test_the_service_account_directory_can_be_pointed_elsewhere(tmp_path: Path) -> None:
    # The in-cluster loader's files somewhere else (tests/integration/test_shipped_identity.py
    # runs the real in-cluster path this way); blank means the kubelet's path.
    from vworkspace.app.run_cmd import settings_from

    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "VWORKSPACE_SERVICE_ACCOUNT_DIR": str(tmp_path)}
    settings = settings_from(run_args(), env)  # type: ignore[arg-type]
    assert settings.in_cluster
    assert settings.service_account_dir == tmp_path
    blank = settings_from(run_args(), {**env, "VWORKSPACE_SERVICE_ACCOUNT_DIR": " "})  # type: ignore[arg-type]
    assert blank.service_account_dir == Path("/var/run/secrets/kubernetes.io/serviceaccount")


def test_run_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--kubeconfig",
        "--leader-elect",
        "--metrics-bind-address",
        "--log-format",
        "POD_NAMESPACE",
    ):
        assert flag in out


def test_webhook_certs_writes_a_pair_for_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    from cryptography import x509

    out = tmp_path / "certs"
    argv = ["webhook-certs", "--out", str(out), "--service", "hook", "--namespace", "ops"]
    assert main([*argv, "--host", "127.0.0.1"]) == 0
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hook.ops.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    bundle = printed.split("caBundle: ")[1].strip()
    assert base64.b64decode(bundle) == (out / "ca.crt").read_bytes()
    settings_args = run_args("--webhooks-enabled", "--webhook-cert-path", str(out))
    from vworkspace.app.run_cmd import settings_from

    settings = settings_from(settings_args, {})  # type: ignore[arg-type]
    assert settings.webhooks is not None
    assert str(settings.webhooks.address) == "0.0.0.0:9443"


def test_every_command_is_listed_and_only_the_chosen_one_is_built() -> None:
    from vworkspace.app.cli import COMMANDS, build_parser, chosen_command

    assert chosen_command(["run", "--workers", "3"]) == "run"
    assert chosen_command(["--version"]) is None
    assert chosen_command(["nonsense", "run"]) is None
    parser = build_parser(["demo", "--exit"])
    assert parser.parse_args(["demo", "--exit"]).exit is True
    help_text = parser.format_help()
    for command in COMMANDS:
        assert command.name in help_text

"""`python -m vworkspace run` flags of the Go operator (README, "Configuration") beyond the basics: Go's boolean
syntax, secure metrics, the flags we refuse rather than ignore, and the zap logging flags."""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from vworkspace.app import logging as app_logging
from vworkspace.app.cli import build_parser, main
from vworkspace.app.run_cmd import ignored_flags, log_config_from, settings_from
from vworkspace.app.wiring import OperatorSettings
from vworkspace.webhooks.certs import write_webhook_certs


def args_of(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def settings(*argv: str, env: dict[str, str] | None = None) -> OperatorSettings:
    return settings_from(args_of(*argv), env or {})


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `run` with flags that must be refused before anything starts; return stderr."""
    try:
        code = main(["run", *argv])
    except SystemExit as exit_:  # argparse refuses bad values itself
        code = int(exit_.code or 0)
    assert code == 2
    return capsys.readouterr().err


# -- Go's boolean syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], True),
        (["--metrics-secure"], True),
        (["--metrics-secure=true"], True),
        (["--metrics-secure=false"], False),
        (["--metrics-secure=0"], False),
        (["--metrics-secure=F"], False),
        (["--metrics-secure=1"], True),
        (["--metrics-secure", "false"], False),
        (["--metrics-secure=false", "--metrics-secure"], True),  # the last one wins, as in Go
    ],
)
def test_metrics_secure_takes_go_boolean_syntax(argv: list[str], expected: bool) -> None:
    assert settings(*argv).metrics_secure is expected


@pytest.mark.parametrize(
    ("argv", "attribute", "expected"),
    [
        (["--leader-elect"], "leader_elect", True),
        (["--leader-elect=true"], "leader_elect", True),
        (["--leader-elect=false"], "leader_elect", False),
        ([], "leader_elect", False),
    ],
)
def test_existing_boolean_flags_take_go_syntax_too(
    argv: list[str], attribute: str, expected: bool
) -> None:
    assert getattr(settings(*argv), attribute) is expected


def test_webhooks_and_agent_can_be_switched_off_explicitly() -> None:
    result = settings("--webhooks-enabled=false", "--agent-enabled=false")
    assert result.webhooks is None
    assert result.agent is None
    assert settings("--agent-enabled=true").agent is not None


def test_a_boolean_flag_refuses_other_words(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["--metrics-secure=yes"], capsys)
    assert "argument --metrics-secure: expected true or false, got 'yes'" in err


# -- flags accepted only with their default -----------------------------------------------


@pytest.mark.parametrize("argv", [[], ["--enable-http2=false"], ["--enable-http2=0"]])
def test_http2_off_is_accepted(argv: list[str]) -> None:
    settings(*argv)


@pytest.mark.parametrize("argv", [["--enable-http2"], ["--enable-http2=true"]])
def test_http2_on_is_refused_not_ignored(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(argv, capsys)
    assert "--enable-http2: HTTP/2 is not supported by this implementation;" in err
    assert "--enable-http2=false" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--seaweed-watches-enabled=false"],
        ["--seaweed-watches-enabled"],
        ["--seaweed-watches-enabled=true"],
    ],
)
def test_seaweed_watches_flag_is_accepted_either_way(argv: list[str]) -> None:
    # As in Go it only chooses a log line: the watches follow the CRDs (defect 1 done right).
    settings(*argv)


# -- secure metrics -----------------------------------------------------------------------


def test_secure_metrics_default_to_a_self_signed_pair() -> None:
    result = settings("--metrics-bind-address", ":8443")
    assert result.metrics_secure
    assert result.metrics_cert.directory is None
    assert str(result.metrics) == "0.0.0.0:8443"


def test_the_in_process_default_is_plain_metrics() -> None:
    # Tests and embedders that build settings directly keep a plain /metrics; only the command
    # line defaults to secure (Go's default).
    assert OperatorSettings().metrics_secure is False


def test_a_metrics_cert_directory_is_checked_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_webhook_certs(tmp_path, hosts=("127.0.0.1",), cert_name="m.crt", key_name="m.key")
    result = settings(
        *("--metrics-bind-address", ":8443", "--metrics-cert-path", str(tmp_path)),
        *("--metrics-cert-name", "m.crt", "--metrics-cert-key", "m.key"),
    )
    cert = result.metrics_cert
    assert (cert.directory, cert.cert_name, cert.key_name) == (tmp_path, "m.crt", "m.key")
    err = refused(["--metrics-bind-address", ":8443", "--metrics-cert-path", str(tmp_path)], capsys)
    assert f"--metrics-cert-name: {tmp_path / 'tls.crt'} does not exist" in err
    # Without a listener, or with plain metrics, the directory is not read (as in Go).
    settings("--metrics-cert-path", "/nonexistent")
    settings(
        "--metrics-bind-address", ":8080", "--metrics-secure=false", "--metrics-cert-path", "/x"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics-bind-address", ":8081"],  # the probes' default address
        ["--metrics-bind-address", "127.0.0.1:9000", "--health-probe-bind-address", ":9000"],
    ],
)
def test_secure_metrics_cannot_share_the_probes_listener(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(argv, capsys)
    assert "--metrics-bind-address" in err
    assert "--health-probe-bind-address" in err
    assert "must differ when --metrics-secure is on" in err


def test_plain_metrics_may_share_the_probes_listener() -> None:
    result = settings("--metrics-bind-address", ":8081", "--metrics-secure=false")
    assert result.metrics == result.probes


def test_secure_metrics_next_to_the_probes_on_other_ports_or_hosts() -> None:
    settings("--metrics-bind-address", ":8443")
    settings(
        *("--metrics-bind-address", "127.0.0.1:9000"),
        *("--health-probe-bind-address", "10.1.2.3:9000"),
    )
    settings("--metrics-bind-address", ":8081", "--health-probe-bind-address", "0")


def test_flags_without_effect_are_reported() -> None:
    assert ignored_flags(args_of()) == []
    assert ignored_flags(args_of("--metrics-cert-path", "/certs")) == [
        "--metrics-cert-path ignored: the metrics listener is off (--metrics-bind-address 0)"
    ]
    plain = args_of(
        "--metrics-bind-address", ":8080", "--metrics-secure=false", "--metrics-cert-name", "x"
    )
    assert ignored_flags(plain) == [
        "--metrics-cert-name ignored: --metrics-secure=false serves plain HTTP"
    ]
    assert ignored_flags(args_of("--metrics-bind-address", ":8443", "--metrics-cert-key", "k")) == [
        "--metrics-cert-key ignored: without --metrics-cert-path a self-signed pair is used"
    ]
    assert ignored_flags(args_of("--webhook-cert-path", "/w")) == [
        "--webhook-cert-path ignored: --webhooks-enabled is not set"
    ]


def test_the_agent_runs_unless_turned_off_as_in_go() -> None:
    # The Go operator always starts its agent, which idles until credentials exist; a Go
    # deployment passes agent flags without --agent-enabled and expects them to take effect.
    env = {"POD_NAMESPACE": "ops"}
    go_style = args_of("--agent-poll-interval", "10s", "--agent-credentials-secret", "creds")
    started = settings_from(go_style, env)
    assert started.agent is not None
    assert started.agent.secret_name == "creds"
    assert started.agent.poll_interval == 10
    assert ignored_flags(go_style) == []
    from_env = settings_from(
        args_of(),
        {**env, "CONTROL_PLANE_BASE_URL": "https://cp.example", "VWORKSPACE_CLUSTER_ID": "c-1"},
    )
    assert from_env.agent is not None
    assert from_env.agent.overrides.base_url == "https://cp.example"
    assert settings_from(args_of("--agent-enabled"), env).agent is not None
    # Only an explicit false turns it off, and then its flags are reported as doing nothing.
    off = args_of(
        "--agent-enabled=false", "--cluster-id", "c-1", "--agent-allow-kind", "/ConfigMap"
    )
    assert settings_from(off, env).agent is None
    assert ignored_flags(off) == [
        "--cluster-id, --agent-allow-kind ignored: --agent-enabled=false turns the agent off"
    ]
    assert ignored_flags(args_of("--agent-enabled=false")) == []


# -- logging ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fmt", "level"),
    [
        ([], "json", "info"),
        (["--zap-devel"], "console", "debug"),
        (["--zap-devel=true"], "console", "debug"),
        (["--zap-devel=false"], "json", "info"),
        (["--zap-encoder", "console"], "console", "info"),
        (["--zap-encoder", "CONSOLE"], "console", "info"),  # zap lower-cases too
        (["--zap-log-level", "error"], "json", "error"),
        (["--zap-log-level", "1"], "json", "debug"),
        (["--zap-log-level", "5"], "json", "debug"),
        # --zap-encoder/--zap-log-level win over --zap-devel ...
        (["--zap-devel", "--zap-encoder", "json", "--zap-log-level", "info"], "json", "info"),
        # ... and --log-format/--log-level win over both.
        (["--zap-encoder", "console", "--log-format", "json"], "json", "info"),
        (["--zap-log-level", "debug", "--log-level", "warning"], "json", "warning"),
        (["--zap-devel", "--log-format", "json", "--log-level", "error"], "json", "error"),
    ],
)
def test_zap_flags_map_onto_the_log_configuration(argv: list[str], fmt: str, level: str) -> None:
    config = log_config_from(args_of(*argv))
    assert (config.fmt, config.level) == (fmt, level)


def test_zap_stacktrace_and_time_encoding_map_to_python_names() -> None:
    config = log_config_from(
        args_of("--zap-stacktrace-level", "panic", "--zap-time-encoding", "RFC3339Nano")
    )
    assert config.stacktrace_level == "critical"
    assert config.time_encoding == "rfc3339nano"
    assert log_config_from(args_of()).stacktrace_level is None
    assert log_config_from(args_of()).time_encoding is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--zap-log-level", "0"], "--zap-log-level: invalid log level '0'"),
        (["--zap-log-level", "-2"], "--zap-log-level: invalid log level '-2'"),
        (["--zap-log-level", "verbose"], "--zap-log-level: invalid log level 'verbose'"),
        # Checked even when --log-level takes precedence.
        (["--zap-log-level", "loud", "--log-level", "info"], "--zap-log-level: invalid log level"),
        (["--zap-encoder", "xml"], "argument --zap-encoder: invalid choice: 'xml'"),
        (["--zap-stacktrace-level", "warn"], "argument --zap-stacktrace-level: invalid choice"),
        (["--zap-time-encoding", "unix"], "argument --zap-time-encoding: invalid choice: 'unix'"),
        (["--zap-devel=maybe"], "argument --zap-devel: expected true or false, got 'maybe'"),
    ],
)
def test_bad_zap_values_are_refused_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused(argv, capsys)


NS = 1_767_270_896_123_456_789  # 2026-01-01T12:34:56.123456789Z


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("epoch", 1_767_270_896.1234568),
        ("millis", 1_767_270_896_123.4568),
        ("nanos", NS),
        ("nano", NS),
        ("iso8601", "2026-01-01T12:34:56.123Z"),
        ("rfc3339", "2026-01-01T12:34:56Z"),
        ("rfc3339nano", "2026-01-01T12:34:56.123456789Z"),
    ],
)
def test_time_encodings_write_ts_like_zap(encoding: str, expected: object) -> None:
    value = app_logging.format_ts(NS, encoding)
    if isinstance(expected, float):
        assert value == pytest.approx(expected, rel=1e-15)
    else:
        assert value == expected


def test_rfc3339nano_trims_trailing_zeros_like_go() -> None:
    assert app_logging.format_ts(1_767_270_896_120_000_000, "rfc3339nano") == (
        "2026-01-01T12:34:56.12Z"
    )
    assert app_logging.format_ts(1_767_270_896_000_000_000, "rfc3339nano") == (
        "2026-01-01T12:34:56Z"
    )


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines written to stderr so far; structlog's defaults are restored after."""

    def read() -> list[dict[str, Any]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield read
    structlog.reset_defaults()
    # configure() may have given the root logger a handler on pytest's capture stream.
    root.handlers[:] = handlers
    root.setLevel(level)


Lines = Callable[[], list[dict[str, Any]]]


def test_the_configured_time_encoding_is_what_ts_holds(log_lines: Lines) -> None:
    app_logging.configure(fmt="json", level="info", time_encoding="nanos")
    structlog.get_logger("t").info("hello")
    app_logging.configure(fmt="json", level="info", time_encoding="rfc3339")
    structlog.get_logger("t").info("hello")
    app_logging.configure(fmt="json", level="info")
    structlog.get_logger("t").info("hello")
    nanos, rfc3339, default = log_lines()
    assert isinstance(nanos["ts"], int)
    assert nanos["ts"] > 1_700_000_000 * 10**9
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rfc3339["ts"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", default["ts"])


def test_stacktrace_level_decides_where_tracebacks_and_stacks_go(log_lines: Lines) -> None:
    app_logging.configure(fmt="json", level="debug", stacktrace_level="error")
    log = structlog.get_logger("t")
    log.info("below")
    log.error("at")
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed")
        log.warning("handled", exc_info=True)
    below, at, failed, handled = log_lines()
    assert "stack" not in below
    assert "Stack (most recent call last)" in at["stack"]  # the call stack, zap's "stacktrace"
    assert "Traceback (most recent call last)" in failed["exception"]
    assert "stack" not in failed  # the traceback is enough
    assert handled["exception"] == "KeyError: 'k'"  # below the level: one line


def test_without_a_stacktrace_level_tracebacks_always_render(log_lines: Lines) -> None:
    app_logging.configure(fmt="json", level="info")
    log = structlog.get_logger("t")
    try:
        raise ValueError("v")
    except ValueError:
        log.warning("handled", exc_info=True)
    log.error("plain")
    handled, plain = log_lines()
    assert "Traceback (most recent call last)" in handled["exception"]
    assert "stack" not in plain


def test_help_groups_and_documents_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "--metrics-secure [BOOL]",
        "--metrics-cert-path DIR",
        "--enable-http2 [BOOL]",
        "--seaweed-watches-enabled [BOOL]",
        "--zap-devel [BOOL]",
        "--zap-time-encoding ENCODING",
        "Precedence: --log-format/--log-level > --zap-encoder/--zap-log-level > --zap-devel",
        "Boolean flags take Go's syntax",
        "(default: true; =false: plain HTTP, no authentication)",
    ):
        assert text in out, text


# -- leader election timing ------------------------------------------------------------------


def test_lease_timing_defaults_to_client_go_and_takes_durations() -> None:
    default = settings().lease_timing
    assert (default.lease_duration, default.renew_deadline, default.retry_period) == (15, 10, 2)
    fast = settings(
        "--leader-elect-lease-duration=10s",
        "--leader-elect-renew-deadline",
        "7",
        "--leader-elect-retry-period=1s",
    ).lease_timing
    assert (fast.lease_duration, fast.renew_deadline, fast.retry_period) == (10, 7, 1)


def test_inconsistent_lease_timing_is_refused_naming_the_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(["--leader-elect-lease-duration=5s"], capsys)
    assert "--leader-elect-lease-duration" in err
    assert "need lease duration > renew deadline > 1.2 x retry period, got 5s, 10s, 2s" in err
    err = refused(["--leader-elect-retry-period=soon"], capsys)
    assert "--leader-elect-retry-period: 'soon' is not a duration" in err


# -- the Operation poll ----------------------------------------------------------------------


def test_the_operation_poll_defaults_to_five_seconds_and_can_be_shortened() -> None:
    assert settings().operation_poll_interval == 5.0
    assert settings("--operation-poll-interval", "0.5").operation_poll_interval == 0.5


def test_a_non_positive_operation_poll_is_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = refused(["--operation-poll-interval=0"], capsys)
    assert "--operation-poll-interval must be positive, got 0.0" in err

"""vworkspace/testing/squid.py without starting squid: the access-log parser, the URLs (which
must not leak the password where only the plain URL is asked for) and the error when squid is
missing. tests/integration/test_squid.py runs the real one."""

from __future__ import annotations

import pytest

from vworkspace.testing.squid import AccessEntry, Squid, SquidError, find_squid, parse_access_log

LOG = """\
vworkspace 1796675536.316 - error:transaction-end-before-headers 0 - NONE_NONE
vworkspace 1796675536.342 CONNECT controlplane.vworkspace.test:8443 200 egress TCP_TUNNEL
2026/12/07 20:32:16| a line of another format
vworkspace 1796675536.343 GET http://controlplane.vworkspace.test:80/healthz 407 - TCP_DENIED
"""


def test_the_access_log_parses_into_entries() -> None:
    entries = parse_access_log(LOG)
    assert [(e.method, e.status, e.user, e.result) for e in entries] == [
        ("-", 0, None, "NONE_NONE"),
        ("CONNECT", 200, "egress", "TCP_TUNNEL"),
        ("GET", 407, None, "TCP_DENIED"),
    ]
    assert entries[1] == AccessEntry(
        1796675536.342, "CONNECT", "controlplane.vworkspace.test:8443", 200, "egress", "TCP_TUNNEL"
    )
    assert {entries[1].host, entries[2].host} == {"controlplane.vworkspace.test"}


def test_a_missing_squid_names_the_install_script() -> None:
    with pytest.raises(SquidError, match=r"scripts/install-squid\.sh"):
        find_squid({"VWORKSPACE_SQUID": "/nonexistent/squid"})


def test_urls_keep_the_password_out_of_the_plain_one() -> None:
    proxy = Squid(user="u", password="s3cret", env={"VWORKSPACE_SQUID": "/bin/sh"})
    proxy.port = 3128
    assert proxy.url == "http://127.0.0.1:3128"
    assert proxy.url_with_credentials == "http://u:s3cret@127.0.0.1:3128"
    with pytest.raises(ValueError, match="both user and password"):
        Squid(user="u", password=None, env={"VWORKSPACE_SQUID": "/bin/sh"})

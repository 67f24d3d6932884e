"""The local policy on names, not strings (issue 24, F1 Deliver 2, and F6): namespace globs
match whole namespace names only, chart-source prefixes are compared as parsed URLs, and a rule
no value could satisfy safely is refused when the flag is parsed."""

from __future__ import annotations

from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.forgery import texts, valid_namespace
from tests.unit.test_hardening import args_of
from vworkspace.agent.policy import Policy, PolicyError
from vworkspace.app.run_cmd import settings_from

AI = ("apps.vworkspace.io", "ApplicationInstance")


def chart(url: str) -> dict[str, object]:
    return {"metadata": {"name": "a", "namespace": "team-a"}, "spec": {"chart": {"url": url}}}


# -- namespaces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "namespace"),
    [
        ("team-*", "team-a/../prod"),
        ("team-b-*", "team-b-x/../kube-system"),
        ("team-*", "team-a/x"),
        ("team-*", "team-a."),
        ("*", "Prod"),
        ("*", "a" * 64),
    ],
)
def test_a_glob_matches_namespace_names_only(glob: str, namespace: str) -> None:
    policy = Policy(namespaces=(glob,))
    with pytest.raises(PolicyError, match="is not allowed by --agent-allowed-namespaces"):
        policy.check_namespace(namespace)


def test_a_glob_still_admits_the_names_it_names() -> None:
    policy = Policy(namespaces=("team-*", "demo"))
    for namespace in ("team-a", "team-b-x", "demo"):
        policy.check_namespace(namespace)
    with pytest.raises(PolicyError):
        policy.check_namespace("prod")


@given(namespace=texts)
@settings(max_examples=300)
def test_whatever_a_star_admits_is_a_valid_namespace_name(namespace: str) -> None:
    try:
        Policy(namespaces=("*",)).check_namespace(namespace)
    except PolicyError:
        return
    assert namespace == "" or valid_namespace(namespace)  # empty: the job names none


@pytest.mark.parametrize("glob", ["team-a/*", "team-*/..", "Team-*", "team.*", "team a", "*\\*"])
def test_a_glob_no_namespace_could_match_is_refused_at_flag_parse_time(glob: str) -> None:
    with pytest.raises(
        ValueError, match=r"^--agent-allowed-namespaces: .* is not a namespace glob"
    ):
        settings_from(args_of("--agent-enabled", f"--agent-allowed-namespaces={glob}"), {})
    with pytest.raises(ValueError, match=r"^--agent-allowed-namespaces: "):
        Policy(namespaces=(glob,))


# -- chart sources (F6) ----------------------------------------------------------------------------

OCI_TEAM_A = "oci://reg.example.com/team-a/"
CHARTS = "https://charts.example.com/"


@pytest.mark.parametrize(
    ("prefix", "url"),
    [
        (OCI_TEAM_A, "oci://reg.example.com/team-a/../team-b"),
        (CHARTS, "https://charts.example.com/../x"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/%2e%2e/team-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/%2E%2E/team-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/.%2e/team-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/%252e%252e/team-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a%2f..%2fteam-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/..\\team-b"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a/./x"),
        (OCI_TEAM_A, "oci://reg.example.com/team-a//x"),
        (CHARTS, "https://charts.example.com@evil.example/x"),
        (CHARTS, "https://user:pw@charts.example.com/x"),
        (CHARTS, "https://charts.example.com.evil.io/x"),
        (CHARTS, "https://charts.example.com:8443/x"),
        (CHARTS, "http://charts.example.com/x"),
        (CHARTS, "https://charts.example.com/x?u=../../y"),
        (CHARTS, "https://charts.example.com/x#/../y"),
        ("https://charts.example.com/team", "https://charts.example.com/team-b/x"),
    ],
)
def test_a_chart_url_outside_the_prefix_is_denied(prefix: str, url: str) -> None:
    with pytest.raises(PolicyError, match="chart source") as err:
        Policy(chart_sources=(prefix,)).check_object(*AI, chart(url))
    assert err.value.rule == "chart_sources"


@pytest.mark.parametrize(
    ("prefix", "url"),
    [
        (OCI_TEAM_A, "oci://reg.example.com/team-a/charts/app"),
        (OCI_TEAM_A, "OCI://Reg.Example.COM/team-a/app"),
        (CHARTS, "https://charts.example.com:443/stable"),
        (CHARTS, "https://charts.example.com/a%20b"),
        ("https://charts.example.com/team", "https://charts.example.com/team/x"),
        ("https://charts.example.com", "https://charts.example.com"),
    ],
)
def test_a_chart_url_inside_the_prefix_is_admitted(prefix: str, url: str) -> None:
    Policy(chart_sources=(prefix,)).check_object(*AI, chart(url))


@pytest.mark.parametrize(
    "prefix",
    [
        "https://charts.example.com/../",
        "oci://reg.example.com/team-a/%2e%2e/",
        "https://user@charts.example.com/",
        "https://charts.example.com/x?y",
        "https://",
    ],
)
def test_a_prefix_that_is_not_a_plain_url_is_refused_at_flag_parse_time(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"^--agent-allowed-chart-sources: "):
        settings_from(args_of("--agent-enabled", f"--agent-allowed-chart-sources={prefix}"), {})


@given(suffix=st.text(alphabet=st.sampled_from("ab./%2eEfF\\@?#:"), max_size=12))
@settings(max_examples=300)
def test_whatever_a_prefix_admits_stays_under_it(suffix: str) -> None:
    """Any URL the policy admits, resolved as a browser or a registry would resolve it (dot
    segments and one level of percent-encoding), still lies under the prefix."""
    url = OCI_TEAM_A.replace("oci://", "https://") + suffix
    try:
        Policy(chart_sources=("https://reg.example.com/team-a/",)).check_object(*AI, chart(url))
    except PolicyError:
        return
    resolved = urlsplit(urljoin(url, "."))  # resolves dot segments
    assert resolved.hostname == "reg.example.com"
    assert unquote(resolved.path).startswith("/team-a/")
    assert "/../" not in unquote(urlsplit(url).path)

"""Shared chart sources (engines/flux.py): one spelling per repository, one name per (kind,
what is fetched, how), a valid DNS-1123 name, and every instance of a namespace that needs the
same repository pointed at the same source."""

from __future__ import annotations

import re

import pytest

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.base import EngineError
from vworkspace.engines.flux import (
    HELM_REPOSITORIES,
    OCI_REPOSITORIES,
    desired_objects,
    normalised_url,
    owner_entry,
    source_drifted,
    source_name,
    source_users,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def instance(
    name: str,
    *,
    namespace: str = "team-a",
    url: str = "https://charts.example.com/stable",
    source: str = "helm",
    chart: str = "odoo",
    version: str = "1.0.0",
) -> ApplicationInstanceView:
    return ApplicationInstanceView(
        {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {
                "chart": {"sourceType": source, "url": url, "name": chart, "version": version},
                "release": {"name": name, "namespace": namespace},
                "values": {"source": "inline", "inline": {}},
            },
        }
    )


def no_instances(namespace: str) -> list[ApplicationInstanceView]:
    return []  # a chart source names its users itself (owners or label)


@pytest.mark.parametrize(
    "spelling",
    [
        "https://charts.example.com/stable",
        "https://charts.example.com/stable/",
        "HTTPS://Charts.Example.COM/stable",
        "https://charts.example.com:443/stable//",
        "  https://charts.example.com/stable#index  ",
    ],
)
def test_spellings_of_one_repository_normalise_alike(spelling: str) -> None:
    assert normalised_url(spelling) == "https://charts.example.com/stable"


def test_normalising_keeps_what_may_name_another_repository() -> None:
    assert (
        normalised_url("https://charts.example.com/Stable") == "https://charts.example.com/Stable"
    )
    assert (
        normalised_url("https://charts.example.com:8443/x") == "https://charts.example.com:8443/x"
    )
    assert normalised_url("http://charts.example.com:443/x") == "http://charts.example.com:443/x"
    assert normalised_url("http://c.example.com:80/x") == "http://c.example.com/x"
    assert normalised_url("oci://Reg.example.com:443/charts") == "oci://reg.example.com/charts"
    assert normalised_url("https://User@C.example.com/x?y=Z") == "https://User@c.example.com/x?y=Z"


def test_instances_of_one_repository_share_one_source_whatever_the_spelling() -> None:
    a = instance("a", url="https://charts.example.com/stable", chart="odoo", version="1.0.0")
    b = instance("b", url="HTTPS://charts.example.com:443/stable/", chart="crm", version="2.0")
    (_, source_a), (_, release_a) = desired_objects(a)
    (_, source_b), (_, release_b) = desired_objects(b)
    assert source_a == source_b
    name = source_a["metadata"]["name"]
    assert DNS1123_LABEL.match(name)
    assert len(name) <= 63
    assert name.startswith("vws-src-")
    assert source_a["spec"] == {"interval": "1m0s", "url": "https://charts.example.com/stable"}
    assert source_a["metadata"]["labels"] == {"app.vworkspace.io/managed-by": "vworkspace-operator"}
    for release in (release_a, release_b):
        assert release["spec"]["chart"]["spec"]["sourceRef"] == {
            "kind": "HelmRepository",
            "name": name,
        }


def test_other_repositories_namespaces_and_kinds_get_their_own() -> None:
    (_, base), _ = desired_objects(instance("a"))
    (_, other_url), _ = desired_objects(instance("b", url="https://charts.example.com/beta"))
    (_, elsewhere), _ = desired_objects(instance("c", namespace="team-b"))
    assert other_url["metadata"]["name"] != base["metadata"]["name"]
    # Same repository in another namespace: the same name, but its own object there.
    assert elsewhere["metadata"]["name"] == base["metadata"]["name"]
    assert elsewhere["metadata"]["namespace"] == "team-b"
    assert source_name("OCIRepository", base["spec"]) != source_name("HelmRepository", base["spec"])


def test_credentials_and_transport_settings_make_another_source_the_schedule_does_not() -> None:
    spec = {"interval": "1m0s", "url": "https://charts.example.com/stable"}
    plain = source_name("HelmRepository", spec)
    variants = [
        {"secretRef": {"name": "team-a-creds"}},
        {"secretRef": {"name": "team-b-creds"}},
        {"certSecretRef": {"name": "ca"}},
        {"provider": "aws"},
        {"insecure": True},
        {"type": "oci"},
        {"passCredentials": True},
    ]
    names = {source_name("HelmRepository", {**spec, **extra}) for extra in variants}
    assert plain not in names
    assert len(names) == len(variants)
    assert source_name("HelmRepository", {**spec, "interval": "10m", "timeout": "2m"}) == plain


def test_oci_sources_are_shared_per_chart_and_version() -> None:
    url = "oci://reg.example.com/charts"
    (kind, one), (_, release) = desired_objects(instance("a", source="oci", url=url))
    (_, two), _ = desired_objects(instance("b", source="oci", url=url + "/"))
    (_, newer), _ = desired_objects(instance("c", source="oci", url=url, version="1.1.0"))
    assert kind == OCI_REPOSITORIES
    assert one == two
    assert one["spec"] == {
        "interval": "1m0s",
        "url": "oci://reg.example.com/charts/odoo",
        "ref": {"tag": "1.0.0"},
    }
    assert newer["metadata"]["name"] != one["metadata"]["name"]
    assert release["spec"]["chartRef"] == {"kind": "OCIRepository", "name": one["metadata"]["name"]}


def test_a_user_owns_the_source_without_blocking_or_controlling_it() -> None:
    entry = owner_entry(instance("a"))
    assert entry == {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "name": "a",
        "uid": "uid-a",
    }
    assert desired_objects(instance("a"))[0][0] == HELM_REPOSITORIES


def test_a_source_wakes_its_owners_or_its_legacy_instance() -> None:
    shared = {
        "metadata": {
            "namespace": "team-a",
            "ownerReferences": [
                {"kind": "ApplicationInstance", "name": "a", "uid": "1"},
                {"kind": "Other", "name": "x", "uid": "2"},
                {"kind": "ApplicationInstance", "name": "b", "uid": "3"},
            ],
        }
    }
    assert source_users(shared, no_instances) == [
        ObjectKey("team-a", "a"),
        ObjectKey("team-a", "b"),
    ]
    legacy = {
        "metadata": {
            "namespace": "team-a",
            "labels": {"app.vworkspace.io/application-instance": "old"},
        }
    }
    assert source_users(legacy, no_instances) == [ObjectKey("team-a", "old")]


def test_only_drift_of_what_users_apply_wakes_them() -> None:
    base = {"metadata": {"labels": {"x": "1"}, "ownerReferences": []}, "spec": {"url": "u"}}
    joined = {**base, "metadata": {**base["metadata"], "ownerReferences": [{"uid": "1"}]}}
    fetched = {**base, "status": {"artifact": {"revision": "sha256:1"}}}
    edited = {**base, "spec": {"url": "v"}}
    relabelled = {**base, "metadata": {**base["metadata"], "labels": {}}}
    going = {**base, "metadata": {**base["metadata"], "deletionTimestamp": "t"}}
    assert not source_drifted(base, joined)
    assert not source_drifted(base, fetched)
    assert source_drifted(base, edited)
    assert source_drifted(base, relabelled)
    assert source_drifted(base, going)


def test_a_url_that_cannot_be_parsed_is_an_engine_error_naming_the_field() -> None:
    with pytest.raises(EngineError, match=r"^spec\.chart\.url: 'https://\[::1' is not a URL"):
        desired_objects(instance("a", url="https://[::1"))

"""Paths cannot be forged (issue 24, F1, Deliver 1): names are checked as Kubernetes names
(api/names.py), paths are segments (kube/rest/paths.py), and the transport encodes every segment
itself. "On the wire" means what a local HTTP server received (``request.raw_path``) through the
real :class:`KubeClient`; the pure properties cover the builder for many more inputs."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.forgery import (
    HELMRELEASE_NS,
    SEAWEED_NAME,
    texts,
    valid_namespace,
    valid_path_name,
    wire_segments,
)
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError, check_namespace, check_subdomain
from vworkspace.kube.rest.config import ClusterConfig
from vworkspace.kube.rest.discovery import split_api_version
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import (
    APPLICATION_INSTANCES,
    CLUSTERS,
    CONFIG_MAPS,
    ResourceType,
)
from vworkspace.kube.rest.transport import Transport


def transport() -> Transport:
    return Transport(ClusterConfig(server="https://10.0.0.1:6443"))


# -- names ---------------------------------------------------------------------------------------


def test_an_invalid_namespace_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidNameError) as err:
        check_namespace("team-a/../prod", field="metadata.namespace")
    assert str(err.value).startswith(
        'metadata.namespace "team-a/../prod" is not a valid namespace name: a lowercase RFC 1123 '
        "label must consist of"
    )
    assert err.value.field == "metadata.namespace"
    with pytest.raises(InvalidNameError, match=r"^metadata\.namespace .* no more than 63"):
        check_namespace("a" * 64, field="metadata.namespace")
    assert check_namespace("a" * 63, field="metadata.namespace") == "a" * 63


def test_object_names_are_subdomains_and_a_long_value_is_cut_in_the_message() -> None:
    assert check_subdomain("db.team-a", field="name") == "db.team-a"
    with pytest.raises(InvalidNameError, match=r"no more than 253 characters") as err:
        check_subdomain("a" * 10_000, field="name")
    assert len(str(err.value)) < 300
    with pytest.raises(InvalidNameError, match=r'^name "Db_1" is not a valid name'):
        check_subdomain("Db_1", field="name")


@pytest.mark.parametrize("api_version", ["../v1", "apps/..", "a/b/c", "Apps/v1", "x/V 1", "/v1"])
def test_an_api_version_that_is_not_a_group_and_version_is_refused(api_version: str) -> None:
    with pytest.raises(ValueError, match="invalid apiVersion"):
        split_api_version(api_version)


# -- ApiPath -------------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", ["", ".", "..", "a/b", "/"])
def test_a_path_refuses_a_segment_that_changes_its_shape(segment: str) -> None:
    with pytest.raises(ValueError, match="path segment 1"):
        ApiPath.of("api", segment)


def test_a_path_written_in_code_parses_and_encodes_each_segment() -> None:
    assert ApiPath.parse("/apis/authorization.k8s.io/v1/subjectaccessreviews").segments == (
        "apis",
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
    )
    assert ApiPath.of("api", "v1", "a?b#c d%").encoded == "/api/v1/a%3Fb%23c%20d%25"
    with pytest.raises(ValueError, match=r"may not be '\.\.'"):
        ApiPath.parse("/api/v1/../x")


@pytest.mark.parametrize(
    ("resource", "key", "field"),
    [
        (APPLICATION_INSTANCES, ObjectKey(HELMRELEASE_NS, "db"), "namespace"),
        (CLUSTERS, ObjectKey(None, SEAWEED_NAME), "name"),
        (CONFIG_MAPS, ObjectKey("team-a/../prod", "x"), "namespace"),
        (CONFIG_MAPS, ObjectKey("team-a", ".."), "name"),
        (CONFIG_MAPS, ObjectKey("team-a", "a%2F..%2Fb"), "name"),
    ],
)
def test_the_reproductions_cannot_become_a_path(
    resource: ResourceType, key: ObjectKey, field: str
) -> None:
    with pytest.raises(InvalidNameError) as err:
        resource.path(key)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field} ")


def build(namespace: str, name: str, subresource: str | None) -> ApiPath | InvalidNameError:
    try:
        return CONFIG_MAPS.path(ObjectKey(namespace or None, name), subresource)
    except InvalidNameError as err:
        return err


@given(namespace=texts, name=texts, subresource=st.one_of(st.none(), texts))
@settings(max_examples=600, deadline=None)
@example(namespace=HELMRELEASE_NS, name="db", subresource=None)
@example(namespace="team-a", name="x#", subresource="status?dryRun=All")
def test_a_path_has_exactly_its_segments_or_names_the_field(
    namespace: str, name: str, subresource: str | None
) -> None:
    """For any text: the path (as yarl will send it) splits into exactly the expected segments,
    or building it fails naming a field that is in fact invalid."""
    invalid = set()
    if namespace and not valid_namespace(namespace):
        invalid.add("namespace")
    if not valid_path_name(name):
        invalid.add("name")
    if subresource and not valid_namespace(subresource):  # subresources are labels
        invalid.add("subresource")
    path = build(namespace, name, subresource)
    if isinstance(path, InvalidNameError):
        assert path.field in invalid
        assert str(path).startswith(f"{path.field} ")
        return
    assert not invalid
    expected = ["api", "v1"]
    expected += ["namespaces", namespace] if namespace else []
    expected += ["configmaps", name] + ([subresource] if subresource else [])
    assert list(path.segments) == expected
    url = transport().url(path)
    assert url.raw_query_string == ""
    assert url.raw_fragment == ""
    assert wire_segments(url.raw_path) == expected

"""Paths cannot be forged, on the wire (issue 24, F1): requests through the real
:class:`KubeClient` to a local server that records ``request.raw_path``, the bytes that came
over the socket. Before the fix aiohttp resolved ``..`` and cut at ``#``/``?``, so a name or
namespace chose another object. Imports only what existed before the fix (names are refused
with a ValueError whose message begins with the field), so these fail on the old code."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given, settings

from tests.unit.forgery import (
    HELMRELEASE_NS,
    SEAWEED_NAME,
    texts,
    valid_namespace,
    valid_path_name,
    wire_segments,
)
from tests.unit.recording_api import recording_api
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CLUSTERS, CONFIG_MAPS


async def test_a_name_with_query_and_fragment_characters_is_sent_encoded() -> None:
    """aiohttp used to cut at ``?`` and ``#``; the server must see the whole name, escaped."""
    async with recording_api() as api:
        await api.client.get(CONFIG_MAPS, ObjectKey("team-a", "x?watch=true#y"))
        await api.client.list(CONFIG_MAPS, "team-a", labelSelector="a=b")
    assert api.paths() == [
        "/api/v1/namespaces/team-a/configmaps/x%3Fwatch%3Dtrue%23y",
        "/api/v1/namespaces/team-a/configmaps?labelSelector=a%3Db",
    ]


async def test_a_forged_namespace_sends_nothing() -> None:
    async with recording_api() as api:
        with pytest.raises(ValueError, match=r"^namespace "):
            await api.client.delete(APPLICATION_INSTANCES, ObjectKey(HELMRELEASE_NS, "db"))
        with pytest.raises(ValueError, match=r"^name "):
            await api.client.delete(CLUSTERS, ObjectKey(None, SEAWEED_NAME))
    assert api.requests == []


async def _roundtrip(namespace: str, name: str) -> tuple[list[str] | None, str | None]:
    """What a GET for (namespace, name) put on the wire: its segments, or the field refused."""
    async with recording_api() as api:
        try:
            await api.client.get(CONFIG_MAPS, ObjectKey(namespace, name))
        except ValueError as err:  # InvalidNameError, whose message starts with the field
            refused = str(err).split(" ")[0]
        else:
            (sent,) = api.requests
            return wire_segments(sent.raw_path), None
    assert api.requests == []
    return None, refused


@given(namespace=texts, name=texts)
@settings(max_examples=60, deadline=None)
@example(namespace="team-a", name="db#")
@example(namespace="", name="\n")  # the test server once missed it: '.' does not match '\n'
@example(namespace=HELMRELEASE_NS, name="db")
def test_on_the_wire_a_request_has_exactly_its_segments_or_is_not_sent(
    namespace: str, name: str
) -> None:
    segments, refused = asyncio.run(_roundtrip(namespace or "default", name))
    if refused is not None:
        assert refused in {"namespace", "name"}
        assert not (valid_namespace(namespace or "default") and valid_path_name(name))
        return
    assert segments == ["api", "v1", "namespaces", namespace or "default", "configmaps", name]

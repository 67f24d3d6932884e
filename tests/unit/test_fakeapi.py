"""The fake API server (vworkspace/testing/fakeapi): each documented semantic, through the real
verbs (RestVerbs) and the real Informer, as the reconciler tests use it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.errors import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    InvalidError,
    NotFoundError,
    RetryableError,
)
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import CONFIG_MAPS, NAMESPACES, OPERATIONS
from vworkspace.testing.fakeapi import FakeApi

M = "test-manager"
KEY = ObjectKey("ns", "op")


def op(name: str = "op", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": OPERATIONS.api_version,
        "kind": "Operation",
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "a"}},
        "spec": {"type": "Backup", **spec},
    }


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the loop turns; bounded so a broken test fails, not hangs)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(clock=FakeClock())


# ---- create, read, resourceVersion, generation --------------------------------------------


async def test_create_assigns_uid_timestamp_generation_and_a_global_resource_version(
    api: FakeApi,
) -> None:
    first = await api.create(OPERATIONS, op("a"), field_manager=M)
    second = await api.create(
        CONFIG_MAPS, {"metadata": {"name": "c", "namespace": "ns"}}, field_manager=M
    )
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert first["metadata"]["creationTimestamp"] == "2026-01-01T00:16:40Z"  # FakeClock(1000)
    assert first["metadata"]["generation"] == 1
    assert (
        int(second["metadata"]["resourceVersion"]) == int(first["metadata"]["resourceVersion"]) + 1
    )
    assert second["apiVersion"] == "v1"
    assert await api.get(OPERATIONS, ObjectKey("ns", "a")) == first


async def test_generation_follows_the_spec_not_metadata_or_status(api: FakeApi) -> None:
    created = await api.create(OPERATIONS, op(), field_manager=M)
    labelled = await api.merge_patch(
        OPERATIONS, KEY, {"metadata": {"labels": {"x": "1"}}}, field_manager=M
    )
    assert labelled["metadata"]["generation"] == 1
    assert labelled["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with_status = await api.merge_patch(
        OPERATIONS, KEY, {"status": {"phase": "Running"}}, field_manager=M, subresource="status"
    )
    assert with_status["metadata"]["generation"] == 1
    changed = await api.merge_patch(OPERATIONS, KEY, {"spec": {"type": "Restore"}}, field_manager=M)
    assert changed["metadata"]["generation"] == 2


async def test_a_write_that_changes_nothing_is_not_stored(api: FakeApi) -> None:
    created = await api.create(OPERATIONS, op(), field_manager=M)
    same = await api.merge_patch(OPERATIONS, KEY, {"spec": {"type": "Backup"}}, field_manager=M)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert api.resource_version == int(created["metadata"]["resourceVersion"])


async def test_answers_are_copies(api: FakeApi) -> None:
    created = await api.create(OPERATIONS, op(), field_manager=M)
    created["spec"]["type"] = "mutated by the caller"
    assert (await api.get(OPERATIONS, KEY))["spec"]["type"] == "Backup"


# ---- errors ---------------------------------------------------------------------------------


async def test_not_found_is_a_status_body_mapped_to_not_found_error(api: FakeApi) -> None:
    with pytest.raises(NotFoundError) as caught:
        await api.get(OPERATIONS, KEY)
    assert caught.value.body["kind"] == "Status"
    assert caught.value.body["reason"] == "NotFound"
    assert caught.value.body["details"] == {
        "name": "op",
        "group": "ops.vworkspace.io",
        "kind": "operations",
    }
    with pytest.raises(NotFoundError):
        await api.request("GET", ApiPath.parse("/version"))


async def test_create_twice_is_already_exists(api: FakeApi) -> None:
    await api.create(OPERATIONS, op(), field_manager=M)
    with pytest.raises(AlreadyExistsError) as caught:
        await api.create(OPERATIONS, op(), field_manager=M)
    assert caught.value.status == 409


async def test_an_object_without_a_name_is_invalid(api: FakeApi) -> None:
    body = op()
    del body["metadata"]["name"]
    with pytest.raises(InvalidError) as caught:
        await api.create(OPERATIONS, body, field_manager=M)
    assert "metadata.name" in caught.value.message


async def test_generate_name(api: FakeApi) -> None:
    body = op()
    body["metadata"] = {"generateName": "op-", "namespace": "ns"}
    created = await api.create(OPERATIONS, body, field_manager=M)
    assert created["metadata"]["name"].startswith("op-")


async def test_replace_with_a_stale_resource_version_is_a_conflict(api: FakeApi) -> None:
    created = await api.create(OPERATIONS, op(), field_manager=M)
    await api.merge_patch(OPERATIONS, KEY, {"spec": {"type": "Restore"}}, field_manager=M)
    with pytest.raises(ConflictError) as caught:
        await api.replace(OPERATIONS, created, field_manager=M)
    assert "the object has been modified" in caught.value.message
    stale = {
        "metadata": {
            "resourceVersion": created["metadata"]["resourceVersion"],
            "labels": {"y": "1"},
        }
    }
    with pytest.raises(ConflictError):
        await api.merge_patch(OPERATIONS, KEY, stale, field_manager=M)
    fresh = await api.get(OPERATIONS, KEY)
    fresh["spec"]["type"] = "Backup"
    replaced = await api.replace(OPERATIONS, fresh, field_manager=M)
    assert replaced["spec"]["type"] == "Backup"


async def test_fail_next_injects_one_error(api: FakeApi) -> None:
    await api.create(OPERATIONS, op(), field_manager=M)
    api.fail_next("GET", OPERATIONS.path(KEY), 503)
    with pytest.raises(RetryableError):
        await api.get(OPERATIONS, KEY)
    assert (await api.get(OPERATIONS, KEY))["metadata"]["name"] == "op"


# ---- status subresource -------------------------------------------------------------------


async def test_status_is_written_only_through_the_status_subresource(api: FakeApi) -> None:
    body = {**op(), "status": {"phase": "Succeeded"}}
    created = await api.create(OPERATIONS, body, field_manager=M)
    assert "status" not in created
    created["status"] = {"phase": "Running"}
    created["spec"]["type"] = "Restore"
    main = await api.replace(OPERATIONS, created, field_manager=M)
    assert "status" not in main
    assert main["spec"]["type"] == "Restore"
    main["status"] = {"phase": "Running"}
    main["spec"]["type"] = "Ignored"
    status = await api.replace(OPERATIONS, main, field_manager=M, subresource="status")
    assert status["status"] == {"phase": "Running"}
    assert status["spec"]["type"] == "Restore"
    assert status["metadata"]["generation"] == main["metadata"]["generation"]


async def test_kinds_without_a_status_subresource_keep_status_in_the_main_resource(
    api: FakeApi,
) -> None:
    created = await api.create(
        CONFIG_MAPS,
        {"metadata": {"name": "c", "namespace": "ns"}, "status": {"x": 1}},
        field_manager=M,
    )
    assert created["status"] == {"x": 1}


# ---- merge patch ----------------------------------------------------------------------------


async def test_merge_patch_follows_rfc_7386(api: FakeApi) -> None:
    await api.create(
        OPERATIONS,
        {**op(), "spec": {"type": "Backup", "parameters": {"a": 1, "b": 2}, "list": [1, 2]}},
        field_manager=M,
    )
    patched = await api.merge_patch(
        OPERATIONS, KEY, {"spec": {"parameters": {"a": None, "c": 3}, "list": [9]}}, field_manager=M
    )
    assert patched["spec"] == {"type": "Backup", "parameters": {"b": 2, "c": 3}, "list": [9]}


async def test_unsupported_patch_types_are_refused(api: FakeApi) -> None:
    await api.create(OPERATIONS, op(), field_manager=M)
    with pytest.raises(ApiError) as caught:
        await api.request(
            "PATCH", OPERATIONS.path(KEY), body={}, content_type="application/json-patch+json"
        )
    assert caught.value.status == 415


# ---- server-side apply --------------------------------------------------------------------


async def test_apply_creates_then_merges_and_removes_fields_it_no_longer_applies(
    api: FakeApi,
) -> None:
    applied = {**op(), "spec": {"type": "Backup", "parameters": {"a": 1, "b": 2}}}
    created = await api.apply(OPERATIONS, applied, field_manager="one")
    assert created["spec"]["parameters"] == {"a": 1, "b": 2}
    await api.merge_patch(
        OPERATIONS, KEY, {"spec": {"note": "from someone else"}}, field_manager="other"
    )
    again = {**op(), "spec": {"type": "Backup", "parameters": {"a": 1}}}
    updated = await api.apply(OPERATIONS, again, field_manager="one")
    assert updated["spec"] == {
        "type": "Backup",
        "parameters": {"a": 1},
        "note": "from someone else",
    }


async def test_apply_of_another_managers_field_conflicts_unless_forced(api: FakeApi) -> None:
    await api.apply(OPERATIONS, op(), field_manager="one")
    with pytest.raises(ConflictError) as caught:
        await api.apply(
            OPERATIONS, {**op(), "spec": {"type": "Restore"}}, field_manager="two", force=False
        )
    assert [(c.field_manager, c.field) for c in caught.value.causes] == [("one", ".spec.type")]
    same_value = await api.apply(OPERATIONS, op(), field_manager="two", force=False)
    assert same_value["spec"]["type"] == "Backup"  # equal values are shared, no conflict
    forced = await api.apply(OPERATIONS, {**op(), "spec": {"type": "Restore"}}, field_manager="two")
    assert forced["spec"]["type"] == "Restore"


async def test_apply_treats_finalizers_as_a_set(api: FakeApi) -> None:
    first = op()
    first["metadata"]["finalizers"] = ["a/one"]
    await api.apply(OPERATIONS, first, field_manager="one")
    second = op()
    second["metadata"]["finalizers"] = ["b/two"]
    both = await api.apply(OPERATIONS, second, field_manager="two")
    assert both["metadata"]["finalizers"] == ["a/one", "b/two"]
    del first["metadata"]["finalizers"]
    after = await api.apply(OPERATIONS, first, field_manager="one")
    assert after["metadata"]["finalizers"] == ["b/two"]


async def test_apply_to_status_changes_only_status(api: FakeApi) -> None:
    await api.apply(OPERATIONS, op(), field_manager=M)
    body = {**op(), "spec": {"type": "Ignored"}, "status": {"phase": "Running"}}
    stored = await api.apply(OPERATIONS, body, field_manager=M, subresource="status")
    assert stored["status"] == {"phase": "Running"}
    assert stored["spec"]["type"] == "Backup"


# ---- deletion ------------------------------------------------------------------------------


async def test_delete_without_finalizers_removes(api: FakeApi) -> None:
    await api.create(OPERATIONS, op(), field_manager=M)
    await api.delete(OPERATIONS, KEY)
    assert api.stored(OPERATIONS, KEY) is None
    with pytest.raises(NotFoundError):
        await api.delete(OPERATIONS, KEY)


async def test_delete_with_finalizers_waits_for_the_last_one(api: FakeApi) -> None:
    body = op()
    body["metadata"]["finalizers"] = ["a/one", "b/two"]
    await api.create(OPERATIONS, body, field_manager=M)
    deleting = await api.delete(OPERATIONS, KEY)
    assert deleting["metadata"]["deletionTimestamp"] == "2026-01-01T00:16:40Z"
    with pytest.raises(InvalidError):
        await api.merge_patch(
            OPERATIONS,
            KEY,
            {"metadata": {"finalizers": ["a/one", "b/two", "c/new"]}},
            field_manager=M,
        )
    await api.merge_patch(OPERATIONS, KEY, {"metadata": {"finalizers": ["b/two"]}}, field_manager=M)
    assert api.stored(OPERATIONS, KEY) is not None
    await api.merge_patch(OPERATIONS, KEY, {"metadata": {"finalizers": None}}, field_manager=M)
    assert api.stored(OPERATIONS, KEY) is None


# ---- list ---------------------------------------------------------------------------------


async def test_list_by_namespace_and_label_selector(api: FakeApi) -> None:
    for name, ns, labels in [
        ("a", "ns", {"app": "a", "tier": "x"}),
        ("b", "ns", {"app": "b"}),
        ("c", "other", {"app": "a"}),
    ]:
        await api.create(
            OPERATIONS,
            {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {}},
            field_manager=M,
        )

    async def names(namespace: str | None = None, **query: str) -> list[str]:
        listed = await api.list(OPERATIONS, namespace, **query)
        assert listed["metadata"]["resourceVersion"] == str(api.resource_version)
        return [i["metadata"]["name"] for i in listed["items"]]

    assert await names() == ["a", "b", "c"]
    assert await names("ns") == ["a", "b"]
    assert await names(labelSelector="app=a") == ["a", "c"]
    assert await names(labelSelector="app!=a") == ["b"]
    assert await names(labelSelector="tier") == ["a"]
    assert await names(labelSelector="!tier") == ["b", "c"]
    assert await names(labelSelector="app in (b,c),!tier") == ["b"]
    assert await names(fieldSelector="metadata.name=c") == ["c"]
    with pytest.raises(ApiError) as caught:
        await names(fieldSelector="spec.type=Backup")
    assert caught.value.status == 400


async def test_list_pages_with_limit_and_continue(api: FakeApi) -> None:
    for name in "abc":
        await api.create(OPERATIONS, op(name), field_manager=M)
    first = await api.list(OPERATIONS, "ns", limit="2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    rest = await api.list(
        OPERATIONS, "ns", limit="2", **{"continue": first["metadata"]["continue"]}
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    assert "continue" not in rest["metadata"]


async def test_cluster_scoped_objects(api: FakeApi) -> None:
    await api.create(
        NAMESPACES, {"metadata": {"name": "ns", "annotations": {"a": "1"}}}, field_manager=M
    )
    got = await api.get(NAMESPACES, ObjectKey(None, "ns"))
    assert "namespace" not in got["metadata"]
    assert got["metadata"]["annotations"] == {"a": "1"}


# ---- watch --------------------------------------------------------------------------------


async def collect(api: FakeApi, query: dict[str, str], count: int) -> list[tuple[str, str]]:
    """The first ``count`` events of a watch, as (type, name or resourceVersion)."""
    import json

    seen: list[tuple[str, str]] = []
    async with api.stream_lines(
        OPERATIONS.collection_path("ns"), query=query, connect_timeout=1, total_timeout=60
    ) as lines:
        async for line in lines:
            event = json.loads(line)
            meta = event["object"]["metadata"]
            seen.append((event["type"], meta.get("name") or meta["resourceVersion"]))
            if len(seen) == count:
                break
    return seen


async def test_watch_replays_events_after_the_resource_version(api: FakeApi) -> None:
    start = await api.create(OPERATIONS, op("a"), field_manager=M)
    await api.create(OPERATIONS, op("b"), field_manager=M)
    await api.merge_patch(OPERATIONS, ObjectKey("ns", "a"), {"spec": {"x": 1}}, field_manager=M)
    await api.delete(OPERATIONS, ObjectKey("ns", "b"))
    query = {"resourceVersion": start["metadata"]["resourceVersion"]}
    assert await collect(api, query, 3) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


async def test_watch_from_zero_starts_with_the_current_objects_then_follows(api: FakeApi) -> None:
    await api.create(OPERATIONS, op("a"), field_manager=M)
    task = asyncio.create_task(collect(api, {"resourceVersion": "0"}, 2))
    await until(lambda: api.requests[-1][0] == "WATCH")
    await api.create(OPERATIONS, op("b"), field_manager=M)
    assert await task == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_through_a_selector_sees_objects_enter_and_leave(api: FakeApi) -> None:
    start = await api.create(OPERATIONS, op("other"), field_manager=M)
    await api.create(OPERATIONS, op("a"), field_manager=M)
    await api.merge_patch(
        OPERATIONS, ObjectKey("ns", "a"), {"metadata": {"labels": {"app": "z"}}}, field_manager=M
    )
    await api.merge_patch(
        OPERATIONS, ObjectKey("ns", "a"), {"metadata": {"labels": {"app": "a"}}}, field_manager=M
    )
    query = {
        "resourceVersion": start["metadata"]["resourceVersion"],
        "labelSelector": "app=a",
    }
    assert await collect(api, query, 3) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a")]


async def test_watch_from_a_compacted_version_is_gone(api: FakeApi) -> None:
    start = await api.create(OPERATIONS, op("a"), field_manager=M)
    await api.create(OPERATIONS, op("b"), field_manager=M)
    api.compact()
    import json

    async with api.stream_lines(
        OPERATIONS.collection_path("ns"),
        query={"resourceVersion": start["metadata"]["resourceVersion"]},
        connect_timeout=1,
        total_timeout=60,
    ) as lines:
        events = [json.loads(line) async for line in lines]
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410


async def test_bookmarks_only_for_watches_that_allow_them(api: FakeApi) -> None:
    await api.create(OPERATIONS, op("a"), field_manager=M)
    rv = str(api.resource_version)
    task = asyncio.create_task(
        collect(api, {"resourceVersion": rv, "allowWatchBookmarks": "true"}, 1)
    )
    await until(lambda: api.requests[-1][0] == "WATCH")
    api.bookmark()
    assert await task == [("BOOKMARK", rv)]


async def test_watch_ends_at_its_timeout_on_the_fake_clock() -> None:
    clock = FakeClock()
    api = FakeApi(clock=clock)
    done = asyncio.Event()

    async def watch() -> None:
        async with api.stream_lines(
            OPERATIONS.collection_path("ns"),
            query={"resourceVersion": "0", "timeoutSeconds": "300"},
            connect_timeout=1,
            total_timeout=330,
        ) as lines:
            async for _ in lines:
                pass
        done.set()

    task = asyncio.create_task(watch())
    await until(lambda: bool(api.requests))
    await clock.advance(299)
    assert not done.is_set()
    await clock.advance(1)
    await until(done.is_set)
    await task


async def test_break_watches_ends_the_streams(api: FakeApi) -> None:
    task = asyncio.create_task(collect(api, {"resourceVersion": "0"}, 5))
    await until(lambda: bool(api.requests))
    api.break_watches()
    assert await task == []


# ---- recording ------------------------------------------------------------------------------


async def test_writes_are_recorded_with_their_outcome(api: FakeApi) -> None:
    await api.create(OPERATIONS, op(), field_manager=M)
    with pytest.raises(AlreadyExistsError):
        await api.create(OPERATIONS, op(), field_manager=M)
    await api.merge_patch(
        OPERATIONS, KEY, {"status": {"phase": "Running"}}, field_manager=M, subresource="status"
    )
    assert [(w.method, w.key, w.subresource, w.code) for w in api.writes] == [
        ("POST", KEY, "", 201),
        ("POST", KEY, "", 409),
        ("PATCH", KEY, "status", 200),
    ]
    assert [w.body for w in api.writes_to(OPERATIONS, subresource="status")] == [
        {"status": {"phase": "Running"}}
    ]


# ---- the real Informer on the fake ----------------------------------------------------------


async def test_the_informer_syncs_sees_a_modification_and_relists_after_410() -> None:
    clock = FakeClock()
    api = FakeApi(clock=clock)
    await api.create(OPERATIONS, op("a"), field_manager=M)
    informer = Informer(api, OPERATIONS, namespace="ns", clock=clock, page_size=1)
    seen: list[tuple[str, str]] = []
    informer.add_handler(
        lambda obj, initial: seen.append((obj["metadata"]["name"], obj["spec"]["type"]))
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 5)
        assert seen == [("a", "Backup")]
        await until(lambda: informer.watches_opened == 1 and len(api._store.watches.open) == 1)
        await api.merge_patch(
            OPERATIONS, ObjectKey("ns", "a"), {"spec": {"type": "Restore"}}, field_manager=M
        )
        await until(lambda: seen[-1] == ("a", "Restore"))
        # The stream drops, history is compacted meanwhile: the reopened watch gets 410 and
        # the informer relists, finding the object created while it was away.
        api.break_watches()
        api.compact()
        await api.create(OPERATIONS, op("b"), field_manager=M)
        api.compact()
        await until(lambda: informer.relists == 2)
        await until(lambda: informer.store.get(ObjectKey("ns", "b")) is not None)
        assert informer.relists == 2
    finally:
        task.cancel()
        api.close()

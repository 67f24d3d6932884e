"""Fewer API writes (docs/development.md, "Performance"): the apply that is skipped when the
cache already holds it (kube/applied.py), the informer's write-through of our own writes
(``Informer.record_write``), and the proxy choice of the transport."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.applied import DIGEST_ANNOTATION, covers, up_to_date, with_digest
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.store import LAST_APPLIED, slim
from vworkspace.kube.rest.proxy import ProxyEnvironment
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES


def desired() -> JsonObj:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "r-source", "namespace": "ns", "labels": {"a": "1"}},
        "spec": {"interval": "1m0s", "url": "https://charts.example.com"},
    }


def live_from(stamped: JsonObj, **spec: Any) -> JsonObj:
    """What the API server returns: our fields plus its own (uid, defaults)."""
    meta = {**stamped["metadata"], "uid": "u-1", "resourceVersion": "7", "generation": 1}
    return {**stamped, "metadata": meta, "spec": {**stamped["spec"], "provider": "generic", **spec}}


def test_an_object_applied_before_and_unchanged_is_not_applied_again() -> None:
    stamped = with_digest(desired())
    assert up_to_date(live_from(stamped), with_digest(desired()))


def test_no_cached_object_means_apply() -> None:
    assert not up_to_date(None, with_digest(desired()))


def test_drift_in_one_of_our_fields_means_apply() -> None:
    stamped = with_digest(desired())
    assert not up_to_date(live_from(stamped, url="https://elsewhere.example.com"), stamped)


def test_a_field_we_no_longer_set_means_apply_although_the_rest_is_covered() -> None:
    before = desired()
    before["spec"]["timeout"] = "60s"
    live = live_from(with_digest(before))
    now = with_digest(desired())
    assert covers(live["spec"], now["spec"])  # a subset test alone would skip the apply
    assert not up_to_date(live, now)


def test_the_digest_ignores_a_stale_digest_annotation_in_the_input() -> None:
    first = with_digest(desired())
    again = with_digest(first)
    assert (
        again["metadata"]["annotations"][DIGEST_ANNOTATION]
        == (first["metadata"]["annotations"][DIGEST_ANNOTATION])
    )


def test_covers_compares_lists_item_by_item() -> None:
    assert covers({"l": [{"a": 1, "b": 2}]}, {"l": [{"a": 1}]})
    assert not covers({"l": [{"a": 1}, {"a": 2}]}, {"l": [{"a": 1}]})
    assert not covers({"l": "x"}, {"l": ["x"]})


def test_the_cache_drops_the_last_applied_annotation_and_managed_fields() -> None:
    obj = {
        "metadata": {
            "name": "a",
            "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
            "managedFields": [{"manager": "kubectl"}],
        }
    }
    assert slim(obj)["metadata"] == {"name": "a", "annotations": {"keep": "me"}}
    assert LAST_APPLIED in obj["metadata"]["annotations"]  # the input is not modified


def ai(rv: str, note: str = "") -> JsonObj:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv},
        "status": {"note": note},
    }


class _NoClient:
    async def request(self, *args: Any, **kwargs: Any) -> JsonObj:
        raise AssertionError("no request expected")

    def stream_lines(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no watch expected")


def informer() -> tuple[Informer, list[JsonObj]]:
    seen: list[JsonObj] = []
    inf = Informer(_NoClient(), APPLICATION_INSTANCES)
    inf.add_handler(lambda obj, initial: seen.append(obj))
    return inf, seen


KEY = ObjectKey("ns", "a")


def test_our_write_is_handled_at_once_and_its_watch_event_is_a_duplicate() -> None:
    inf, seen = informer()
    inf._apply_event({"type": "ADDED", "object": ai("10")}, "10")
    inf.record_write(ai("12", "written"))
    assert inf.store.get(KEY)["status"]["note"] == "written"  # type: ignore[index]
    inf._apply_event({"type": "MODIFIED", "object": ai("12", "written")}, "10")
    assert [o["metadata"]["resourceVersion"] for o in seen] == ["10", "12"]


def test_a_child_we_just_made_is_cached_and_handled_before_its_watch_event() -> None:
    inf, seen = informer()
    inf.record_write(ai("5", "created"))
    inf._apply_event({"type": "ADDED", "object": ai("5", "created")}, "4")
    assert [o["metadata"]["resourceVersion"] for o in seen] == ["5"]


def test_an_older_watch_event_does_not_undo_our_write() -> None:
    inf, _ = informer()
    inf._apply_event({"type": "ADDED", "object": ai("10")}, "10")
    inf.record_write(ai("12", "written"))
    inf._apply_event({"type": "MODIFIED", "object": ai("11", "older")}, "10")
    assert inf.store.get(KEY)["status"]["note"] == "written"  # type: ignore[index]
    inf._apply_event({"type": "MODIFIED", "object": ai("13", "newer")}, "11")
    assert inf.store.get(KEY)["status"]["note"] == "newer"  # type: ignore[index]


def test_an_older_write_answer_does_not_replace_a_newer_event() -> None:
    inf, _ = informer()
    inf._apply_event({"type": "ADDED", "object": ai("15", "event")}, "15")
    inf.record_write(ai("12", "late answer"))
    assert inf.store.get(KEY)["status"]["note"] == "event"  # type: ignore[index]


def test_a_deleted_object_does_not_come_back_from_a_late_write_answer() -> None:
    inf, _ = informer()
    inf._apply_event({"type": "ADDED", "object": ai("10")}, "10")
    inf._apply_event({"type": "DELETED", "object": ai("14")}, "10")
    inf.record_write(ai("12", "ghost"))
    assert inf.store.get(KEY) is None
    inf.record_write(ai("20", "made again"))  # re-created after the deletion: cached
    assert inf.store.get(KEY)["status"]["note"] == "made again"  # type: ignore[index]


@pytest.mark.parametrize(
    ("url", "proxies", "expected"),
    [
        ("https://10.0.0.1:6443", {"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        (
            "https://10.0.0.1:6443",
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.1"},
            None,
        ),
        (
            "https://api.cluster.local",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".cluster.local"},
            None,
        ),
        ("https://10.0.0.1:6443", {"HTTP_PROXY": "http://proxy:3128"}, None),
        ("http://10.0.0.1:8080", {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "*"}, None),
        ("https://10.0.0.1:6443", {}, None),
    ],
)
def test_the_api_server_proxy_honours_no_proxy(
    url: str, proxies: dict[str, str], expected: str | None
) -> None:
    assert ProxyEnvironment.from_environ(proxies).proxy_for(url) == expected


def test_the_cache_shares_one_copy_of_keys_and_short_values() -> None:
    inf, _ = informer()
    for rv, name in (("1", "a"), ("2", "b")):
        obj = json.loads(json.dumps({**ai(rv), "metadata": {**ai(rv)["metadata"], "name": name}}))
        inf._apply_event({"type": "ADDED", "object": obj}, rv)
    first, second = (inf.store.get(ObjectKey("ns", n)) for n in ("a", "b"))
    assert first is not None
    assert second is not None
    assert first == {**ai("1"), "metadata": {**ai("1")["metadata"], "name": "a"}}
    key_a = next(k for k in first if k == "apiVersion")
    key_b = next(k for k in second if k == "apiVersion")
    assert key_a is key_b  # one string object, not one per cached object
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]

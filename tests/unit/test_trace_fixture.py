"""`python -m vworkspace trace to-fixture` (vworkspace/devtools/trace_cmd.py): a trace becomes a
small, normalized replay fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.app.cli import main
from vworkspace.devtools.trace_cmd import read_trace, to_fixture, trim
from vworkspace.kube.applied import DIGEST_ANNOTATION, with_digest

NS = "team"
UID = "0b5e3c2a-1111-2222-3333-444455556666"
T0 = "2026-12-07T17:41:07.500000+00:00"


def ai(rv: str, *, phase: str = "", owner_uid: str = UID) -> JsonObj:
    obj: JsonObj = {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {
            "name": "shop",
            "namespace": NS,
            "uid": owner_uid,
            "resourceVersion": rv,
            "creationTimestamp": "2026-12-07T17:41:08Z",
        },
        "spec": {"mode": "placeholder"},
    }
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def event(seq: int, resource: str, obj: JsonObj, kind: str = "MODIFIED") -> JsonObj:
    return {
        "t": "event",
        "seq": seq,
        "time": T0,
        "resource": resource,
        "type": kind,
        "via": "watch",
        "object": obj,
    }


def trace_lines() -> list[JsonObj]:
    desired = with_digest(
        {
            "kind": "HelmRelease",
            "metadata": {"name": "shop", "ownerReferences": [{"uid": UID, "name": "shop"}]},
        }
    )
    ais = "applicationinstances.apps.vworkspace.io"
    return [
        {"t": "header", "version": 1, "time": "2026-12-07T17:40:00+00:00", "settings": {}},
        event(1, "leases.coordination.k8s.io", {"metadata": {"name": "stale", "namespace": NS}}),
        {"t": "header", "version": 1, "time": T0, "settings": {}},  # a second run: the one kept
        event(1, ais, ai("100"), "ADDED"),
        event(2, ais, ai("101", phase="a")),  # superseded before the reconcile: dropped
        event(3, ais, ai("102", phase="b")),
        event(4, "secrets", {"kind": "Secret", "metadata": {"name": "unread", "namespace": NS}}),
        {
            "t": "reconcile",
            "controller": "applicationinstance",
            "key": f"{NS}/shop",
            "id": "abc",
            "time": "2026-12-07T17:41:09.250000+00:00",
            "seq": 4,
            "reads": [
                {
                    "resource": ais,
                    "key": f"{NS}/shop",
                    "resourceVersion": "102",
                    "lastResourceVersion": "102",
                }
            ],
            "fetched": [],
            "writes": [
                {
                    "method": "PATCH",
                    "resource": "helmreleases.helm.toolkit.fluxcd.io",
                    "key": f"{NS}/shop",
                    "body": desired,
                    "code": 200,
                },
                {
                    "method": "PUT",
                    "resource": ais,
                    "key": f"{NS}/shop",
                    "subresource": "status",
                    "body": {**ai("102"), "status": {"phase": "c"}},
                    "code": 200,
                },
            ],
            "status": {"phase": "c"},
            "outcome": {"result": "done"},
            "duration": 0.01,
        },
        event(5, ais, ai("103", phase="c")),
    ]


def text(lines: list[JsonObj]) -> list[str]:
    return [json.dumps(line) + "\n" for line in lines]


def test_only_the_last_run_of_a_file_is_read() -> None:
    run = read_trace(text(trace_lines()))
    assert run[0]["time"] == T0
    assert not any(line.get("resource", "").startswith("leases") for line in run)


def test_a_file_without_a_header_is_refused() -> None:
    with pytest.raises(ValueError, match="no header"):
        read_trace(text(trace_lines()[1:2]))
    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_trace(["{not json\n"])


def test_an_unfinished_last_line_is_left_out() -> None:
    lines = text(trace_lines())
    run = read_trace([*lines, lines[-1][:25]])  # killed while writing it: no newline
    assert run[-1] == trace_lines()[-1]
    with pytest.raises(ValueError, match="not JSON"):
        read_trace([*lines[:3], lines[3][:25] + "\n", *lines[4:]])


def test_trim_keeps_the_states_a_reconcile_could_see_and_drops_the_rest() -> None:
    lines = trim(read_trace(text(trace_lines())))
    kinds = [
        (
            line["t"],
            line.get("seq"),
            line.get("object", {}).get("metadata", {}).get("resourceVersion"),
        )
        for line in lines
    ]
    assert kinds == [
        ("header", None, None),
        ("event", 1, "102"),  # the state the reconcile started from (100 and 101 superseded)
        ("reconcile", 1, None),
        ("event", 2, "103"),  # after the last reconcile: kept (what the run ended with)
    ]
    (rec,) = [line for line in lines if line["t"] == "reconcile"]
    status_write = rec["writes"][1]
    assert status_write["body"] == {"status": {"phase": "c"}}  # all a status write can change


def test_namespaces_filter_the_reconciles() -> None:
    lines = trim(read_trace(text(trace_lines())), namespaces=frozenset({"other"}))
    assert [line["t"] for line in lines] == ["header"]


def test_uids_versions_times_and_digests_are_normalized() -> None:
    lines = to_fixture(text(trace_lines()), name="shop", source="unit test")
    dumped = json.dumps(lines)
    assert UID not in dumped
    assert lines[0]["fixture"] == "shop"
    assert lines[0]["source"] == "unit test"
    assert lines[0]["time"] == "2026-01-01T00:16:40.500000+00:00"  # FakeClock's default start
    first = lines[1]["object"]["metadata"]
    assert (first["uid"], first["resourceVersion"]) == ("uid-1", "1")
    assert first["creationTimestamp"] == "2026-01-01T00:16:41Z"  # the same 1 s after the start
    rec = lines[2]
    assert rec["time"] == "2026-01-01T00:16:42.250000+00:00"
    assert rec["reads"][0]["resourceVersion"] == "1"
    assert lines[3]["object"]["metadata"]["resourceVersion"] == "2"
    applied = rec["writes"][0]["body"]
    assert applied["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    digest = applied["metadata"]["annotations"][DIGEST_ANNOTATION]
    assert digest == with_digest(applied)["metadata"]["annotations"][DIGEST_ANNOTATION]


def test_the_command_writes_the_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.ndjson"
    trace.write_text("".join(text(trace_lines())))
    assert (
        main(["trace", "to-fixture", str(trace), "--name", "shop", "--out-dir", str(tmp_path)]) == 0
    )
    fixture = tmp_path / "shop.ndjson"
    assert [json.loads(t)["t"] for t in fixture.read_text().splitlines()] == [
        "header",
        "event",
        "reconcile",
        "event",
    ]
    assert "2 events, 1 reconciles" in capsys.readouterr().out


def test_the_command_refuses_a_bad_name_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "to-fixture", str(tmp_path / "x"), "--name", "Bad/Name"]) == 2
    assert main(["trace", "to-fixture", str(tmp_path / "missing"), "--name", "ok"]) == 1
    assert "missing" in capsys.readouterr().err

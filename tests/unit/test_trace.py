"""The event trace of `run --trace-file` (vworkspace/kube/trace.py): what the informer and the
controller write, and that no secret reaches it."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.wiring import OperatorSettings, build_manager
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.resources import CLUSTERS, SECRETS
from vworkspace.kube.runtime.controller import Controller, Result, TerminalError
from vworkspace.kube.runtime.workqueue import WorkQueue
from vworkspace.kube.scrub import SCRUBBED, SCRUBBED_B64, scrub
from vworkspace.kube.trace import Target, Tracer, TracingApi, tracer_of
from vworkspace.testing.replay import ReplayApi

TOKEN = "reg-token-7f3a9c-do-not-leak"
SECRET_VALUE = "s3cr3t-value-do-not-leak"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXZhbHVl"


def secret(name: str = "creds") -> JsonObj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "ops",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                    {"stringData": {"token": SECRET_VALUE}}
                )
            },
        },
        "data": {"token": base64.b64encode(SECRET_VALUE.encode()).decode()},
        "stringData": {"password": SECRET_VALUE},
    }


def traced(clock: FakeClock) -> tuple[ReplayApi, TracingApi, io.StringIO]:
    out = io.StringIO()
    world = ReplayApi(clock=clock)
    return world, TracingApi(world, Tracer(out, clock=clock)), out


def lines(api: TracingApi, out: io.StringIO) -> list[JsonObj]:
    api.tracer.flush()  # event lines are buffered
    return [json.loads(text) for text in out.getvalue().splitlines()]


# -- scrubbing -----------------------------------------------------------------------------


def test_a_secrets_values_are_replaced_and_its_keys_kept() -> None:
    clean = scrub(secret())
    assert clean["data"] == {"token": SCRUBBED_B64}
    assert clean["stringData"] == {"password": SCRUBBED}
    assert (
        "kubectl.kubernetes.io/last-applied-configuration" not in clean["metadata"]["annotations"]
    )
    assert SECRET_VALUE not in json.dumps(clean)


def test_secret_looking_fields_go_and_references_to_secrets_stay() -> None:
    cluster = {
        "kind": "Cluster",
        "metadata": {"name": "c", "managedFields": [{"manager": "x"}]},
        "spec": {
            "registrationToken": TOKEN,
            "registrationTokenSecretRef": {"name": "reg", "key": "registrationToken"},
            "values": {"db": {"password": "hunter2", "privateKey": "k", "secretName": "db-creds"}},
            "note": JWT,
        },
        "status": {"credentialStatus": {"registrationTokenConsumed": True, "secretName": "s"}},
    }
    clean = scrub(cluster)
    assert clean["spec"]["registrationToken"] == SCRUBBED
    assert clean["spec"]["registrationTokenSecretRef"] == {
        "name": "reg",
        "key": "registrationToken",
    }
    assert clean["spec"]["values"]["db"] == {
        "password": SCRUBBED,
        "privateKey": SCRUBBED,
        "secretName": "db-creds",
    }
    assert clean["spec"]["note"] == SCRUBBED
    assert clean["status"] == cluster["status"]
    assert "managedFields" not in clean["metadata"]
    assert cluster["spec"]["registrationToken"] == TOKEN  # a copy: the cached object is untouched


def test_a_path_names_its_resource_key_and_subresource() -> None:
    assert Target.of(CLUSTERS.path(ObjectKey(None, "c"), "status")) == Target(
        "clusters.ops.vworkspace.io", None, "c", "status"
    )
    assert Target.of(SECRETS.path(ObjectKey("ops", "creds"))).key() == "ops/creds"
    assert Target.of(SECRETS.collection_path("ops")) == Target("secrets", "ops", None, None)


# -- the informer's events and the controller's reconciles ----------------------------------


async def test_without_a_traced_api_nothing_is_traced() -> None:
    clock = FakeClock()
    informer = Informer(ReplayApi(clock=clock), SECRETS, clock=clock)
    assert informer.tracer is None
    assert informer.store.on_read is None


async def test_an_informer_on_a_traced_api_writes_its_events_scrubbed() -> None:
    clock = FakeClock()
    world, api, out = traced(clock)
    stored = secret()
    stored["metadata"]["resourceVersion"] = "5"
    world.put("secrets", stored)
    informer = Informer(api, SECRETS, clock=clock)
    assert tracer_of(api) is informer.tracer is not None
    await informer._relist()
    written = {
        **secret(),
        "metadata": {"name": "creds", "namespace": "ops", "resourceVersion": "6"},
    }
    informer.record_write(written)
    world.remove("secrets", secret())
    await informer._relist()
    events = [line for line in lines(api, out) if line["t"] == "event"]
    assert [(e["type"], e["via"], e["seq"]) for e in events] == [
        ("ADDED", "list", 1),
        ("MODIFIED", "write", 2),
        ("DELETED", "list", 3),
    ]
    assert {e["resource"] for e in events} == {"secrets"}
    assert SECRET_VALUE not in out.getvalue()


async def test_a_reconcile_line_holds_its_reads_writes_status_and_outcome() -> None:
    clock = FakeClock()
    world, api, out = traced(clock)
    world.put("secrets", secret())
    world.put("clusters.ops.vworkspace.io", {"kind": "Cluster", "metadata": {"name": "c"}})
    informer = Informer(api, CLUSTERS, clock=clock)
    await informer._relist()

    class Reconciler:
        async def reconcile(self, key: ObjectKey) -> Result:
            cluster = informer.store.get(key)
            assert cluster is not None
            await api.get(SECRETS, ObjectKey("ops", "creds"))
            await api.create(SECRETS, secret("copy"), field_manager="test")
            status = {"phase": "Ready"}
            await api.replace(
                CLUSTERS, {**cluster, "status": status}, field_manager="t", subresource="status"
            )
            return Result.after(7.5)

    controller = Controller("cluster", Reconciler(), WorkQueue("cluster", clock=clock))
    controller.watch(informer)
    assert controller.tracer is informer.tracer
    await controller._process(ObjectKey(None, "c"))
    (line,) = [x for x in lines(api, out) if x["t"] == "reconcile"]
    assert (line["controller"], line["key"], line["seq"]) == ("cluster", "c", 1)
    assert line["reads"] == [
        {
            "resource": "clusters.ops.vworkspace.io",
            "key": "c",
            "resourceVersion": "2",  # the fake API's: the Secret was put first
            "lastResourceVersion": "2",
        }
    ]
    assert [(f["resource"], f["key"], f["code"]) for f in line["fetched"]] == [
        ("secrets", "ops/creds", 200)
    ]
    assert [
        (w["method"], w["resource"], w["key"], w.get("subresource")) for w in line["writes"]
    ] == [
        ("POST", "secrets", "ops", None),
        ("PUT", "clusters.ops.vworkspace.io", "c", "status"),
    ]
    assert line["status"] == {"phase": "Ready"}
    assert line["outcome"] == {"result": "after", "requeue_after": 7.5}
    assert line["time"] == clock.now().isoformat()
    assert SECRET_VALUE not in out.getvalue()


async def test_a_failed_reconcile_is_traced_with_its_error() -> None:
    clock = FakeClock()
    _, api, out = traced(clock)
    informer = Informer(api, CLUSTERS, clock=clock)

    class Failing:
        async def reconcile(self, key: ObjectKey) -> Result:
            raise TerminalError("no such engine")

    controller = Controller("cluster", Failing(), WorkQueue("cluster", clock=clock))
    controller.watch(informer)
    await controller._process(ObjectKey(None, "c"))
    (line,) = [x for x in lines(api, out) if x["t"] == "reconcile"]
    assert line["outcome"] == {"result": "terminal", "error": "TerminalError: no such engine"}


async def test_the_real_cluster_reconcile_over_a_registration_token_and_a_secret_leaks_neither(
    tmp_path: Path,
) -> None:
    """Issue 28 point 6: secrets never reach a trace. The operator as build_manager wires it
    (tracing on), a Cluster with an inline registration token, a Secret in the watched
    namespace; its informers list them, its Cluster controller reconciles."""
    clock = FakeClock()
    world = ReplayApi(clock=clock)
    world.put(
        "clusters.ops.vworkspace.io",
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "edge", "generation": 1, "uid": "u1", "resourceVersion": "3"},
            "spec": {"registrationToken": TOKEN, "controlPlaneURL": "https://cp.example"},
        },
    )
    world.put("secrets", secret())
    path = tmp_path / "trace.ndjson"
    manager = build_manager(
        OperatorSettings(trace_file=path),
        world,  # type: ignore[arg-type]  # build_manager takes the concrete client until issue 28 lands
        registry=CollectorRegistry(),
        clock=clock,
    )
    # A Secret informer on the operator's (traced) API, as the agent's credential store has.
    secrets = Informer(manager.informers[0].client, SECRETS, clock=clock)
    for informer in [*manager.informers, secrets]:
        await informer._relist()
    (cluster,) = [c for c in manager.controllers if c.name == "cluster"]
    await cluster._process(ObjectKey(None, "edge"))
    assert cluster.tracer is not None
    cluster.tracer.close()  # flushes; the manager never ran, so nothing else will
    text = path.read_text()
    written = [json.loads(t) for t in text.splitlines()]
    assert [w["t"] for w in written][:1] == ["header"]
    reconciles = [w for w in written if w["t"] == "reconcile"]
    assert [r["key"] for r in reconciles] == ["edge"]
    assert reconciles[0]["writes"], "the reconcile wrote (finalizer, status): the test saw it"
    assert any(e["t"] == "event" and e["resource"] == "secrets" for e in written)
    for leak in (TOKEN, SECRET_VALUE, base64.b64encode(SECRET_VALUE.encode()).decode()):
        assert leak not in text


# -- the flag ---------------------------------------------------------------------------------


def run_settings(argv: list[str], env: dict[str, str]) -> OperatorSettings:
    from vworkspace.app.cli import build_parser
    from vworkspace.app.run_cmd import settings_from

    return settings_from(build_parser().parse_args(["run", *argv]), env)


def test_tracing_is_off_unless_asked_for() -> None:
    assert run_settings([], {}).trace_file is None


def test_trace_file_comes_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    env = {"VWORKSPACE_TRACE_FILE": str(tmp_path / "env.ndjson")}
    assert run_settings([], env).trace_file == tmp_path / "env.ndjson"
    flag = ["--trace-file", str(tmp_path / "flag.ndjson")]
    assert run_settings(flag, env).trace_file == tmp_path / "flag.ndjson"  # the flag wins

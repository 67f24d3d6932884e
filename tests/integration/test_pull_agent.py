"""The Pull loop end to end: mock control plane -> agent -> real API server -> result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import (
    APPLICATION_INSTANCES,
    CONFIG_MAPS,
    NAMESPACES,
    OPERATIONS,
)
from vworkspace.mockcontrolplane import Fault, MockControlPlane

from .agent_harness import CLUSTER, TOKEN, Agent, instance, wait_result
from .waits import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane(visibility_timeout=1.0) as server:
        server.set_bootstrap_token(CLUSTER, TOKEN)
        yield server


@pytest.fixture
async def agent(
    kube: KubeClient, mock: MockControlPlane, kube_namespace: str, vworkspace_crds: list[str]
) -> AsyncIterator[Agent]:
    running = await Agent(kube, mock, kube_namespace).start()
    yield running
    await running.stop()


async def test_an_apply_job_creates_the_instance_with_forced_labels(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    await mock.enqueue(
        CLUSTER,
        {
            "id": "apply-1",
            "kind": "apply",
            "idempotencyKey": f"ai/{kube_namespace}/odoo@1",
            "payload": instance("odoo", kube_namespace),
        },
    )
    result = await wait_result(mock, "apply-1")
    assert mock.was_acked("apply-1")
    assert result["outcome"] == "succeeded", result
    stored = await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "odoo"))
    assert stored["metadata"]["labels"] == {
        "app.vworkspace.io/managed-by": "control-plane",  # forced over the payload's value
        "app.vworkspace.io/cluster-id": CLUSTER,
    }
    assert [m["manager"] for m in stored["metadata"]["managedFields"]] == ["vworkspace-agent"]
    assert result["appliedRef"] == {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "namespace": kube_namespace,
        "name": "odoo",
        "uid": stored["metadata"]["uid"],
        "generation": 1,
    }
    cm = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "vworkspace-applied-jobs"))
    assert json.loads(cm["data"]["applied-keys.json"]) == [f"ai/{kube_namespace}/odoo@1"]

    # The same idempotency key again: noop, and the object is not touched.
    changed = instance("odoo", kube_namespace, integrations={"ingress": {"enabled": True}})
    await mock.enqueue(
        CLUSTER,
        {
            "id": "apply-2",
            "kind": "apply",
            "idempotencyKey": f"ai/{kube_namespace}/odoo@1",
            "payload": changed,
        },
    )
    assert (await wait_result(mock, "apply-2")) == {
        "outcome": "noop",
        "timestamp": (await wait_result(mock, "apply-2"))["timestamp"],
    }
    again = await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "odoo"))
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert agent.registry.get_sample_value("vworkspace_operator_applied_jobs_total") == 1


async def test_a_missing_target_namespace_is_created(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    target = f"{kube_namespace}-new"
    try:
        await mock.enqueue(
            CLUSTER, {"id": "ns-1", "kind": "apply", "payload": instance("app", target)}
        )
        assert (await wait_result(mock, "ns-1"))["outcome"] == "succeeded"
        namespace = await kube.get(NAMESPACES, ObjectKey(None, target))
        assert namespace["metadata"]["labels"]["managed-by"] == "vworkspace"

        # The agent remembers the namespace (no GET per job); deleted behind its back, the
        # next apply's NotFound makes it create the namespace again and retry.
        await kube.delete(NAMESPACES, ObjectKey(None, target))
        for _ in range(600):  # the namespace controller empties it first
            try:
                await kube.get(NAMESPACES, ObjectKey(None, target))
            except NotFoundError:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"namespace {target} was not deleted within 60 s")
        await mock.enqueue(
            CLUSTER, {"id": "ns-2", "kind": "apply", "payload": instance("again", target)}
        )
        assert (await wait_result(mock, "ns-2"))["outcome"] == "succeeded"
        await kube.get(APPLICATION_INSTANCES, ObjectKey(target, "again"))
    finally:
        with contextlib.suppress(NotFoundError):
            await kube.delete(NAMESPACES, ObjectKey(None, target))


async def test_delete_and_intent_jobs(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    ai = instance("shop", kube_namespace)
    ai.pop("apiVersion")
    ai.pop("kind")  # intents may embed objects without apiVersion/kind
    await mock.enqueue(
        CLUSTER,
        {
            "id": "i-1",
            "kind": "intent",
            "payload": {"intent": "ensure-application-instance", "applicationInstance": ai},
        },
    )
    assert (await wait_result(mock, "i-1"))["outcome"] == "succeeded"
    op = {
        "metadata": {"name": "backup-1", "namespace": kube_namespace},
        "spec": {
            "targetRef": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "name": "shop",
            },
            "type": "Backup",
            "engine": "velero",
        },
    }
    await mock.enqueue(
        CLUSTER,
        {
            "id": "i-2",
            "kind": "intent",
            "payload": {"intent": "request-operation", "operation": op},
        },
    )
    result = await wait_result(mock, "i-2")
    assert result["outcome"] == "succeeded"
    assert result["appliedRef"]["kind"] == "Operation"
    await kube.get(OPERATIONS, ObjectKey(kube_namespace, "backup-1"))

    await mock.enqueue(
        CLUSTER,
        {
            "id": "d-1",
            "kind": "delete",
            "payload": {
                "apiVersion": "ops.vworkspace.io/v1alpha1",
                "kind": "Operation",
                "name": "backup-1",
                "namespace": kube_namespace,
            },
        },
    )
    assert (await wait_result(mock, "d-1"))["appliedRef"] == {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "namespace": kube_namespace,
        "name": "backup-1",
    }
    await mock.enqueue(
        CLUSTER,
        {
            "id": "i-3",
            "kind": "intent",
            "payload": {
                "intent": "delete-application-instance",
                "name": "shop",
                "namespace": kube_namespace,
            },
        },
    )
    assert (await wait_result(mock, "i-3"))["outcome"] == "succeeded"
    await mock.enqueue(
        CLUSTER,
        {
            "id": "i-4",
            "kind": "intent",
            "payload": {
                "intent": "delete-application-instance",
                "name": "never-was",
                "namespace": kube_namespace,
            },
        },
    )
    assert (await wait_result(mock, "i-4"))["outcome"] == "succeeded"  # NotFound is success
    for key in (ObjectKey(kube_namespace, "backup-1"),):
        with pytest.raises(NotFoundError):
            await kube.get(OPERATIONS, key)


BAD_JOBS: list[tuple[str, dict[str, Any], str]] = [
    (
        "payload-not-an-object",
        {"kind": "apply", "payload": "{this is not json"},
        "decode apply payload: payload must be a JSON object, got str",
    ),
    ("unknown-kind", {"kind": "patch", "payload": {}}, 'unsupported job kind "patch"'),
    ("no-job-kind", {"payload": {}}, 'unsupported job kind ""'),  # Go senders emit kind ""
    (
        "delete-missing-fields",
        {"kind": "delete", "payload": {"apiVersion": "v1", "kind": "Namespace"}},
        "delete payload requires apiVersion, kind, and name",
    ),
    (
        "manifest-without-apiversion",
        {"kind": "apply", "payload": {"kind": "ApplicationInstance", "metadata": {"name": "x"}}},
        "apiVersion is required",
    ),
    (
        "bad-apiversion",
        {
            "kind": "apply",
            "payload": {"apiVersion": "a/b/c", "kind": "X", "metadata": {"name": "x"}},
        },
        "parse apiVersion",
    ),
    (
        "unknown-intent",
        {"kind": "intent", "payload": {"intent": "rotate-operator-credentials"}},
        'unsupported intent "rotate-operator-credentials"',
    ),
    (
        "intent-without-object",
        {"kind": "intent", "payload": {"intent": "request-operation"}},
        "request-operation requires operation",
    ),
    (
        "oversized",
        {
            "kind": "apply",
            "payload": {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "big"},
                "data": "x" * 70_000,
            },
        },
        "payload too large",
    ),
    (
        "cluster-role-binding",
        {
            "kind": "apply",
            "payload": {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "pwn"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "User", "name": "attacker"}],
            },
        },
        "not on the agent allow-list",
    ),
    (
        "invalid-spec",
        {
            "kind": "apply",
            "payload": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "metadata": {"name": "bad", "namespace": "NS"},
                "spec": {"appRef": {}},
            },
        },
        "spec.appRef.catalogId",
    ),
    (
        # Found by the chaos tier's fuzzer: a spec that is not an object used to raise inside
        # the applier, so the job never got a result and was redelivered forever.
        "spec-not-an-object",
        {
            "kind": "apply",
            "payload": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "metadata": {"name": "bad-spec", "namespace": "NS"},
                "spec": 7,
            },
        },
        "spec must be an object, got int",
    ),
    (
        "namespace-not-a-string",
        {
            "kind": "apply",
            "payload": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "metadata": {"name": "bad-ns", "namespace": ["NS"]},
                "spec": {},
            },
        },
        "metadata.namespace must be a non-empty string, got list",
    ),
]


async def test_bad_jobs_fail_with_a_clear_message_and_the_agent_keeps_serving(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    for name, job, _ in BAD_JOBS:
        payload = json.loads(json.dumps(job).replace('"NS"', json.dumps(kube_namespace)))
        await mock.enqueue(CLUSTER, {"id": f"bad-{name}", **payload})
    await mock.enqueue(
        CLUSTER,
        {"id": "good-after", "kind": "apply", "payload": instance("still-serving", kube_namespace)},
    )
    for name, _, message in BAD_JOBS:
        result = await wait_result(mock, f"bad-{name}")
        assert result["outcome"] == "failed", (name, result)
        assert message in result["error"], (name, result["error"])
        assert "appliedRef" not in result
    assert (await wait_result(mock, "good-after"))["outcome"] == "succeeded"
    with pytest.raises(NotFoundError):
        await kube.request(
            "GET", ApiPath.parse("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/pwn")
        )


async def test_an_expired_job_is_a_noop_that_touches_nothing(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat()
    await mock.enqueue(
        CLUSTER,
        {
            "id": "old",
            "kind": "apply",
            "expiresAt": past,
            "payload": instance("late", kube_namespace),
        },
    )
    result = await wait_result(mock, "old")
    assert (result["outcome"], result["error"]) == ("noop", "expired")
    with pytest.raises(NotFoundError):
        await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "late"))


async def test_server_errors_and_stalls_lose_no_job_and_apply_none_twice(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    mock.state.inject(Fault("/jobs", status=500, count=3))  # fetches fail
    mock.state.inject(Fault("/ack", status=503, count=2))  # acks are throttled
    mock.state.inject(Fault("/result", delay=2.0, status=0, count=2))  # results stall
    mock.state.inject(Fault("/result", status=500, count=2))  # then fail
    for index in range(6):
        await mock.enqueue(
            CLUSTER,
            {
                "id": f"f-{index}",
                "kind": "apply",
                "idempotencyKey": f"f-{index}",
                "payload": instance(f"app-{index}", kube_namespace),
            },
        )
    results = [await wait_result(mock, f"f-{index}", timeout=60) for index in range(6)]
    assert [r["outcome"] for r in results] == ["succeeded"] * 6
    assert agent.count("succeeded") == 6  # each applied exactly once
    assert not mock.state.faults  # every scripted fault was hit


async def test_a_crash_between_apply_and_result_yields_noop_on_redelivery(
    kube: KubeClient, mock: MockControlPlane, kube_namespace: str, vworkspace_crds: list[str]
) -> None:
    first = await Agent(kube, mock, kube_namespace).start()
    mock.state.inject(Fault("/result", delay=30, status=0, count=1))  # the result never arrives...
    await mock.enqueue(
        CLUSTER,
        {
            "id": "crash",
            "kind": "apply",
            "idempotencyKey": "crash-key",
            "payload": instance("crashy", kube_namespace),
        },
    )

    async def result_stalled() -> bool:
        # Applied, and its result POST in flight: the stalling fault above has taken it.
        return bool(first.count("succeeded")) and not mock.state.faults

    await eventually(result_stalled, what="the job applied and its result stalled")
    await first.kill()  # ...because the operator dies here
    assert mock.job_result("crash") is None
    await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "crashy"))  # it was applied

    second = await Agent(kube, mock, kube_namespace).start()  # the restarted operator
    try:
        result = await wait_result(
            mock, "crash", timeout=20
        )  # redelivered after the visibility timeout
        assert result["outcome"] == "noop"
        assert second.count("succeeded") == 0
    finally:
        await second.stop()


async def test_a_rotated_token_is_used_without_a_restart(
    kube: KubeClient, mock: MockControlPlane, kube_namespace: str, vworkspace_crds: list[str]
) -> None:
    agent = Agent(kube, mock, kube_namespace, use_overrides=False)
    from vworkspace.agent.wire import Credentials

    await agent.store.persist(Credentials(mock.url, CLUSTER, TOKEN))
    await agent.start()
    try:
        await mock.enqueue(
            CLUSTER,
            {"id": "before", "kind": "apply", "payload": instance("before", kube_namespace)},
        )
        assert (await wait_result(mock, "before"))["outcome"] == "succeeded"
        new_token = await agent.client.rotate()  # the old token is invalid from now on
        await agent.store.persist(
            Credentials(mock.url, CLUSTER, new_token)
        )  # as the Cluster reconciler does
        for index in range(3):
            await mock.enqueue(
                CLUSTER,
                {
                    "id": f"after-{index}",
                    "kind": "apply",
                    "payload": instance(f"after-{index}", kube_namespace),
                },
            )
        for index in range(3):
            assert (await wait_result(mock, f"after-{index}"))["outcome"] == "succeeded"
        assert agent.count("failed") == 0
        assert agent.store.current() is not None
        assert agent.store.current().token == new_token  # type: ignore[union-attr]
    finally:
        await agent.stop()


async def test_a_field_owned_by_another_manager_is_a_conflict_naming_both(
    kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    from vworkspace.agent.applier import DEFAULT_ALLOWED

    agent = await Agent(
        kube, mock, kube_namespace, allowed=DEFAULT_ALLOWED | {("", "ConfigMap")}
    ).start()
    try:
        owned = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared", "namespace": kube_namespace},
            "data": {"mode": "manual"},
        }
        await kube.apply(CONFIG_MAPS, owned, field_manager="kubectl-client-side", force=False)
        await mock.enqueue(
            CLUSTER,
            {"id": "clash", "kind": "apply", "payload": {**owned, "data": {"mode": "auto"}}},
        )
        result = await wait_result(mock, "clash")
        assert result["outcome"] == "conflict"
        assert (
            result["error"]
            == 'apply conflict: .data.mode is owned by field manager "kubectl-client-side"'
        )
        stored = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shared"))
        assert stored["data"] == {"mode": "manual"}  # nothing was taken over
    finally:
        await agent.stop()


async def test_jobs_on_one_object_run_in_arrival_order(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    # One batch: create, change, delete the same object, interleaved with other objects. Any
    # reordering would leave the object behind or fail the change.
    ai = instance("ordered", kube_namespace)
    jobs = [
        {"id": "o-1", "kind": "apply", "payload": ai},
        {"id": "x-1", "kind": "apply", "payload": instance("other-1", kube_namespace)},
        {
            "id": "o-2",
            "kind": "apply",
            "payload": instance(
                "ordered", kube_namespace, integrations={"ingress": {"enabled": True}}
            ),
        },
        {"id": "x-2", "kind": "apply", "payload": instance("other-2", kube_namespace)},
        {
            "id": "o-3",
            "kind": "delete",
            "payload": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "name": "ordered",
                "namespace": kube_namespace,
            },
        },
    ]
    for job in jobs:
        mock.state.cluster(CLUSTER).queue.append(job)  # enqueue all before the next poll
    await mock.enqueue(
        CLUSTER, {"id": "x-3", "kind": "apply", "payload": instance("other-3", kube_namespace)}
    )
    results = {j["id"]: await wait_result(mock, j["id"]) for j in [*jobs, {"id": "x-3"}]}
    assert all(r["outcome"] == "succeeded" for r in results.values()), results
    assert mock.state.result_at["o-1"] < mock.state.result_at["o-2"] < mock.state.result_at["o-3"]
    with pytest.raises(NotFoundError):
        await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "ordered"))


async def test_idempotency_keys_survive_restarts_and_are_bounded(
    kube: KubeClient, kube_namespace: str
) -> None:
    from vworkspace.agent.idempotency import IdempotencyStore

    store = IdempotencyStore(kube, namespace=kube_namespace, max_keys=3)
    for key in ("k1", "k2", "k3", "k4"):
        await store.record(key)
    restarted = IdempotencyStore(kube, namespace=kube_namespace, max_keys=3)
    assert [await restarted.contains(k) for k in ("k1", "k2", "k3", "k4")] == [
        False,
        True,
        True,
        True,
    ]
    # Two writers: neither loses the other's key (compare-and-swap, then merge).
    await store.record("from-first")
    await restarted.record("from-second")
    final = IdempotencyStore(kube, namespace=kube_namespace, max_keys=3)
    assert await final.contains("from-first")
    assert await final.contains("from-second")


async def test_long_idempotency_keys_keep_the_configmap_under_the_object_limit(
    kube: KubeClient, kube_namespace: str
) -> None:
    """Issue 16: keys are free-form; 10,000 keys of 110 characters are over 1 MiB. Seed the
    ConfigMap with a list just under the API server's limit (one write, as an older agent
    bounded by count only would have left it), then record more long keys: a count bound
    alone would push it over the limit and have every write refused; with the byte bound every
    write is accepted, the oldest keys go, and the list stays within the bound."""
    from vworkspace.agent.idempotency import DATA_KEY, IdempotencyStore

    keys = [f"{index:06d}-" + "k" * 103 for index in range(10_000)]
    seed = keys[:9_180]  # 9,180 x 114 bytes: just under 1 MiB
    assert len(json.dumps(keys[:9_210]).encode()) > 1024 * 1024
    store = IdempotencyStore(kube, namespace=kube_namespace)
    await kube.create(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": store.key.name, "namespace": kube_namespace},
            "data": {DATA_KEY: json.dumps(seed)},
        },
        field_manager="test",
    )
    for key in keys[9_180:9_210]:
        await store.record(key)
    stored = await kube.get(CONFIG_MAPS, store.key)
    data = stored["data"][DATA_KEY]
    assert len(data.encode()) <= store.max_bytes
    kept = json.loads(data)
    assert kept == keys[9_210 - len(kept) : 9_210]  # the newest, in order; the oldest evicted
    assert len(kept) < 9_210
    restarted = IdempotencyStore(kube, namespace=kube_namespace)
    assert await restarted.contains(keys[9_209])
    assert not await restarted.contains(keys[0])

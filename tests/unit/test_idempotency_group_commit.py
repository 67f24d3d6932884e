"""Group commit of idempotency keys (issue 17, docs/pull-mode.md "Idempotency"): keys recorded
together are ONE ConfigMap write; a job's result is posted only once its key is durable; a
failed write fails every job of its batch, and none of them is reported ``succeeded``.

The Kubernetes side is a small in-memory ConfigMap with resourceVersion compare-and-swap (a
narrow fake: the store's real-API behaviour is covered by tests/integration/test_pull_agent.py),
whose writes can be held open, failed or raced by "another writer".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.agent.idempotency import CONFIG_MAP, DATA_KEY, IdempotencyStore
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.poller import Poller
from vworkspace.agent.wire import Job, JobResult, Outcome
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.api import MERGE_PATCH
from vworkspace.kube.rest.errors import ApiError, error_for
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import CONFIG_MAPS
from vworkspace.testing.fakeapi import FakeApi

CM = ObjectKey("ops", CONFIG_MAP)


class FakeConfigMaps(FakeApi):
    """The fake API (real resourceVersion compare-and-swap) whose ConfigMap writes can be held
    open (``gate``), failed with a 500 (``fail_next``) or raced by another writer whose key
    list is stored just before ours (``race_next``); ``written_keys`` are the key lists of every
    write attempt, ``gets`` the reads."""

    def __init__(self) -> None:
        super().__init__()
        self.written_keys: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # set: writes wait for it
        self.writing = asyncio.Event()  # set while a write waits at the gate
        self.fail_writes = 0
        self.race_next: list[str] | None = None

    @property
    def object(self) -> JsonObj | None:
        return self.stored(CONFIG_MAPS, CM)

    @object.setter
    def object(self, obj: JsonObj) -> None:
        self.add(CONFIG_MAPS, {**obj, "metadata": {"name": CM.name, "namespace": CM.namespace}})

    @property
    def gets(self) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and "configmaps" in path)

    def stored_keys(self) -> list[str]:
        data = (self.object or {}).get("data") or {}
        keys: list[str] = json.loads(data.get(DATA_KEY, "[]"))
        return keys

    async def request(self, method: str, path: ApiPath, **kwargs: Any) -> JsonObj:
        if method in ("POST", "PUT") and "configmaps" in path.segments:
            await self._before_write(kwargs["body"])
        return await super().request(method, path, **kwargs)

    async def _before_write(self, body: JsonObj) -> None:
        self.written_keys.append(json.loads(body["data"][DATA_KEY]))
        if self.gate is not None:
            self.writing.set()
            await self.gate.wait()
        if self.fail_writes:
            self.fail_writes -= 1
            raise error_for(
                status=500,
                body={"reason": "InternalError", "message": "etcdserver: request timed out"},
                method="PUT",
                path="configmaps",
            )
        if self.race_next is not None:
            other, self.race_next = self.race_next, None
            data = {DATA_KEY: json.dumps(other)}
            if self.object is None:
                self.object = {"data": data}
            else:  # straight to the fake (not through this class: no hooks, not an attempt)
                path = CONFIG_MAPS.path(CM)
                patch = {"data": data}
                await FakeApi.request(self, "PATCH", path, body=patch, content_type=MERGE_PATCH)


def store_for(fake: FakeConfigMaps, **kwargs: Any) -> IdempotencyStore:
    return IdempotencyStore(fake, namespace=CM.namespace or "", **kwargs)


async def test_keys_recorded_together_are_one_write() -> None:
    fake = FakeConfigMaps()
    store = store_for(fake)
    keys = [f"job-{index}" for index in range(50)]
    await asyncio.gather(*(store.record(key) for key in keys))
    assert fake.written_keys == [keys]
    assert fake.stored_keys() == keys
    assert all([await store.contains(key) for key in keys])


async def test_a_lone_key_is_written_at_once_and_latecomers_join_the_next_write() -> None:
    fake = FakeConfigMaps()
    fake.gate = asyncio.Event()
    store = store_for(fake)
    first = asyncio.ensure_future(store.record("first"))
    await asyncio.wait_for(fake.writing.wait(), 5)  # no timer: the first key is being written
    assert fake.written_keys == [["first"]]
    later = [asyncio.ensure_future(store.record(f"later-{index}")) for index in range(20)]
    await asyncio.sleep(0)
    assert len(fake.written_keys) == 1  # they wait for the write in flight...
    assert not any(task.done() for task in [first, *later])
    fake.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    # ...and then all go in ONE more write, merged onto the first.
    assert fake.written_keys == [["first"], ["first", *(f"later-{index}" for index in range(20))]]


async def test_a_failed_write_fails_every_waiter_of_its_batch_only() -> None:
    fake = FakeConfigMaps()
    fake.fail_writes = 1
    store = store_for(fake)
    outcomes = await asyncio.gather(
        *(store.record(f"k{index}") for index in range(5)), return_exceptions=True
    )
    assert len(fake.written_keys) == 1
    assert all(isinstance(o, ApiError) and o.status == 500 for o in outcomes)
    assert not any([await store.contains(f"k{index}") for index in range(5)])
    await store.record("next")  # the next batch is written normally
    assert fake.stored_keys() == ["next"]


async def test_a_conflict_rereads_and_merges_the_other_writers_keys() -> None:
    fake = FakeConfigMaps()
    store = store_for(fake)
    await store.record("mine-0")
    fake.race_next = ["mine-0", "theirs"]  # another writer stores its list before our write
    await asyncio.gather(store.record("mine-1"), store.record("mine-2"))
    assert fake.stored_keys() == ["mine-0", "theirs", "mine-1", "mine-2"]
    assert len(fake.written_keys) == 3  # the first batch, the conflicting write, its merged retry
    assert await store.contains("theirs")  # the re-read refreshed the cache too


async def test_a_batch_keeps_the_count_and_byte_bounds() -> None:
    fake = FakeConfigMaps()
    store = store_for(fake, max_keys=3)
    await store.record("old")
    await asyncio.gather(*(store.record(f"new-{index}") for index in range(5)))
    assert fake.stored_keys() == ["new-2", "new-3", "new-4"]  # the oldest are evicted first

    sized = FakeConfigMaps()
    small = store_for(sized, max_bytes=4200)
    big = [f"{index}-" + "k" * 1500 for index in range(4)]
    await asyncio.gather(*(small.record(key) for key in big))
    assert len(json.dumps(sized.stored_keys()).encode()) <= 4200
    assert sized.stored_keys() == big[-2:]


async def test_the_same_key_twice_in_one_batch_is_stored_once() -> None:
    fake = FakeConfigMaps()
    store = store_for(fake)
    await store.record("a")
    await asyncio.gather(store.record("b"), store.record("a"), store.record("b"))
    assert fake.stored_keys() == ["b", "a"]  # a re-recorded key moves to the newest end


async def test_contains_reads_the_cache_and_does_not_wait_for_a_write() -> None:
    fake = FakeConfigMaps()
    fake.object = {
        "metadata": {"name": "cm", "resourceVersion": "7"},
        "data": {DATA_KEY: json.dumps(["seen"])},
    }
    store = store_for(fake)
    answers = await asyncio.gather(*(store.contains("seen") for _ in range(100)))
    assert all(answers)
    assert fake.gets == 1  # one read at first use, however many jobs asked at once
    fake.gate = asyncio.Event()
    pending = asyncio.ensure_future(store.record("new"))
    await asyncio.wait_for(fake.writing.wait(), 5)
    assert await asyncio.wait_for(store.contains("seen"), 1)  # not blocked by the write
    assert not await store.contains("new")  # not durable yet
    fake.gate.set()
    await pending
    assert await store.contains("new")
    assert fake.gets == 1


async def test_close_finishes_a_write_in_flight() -> None:
    fake = FakeConfigMaps()
    fake.gate = asyncio.Event()
    store = store_for(fake)
    pending = asyncio.ensure_future(store.record("k"))
    await asyncio.wait_for(fake.writing.wait(), 5)
    asyncio.get_running_loop().call_later(0.05, fake.gate.set)
    await store.close(grace=5)
    assert fake.stored_keys() == ["k"]
    await pending


# -- through the poller: results only after the key is durable ---------------------------------


class FakeControlPlane:
    def __init__(self, fake: FakeConfigMaps) -> None:
        self._fake = fake
        self.results: dict[str, JobResult] = {}
        self.durable_when_posted: dict[str, bool] = {}

    async def ack(self, job_id: str) -> None:
        return None

    async def post_result(self, job_id: str, result: JobResult) -> None:
        self.durable_when_posted[job_id] = job_id in self._fake.stored_keys()
        self.results[job_id] = result


class SucceedingApplier:
    async def process(self, job: Job) -> JobResult:
        await asyncio.sleep(0)
        return JobResult(outcome=Outcome.SUCCEEDED, timestamp=RealClock().now())


def poller_for(fake: FakeConfigMaps, plane: FakeControlPlane) -> Poller:
    return Poller(
        client=plane,  # type: ignore[arg-type]
        credentials=None,  # type: ignore[arg-type]
        applier=SucceedingApplier(),  # type: ignore[arg-type]
        idempotency=store_for(fake),
        clock=RealClock(),
        metrics=AgentMetrics(CollectorRegistry()),
        concurrency=16,
    )


def jobs(count: int) -> list[Job]:
    return [
        Job(id=f"j{index}", kind="apply", payload={}, idempotency_key=f"j{index}")
        for index in range(count)
    ]


async def test_results_are_posted_only_once_the_keys_are_durable() -> None:
    fake = FakeConfigMaps()
    plane = FakeControlPlane(fake)
    poller = poller_for(fake, plane)
    await asyncio.gather(*(poller._process(job) for job in jobs(40)))
    assert {r.outcome for r in plane.results.values()} == {Outcome.SUCCEEDED}
    assert len(plane.results) == 40
    assert all(plane.durable_when_posted.values())
    assert len(fake.written_keys) < 40  # grouped: far fewer writes than jobs


async def test_a_failed_write_gives_every_job_of_its_batch_the_record_error() -> None:
    fake = FakeConfigMaps()
    fake.fail_writes = 1
    plane = FakeControlPlane(fake)
    poller = poller_for(fake, plane)
    await asyncio.gather(*(poller._process(job) for job in jobs(8)))
    assert len(fake.written_keys) == 1
    assert {r.outcome for r in plane.results.values()} == {Outcome.FAILED}
    assert all(
        r.error == "record idempotency key: etcdserver: request timed out"
        for r in plane.results.values()
    )
    assert not fake.stored_keys()


@pytest.mark.parametrize("error", [TimeoutError("slow"), ConnectionResetError("reset")])
async def test_a_transport_error_is_a_failed_result_not_a_lost_job(error: Exception) -> None:
    import aiohttp

    fake = FakeConfigMaps()
    plane = FakeControlPlane(fake)
    poller = poller_for(fake, plane)
    raised = error if isinstance(error, TimeoutError) else aiohttp.ClientOSError(str(error))

    async def broken(*args: Any, **kwargs: Any) -> JsonObj:
        raise raised

    fake.replace = broken  # type: ignore[method-assign]
    fake.create = broken  # type: ignore[method-assign]
    await poller._process(jobs(1)[0])
    result = plane.results["j0"]
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("record idempotency key: ")

"""Replay protection for signed jobs (issue 24, F3 and "Startup"; docs/pull-mode.md "Signed jobs"
and "Idempotency"): with signatures required a signed job needs an idempotencyKey, its id is
remembered in the idempotency ConfigMap until its ``expiresAt``, a second delivery is ``noop`` /
``replayed`` and never applied (also after a restart), the bound fails closed, and the poller
fetches nothing before the trusted keys are listed.

The ConfigMap is the compare-and-swap fake of test_idempotency_group_commit.py; the real API
server and operator are in tests/integration/test_signed_jobs.py.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from vworkspace.agent import replay, signing
from vworkspace.agent.idempotency import DATA_KEY, IdempotencyStore
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.poller import Poller
from vworkspace.agent.verifier import JobVerifier
from vworkspace.agent.wire import Credentials, Job, JobResult, Outcome

from .test_idempotency_group_commit import FakeConfigMaps
from .test_job_signing import EXAMPLE_CLUSTER, example_job, sign_with, trusted

NOW = datetime.datetime(2026, 5, 1, 12, 30, tzinfo=datetime.UTC)  # the example expires at 13:00
HOUR = datetime.timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime.datetime = NOW) -> None:
        self.at = now

    def now(self) -> datetime.datetime:
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class CountingApplier:
    def __init__(self, outcome: Outcome = Outcome.SUCCEEDED, error: str = "") -> None:
        self.applied: list[str] = []
        self.outcome = outcome
        self.error = error

    async def process(self, job: Job) -> JobResult:
        self.applied.append(job.id)
        await asyncio.sleep(0)
        return JobResult(outcome=self.outcome, timestamp=NOW, error=self.error)

    async def ensure_namespace(self, namespace: str) -> None:
        return None


class Plane:
    """The control plane as the poller sees it: acks, results, and (for run()) one fetch."""

    def __init__(self, fake: FakeConfigMaps, jobs: list[dict[str, Any]] | None = None) -> None:
        self._fake = fake
        self.jobs = jobs or []
        self.fetched = asyncio.Event()
        self.results: list[tuple[str, JobResult]] = []
        self.durable_when_posted: list[bool] = []
        self.posted = asyncio.Event()
        self.backoff = Backoff()

    async def ack(self, job_id: str) -> None:
        return None

    async def post_result(self, job_id: str, result: JobResult) -> None:
        stored = (self._fake.object or {}).get("data") or {}
        ids = replay.decode(stored.get(replay.DATA_KEY, "{}"))
        self.durable_when_posted.append(job_id in ids)
        self.results.append((job_id, result))
        self.posted.set()

    async def fetch_jobs(self, *, cluster_id: str, wait: int) -> list[dict[str, Any]]:
        self.fetched.set()
        jobs, self.jobs = self.jobs, []
        if not jobs:
            await asyncio.sleep(3600)  # a long poll with nothing queued
        return jobs


class Backoff:
    def reset(self) -> None:
        return None


class Creds:
    suspended = ""
    version = 0
    key = "ops/creds"

    def current(self) -> Credentials:
        return Credentials(base_url="http://cp", cluster_id=EXAMPLE_CLUSTER, token="t")


def verifier(clock: Clock, *, require: bool = True, **kwargs: Any) -> JobVerifier:
    return JobVerifier(
        keys=trusted,
        clock=clock,
        require=require,
        max_age=datetime.timedelta(hours=24),
        **kwargs,
    )


def store_for(fake: FakeConfigMaps, clock: Clock, **kwargs: Any) -> IdempotencyStore:
    return IdempotencyStore(fake, namespace="ops", clock=clock, **kwargs)


def poller_for(
    fake: FakeConfigMaps,
    clock: Clock,
    applier: CountingApplier,
    *,
    plane: Plane | None = None,
    check: JobVerifier | None = None,
    **store: Any,
) -> tuple[Poller, Plane, CollectorRegistry]:
    plane = plane or Plane(fake)
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    poller = Poller(
        client=plane,  # type: ignore[arg-type]
        credentials=Creds(),  # type: ignore[arg-type]
        applier=applier,  # type: ignore[arg-type]
        idempotency=store_for(fake, clock, **store),
        clock=clock,
        metrics=metrics,
        verifier=check or verifier(clock),
    )
    return poller, plane, registry


def signed_job(job_id: str = "job-0042", **fields: Any) -> Job:
    """The documented example job (key ``applicationinstance/team-a/wiki@3``), signed, with
    ``id`` and any other field changed."""
    return Job.from_wire(sign_with({**example_job(), "id": job_id, **fields}))


def keyed(job_id: str, **fields: Any) -> Job:
    """A signed job with a key of its own."""
    return signed_job(job_id, idempotencyKey=f"key-{job_id}", **fields)


def rejections(registry: CollectorRegistry, reason: str) -> float:
    found = registry.get_sample_value("vworkspace_agent_job_rejections_total", {"reason": reason})
    return found or 0.0


def outcomes(plane: Plane) -> list[tuple[str, str]]:
    return [(r.outcome.value, r.error) for _, r in plane.results]


# -- F3: the same signed job three times ------------------------------------------------------


async def test_a_signed_job_delivered_three_times_is_applied_once_then_replayed() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    poller, plane, metrics = poller_for(fake, clock, applier)
    for _ in range(3):
        await poller._process(signed_job())
    assert outcomes(plane) == [("succeeded", ""), ("noop", "replayed"), ("noop", "replayed")]
    assert applier.applied == ["job-0042"]
    assert plane.durable_when_posted[0]  # the id was durable before the first result went out
    assert rejections(metrics, signing.REPLAYED) == 2


async def test_a_replay_after_a_restart_is_refused_from_the_stored_ids() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    first, _, _ = poller_for(fake, clock, CountingApplier())
    await first._process(signed_job())
    # A new process: a new store and poller over the same ConfigMap.
    applier = CountingApplier()
    second, plane, _ = poller_for(fake, clock, applier)
    await second._process(signed_job())
    assert outcomes(plane) == [("noop", "replayed")]
    assert applier.applied == []


async def test_a_replay_with_its_key_evicted_is_still_refused_by_its_id() -> None:
    """The keys are bounded and evict the oldest; the id outlives that until the job expires."""
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    poller, plane, _ = poller_for(fake, clock, applier, max_keys=1)
    await poller._process(signed_job("j-1", idempotencyKey="k-1"))
    await poller._process(signed_job("j-2", idempotencyKey="k-2"))  # evicts k-1
    assert fake.stored_keys() == ["k-2"]
    await poller._process(signed_job("j-1", idempotencyKey="k-1"))
    assert outcomes(plane)[-1] == ("noop", "replayed")
    assert applier.applied == ["j-1", "j-2"]


async def test_concurrent_deliveries_of_one_id_apply_once() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    fake.gate = asyncio.Event()  # the first record stays in flight
    poller, plane, _ = poller_for(fake, clock, applier)
    first = asyncio.ensure_future(poller._process(signed_job()))
    await asyncio.wait_for(fake.writing.wait(), 5)
    second = asyncio.ensure_future(poller._process(signed_job()))
    # Answered while the first is still in hand (its id reserved), without waiting for it.
    await asyncio.wait_for(plane.posted.wait(), 5)
    assert outcomes(plane) == [("noop", "replayed")]
    fake.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert outcomes(plane) == [("noop", "replayed"), ("succeeded", "")]
    assert applier.applied == ["job-0042"]


async def test_a_failed_job_is_remembered_too_so_its_replay_cannot_succeed_later() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    failing = CountingApplier(Outcome.FAILED, "server-side apply: etcd timeout")
    poller, plane, _ = poller_for(fake, clock, failing)
    await poller._process(signed_job())
    failing.outcome = Outcome.SUCCEEDED
    await poller._process(signed_job())
    assert outcomes(plane) == [
        ("failed", "server-side apply: etcd timeout"),
        ("noop", "replayed"),
    ]
    assert plane.durable_when_posted == [True, True]
    assert fake.stored_keys() == []  # the key only ever for a success
    assert len(failing.applied) == 1


async def test_an_id_that_cannot_be_recorded_fails_the_job_and_is_not_remembered() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    fake.fail_writes = 1
    applier = CountingApplier()
    poller, plane, _ = poller_for(fake, clock, applier)
    await poller._process(signed_job())
    assert outcomes(plane) == [("failed", "record idempotency key: etcdserver: request timed out")]
    await poller._process(signed_job())  # the redelivery: nothing was durable, so it applies
    assert outcomes(plane)[-1] == ("succeeded", "")
    assert not poller._idempotency._reserved  # no reservation left behind


async def test_a_failed_job_whose_id_cannot_be_recorded_names_both_errors() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    fake.fail_writes = 1
    failing = CountingApplier(Outcome.FAILED, "server-side apply: etcd timeout")
    poller, plane, _ = poller_for(fake, clock, failing)
    await poller._process(signed_job())
    assert outcomes(plane) == [
        (
            "failed",
            "record job id: etcdserver: request timed out "
            "(the job itself: failed: server-side apply: etcd timeout)",
        )
    ]


async def test_unsigned_jobs_without_required_signatures_keep_the_old_behaviour() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    poller, plane, _ = poller_for(fake, clock, applier, check=verifier(clock, require=False))
    unsigned = Job.from_wire(example_job())
    for _ in range(2):
        await poller._process(unsigned)
    assert outcomes(plane) == [("succeeded", ""), ("noop", "")]  # the key, as before
    assert replay.DATA_KEY not in (fake.object or {}).get("data", {})  # Go's layout only


# -- the idempotency key is required ----------------------------------------------------------


async def test_a_signed_job_without_an_idempotency_key_is_refused() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    poller, plane, metrics = poller_for(fake, clock, applier)
    for blank in (None, "", "   "):
        await poller._process(signed_job(idempotencyKey=blank))
    refused = "signature: a signed job must carry an idempotencyKey (--agent-require-signed-jobs)"
    assert outcomes(plane) == [("failed", refused)] * 3
    assert applier.applied == []
    assert rejections(metrics, signing.NO_IDEMPOTENCY_KEY) == 3


async def test_an_expired_signed_job_without_a_key_stays_noop_expired() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(NOW + HOUR), CountingApplier()
    poller, plane, _ = poller_for(fake, clock, applier)
    await poller._process(signed_job(idempotencyKey=None))
    assert outcomes(plane) == [("noop", "expired")]
    assert applier.applied == []


# -- forgetting, and the bound ----------------------------------------------------------------


async def test_ids_are_forgotten_on_the_first_write_after_their_job_expired() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    poller, plane, _ = poller_for(fake, clock, CountingApplier())
    await poller._process(signed_job("early", expiresAt="2026-05-01T12:45:00Z"))
    await poller._process(signed_job("late", expiresAt="2026-05-01T13:30:00.5Z"))
    stored = replay.decode(fake.object["data"][replay.DATA_KEY])  # type: ignore[index]
    assert stored == {
        "early": int(datetime.datetime(2026, 5, 1, 12, 45, tzinfo=datetime.UTC).timestamp()),
        "late": int(datetime.datetime(2026, 5, 1, 13, 30, 1, tzinfo=datetime.UTC).timestamp()),
    }  # rounded up: never forgotten before the job expires
    clock.at = datetime.datetime(2026, 5, 1, 12, 50, tzinfo=datetime.UTC)
    await poller._process(signed_job("next"))
    stored = replay.decode(fake.object["data"][replay.DATA_KEY])  # type: ignore[index]
    assert list(stored) == ["late", "next"]
    # The forgotten job is refused by its expiry, before its id is looked up.
    await poller._process(signed_job("early", expiresAt="2026-05-01T12:45:00Z"))
    assert outcomes(plane)[-1] == ("noop", "expired")


async def test_at_the_bound_new_signed_jobs_are_refused_not_old_ids_forgotten() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    poller, plane, metrics = poller_for(fake, clock, applier, max_ids=2)
    await poller._process(keyed("a", expiresAt="2026-05-01T12:40:00Z"))
    await poller._process(keyed("b"))
    await poller._process(keyed("c"))
    outcome, error = outcomes(plane)[-1]
    assert outcome == "failed"
    assert error == (
        "replay protection: 2 unexpired job ids are remembered, the limit is 2 ids and "
        f"{replay.MAX_BYTES} bytes; new signed jobs are refused until the first expires at "
        "2026-05-01T12:40:00Z"
    )
    assert applier.applied == ["a", "b"]  # c never applied
    assert rejections(metrics, signing.REPLAY_CAPACITY) == 1
    await poller._process(keyed("a", expiresAt="2026-05-01T12:40:00Z"))
    assert outcomes(plane)[-1] == ("noop", "replayed")  # a is still remembered
    clock.at = datetime.datetime(2026, 5, 1, 12, 41, tzinfo=datetime.UTC)  # a expired
    await poller._process(keyed("c"))
    assert outcomes(plane)[-1] == ("succeeded", "")
    stored = replay.decode(fake.object["data"][replay.DATA_KEY])  # type: ignore[index]
    assert list(stored) == ["b", "c"]


async def test_the_byte_bound_holds_and_counts_jobs_in_flight() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    expiry = replay.expiry_of(NOW + HOUR)
    room = replay.encoded_size({"a" * 200: expiry}) + replay.entry_size("b" * 200, expiry)
    store = store_for(fake, clock, max_id_bytes=room)
    assert not await store.seen("x")
    assert store.reserve("a" * 200, NOW + HOUR) == ""
    assert store.reserve("b" * 200, NOW + HOUR) == ""
    assert store.reserve("c", NOW + HOUR).startswith("replay protection: 2 unexpired")
    assert await store.seen("a" * 200)  # in flight counts as seen
    store.release("b" * 200)
    assert store.reserve("c", NOW + HOUR) == ""


def test_an_overlong_job_id_is_refused() -> None:
    assert replay.id_problem("j" * replay.MAX_ID_BYTES) == ""
    assert replay.id_problem("j" * (replay.MAX_ID_BYTES + 1)) == (
        f"replay protection: the job id is longer than {replay.MAX_ID_BYTES} bytes"
    )
    assert replay.id_problem("\u0001" * 50) != ""  # escapes count: 6 bytes each


async def test_the_store_keeps_the_go_keys_array_next_to_the_ids() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    poller, _, _ = poller_for(fake, clock, CountingApplier())
    await poller._process(signed_job())
    data = fake.object["data"]  # type: ignore[index]
    assert json.loads(data[DATA_KEY]) == ["applicationinstance/team-a/wiki@3"]
    assert json.loads(data[replay.DATA_KEY]) == {"job-0042": replay.expiry_of(NOW + HOUR / 2)}


def test_stored_ids_of_the_wrong_shape_are_skipped() -> None:
    assert replay.decode("not json") == {}
    assert replay.decode("[1, 2]") == {}
    assert replay.decode('{"a": 1, "b": "2", "c": true, "": 3, "d": 4}') == {"a": 1, "d": 4}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=40), st.integers(min_value=-(2**40), max_value=2**40)
    )
)
def test_the_computed_size_is_the_encoded_size(ids: dict[str, int]) -> None:
    assert replay.encoded_size(ids) == len(replay.encode(ids).encode())
    assert replay.decode(replay.encode(ids)) == ids


# -- startup: no fetch before the trusted keys are listed -------------------------------------


async def test_the_poller_fetches_nothing_before_the_trusted_keys_are_listed() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    listed = asyncio.Event()
    keys: dict[str, Any] = {}  # the informer's cache, empty until it has listed
    check = JobVerifier(
        keys=lambda: keys,
        clock=clock,
        require=True,
        synced=listed.is_set,
        wait_synced=listed.wait,
    )
    applier = CountingApplier()
    plane = Plane(fake, jobs=[sign_with(example_job())])
    poller, _, _ = poller_for(fake, clock, applier, plane=plane, check=check)
    stop = asyncio.Event()
    running = asyncio.ensure_future(poller.run(stop))
    await asyncio.sleep(0.05)
    assert not plane.fetched.is_set()  # waiting for the keys, not failing jobs as unknown_key
    keys.update(trusted())
    listed.set()
    await asyncio.wait_for(plane.posted.wait(), 5)
    assert outcomes(plane) == [("succeeded", "")]
    stop.set()
    await asyncio.wait_for(running, 5)


async def test_a_stop_while_waiting_for_the_keys_ends_the_poller() -> None:
    fake, clock = FakeConfigMaps(), Clock()
    never = asyncio.Event()
    check = JobVerifier(
        keys=dict,
        clock=clock,
        synced=never.is_set,
        wait_synced=never.wait,
    )
    poller, plane, _ = poller_for(fake, clock, CountingApplier(), check=check)
    stop = asyncio.Event()
    running = asyncio.ensure_future(poller.run(stop))
    await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert not plane.fetched.is_set()


async def test_the_poller_reads_the_store_again_before_its_first_job() -> None:
    """A new leader's store may have been read while the old leader still answered jobs."""
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    plane = Plane(fake, jobs=[sign_with(example_job())])
    standby, _, _ = poller_for(fake, clock, applier, plane=plane)
    assert not await standby._idempotency.seen("job-0042")  # cached: nothing recorded yet
    leader, _, _ = poller_for(fake, clock, CountingApplier())
    await leader._process(signed_job())  # the old leader answers the job
    stop = asyncio.Event()
    running = asyncio.ensure_future(standby.run(stop))
    await asyncio.wait_for(plane.posted.wait(), 5)
    assert outcomes(plane) == [("noop", "replayed")]
    assert applier.applied == []
    stop.set()
    await asyncio.wait_for(running, 5)


async def test_a_failed_read_at_start_leaves_no_old_copy_to_trust() -> None:
    fake, clock, applier = FakeConfigMaps(), Clock(), CountingApplier()
    standby, plane, _ = poller_for(fake, clock, applier)
    assert not await standby._idempotency.seen("job-0042")  # an old copy: nothing recorded
    leader, _, _ = poller_for(fake, clock, CountingApplier())
    await leader._process(signed_job())
    real_get = fake.get

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("API server unreachable")

    fake.get = unreachable  # type: ignore[method-assign]
    await standby._load_store()  # logged, not fatal
    await standby._process(signed_job())
    assert outcomes(plane) == [("failed", "check job id: TimeoutError: API server unreachable")]
    fake.get = real_get  # type: ignore[method-assign]
    await standby._process(signed_job())
    assert outcomes(plane)[-1] == ("noop", "replayed")
    assert applier.applied == []


@pytest.mark.parametrize("require", [True, False])
async def test_a_verifier_without_a_key_informer_is_ready_at_once(require: bool) -> None:
    check = verifier(Clock(), require=require)
    assert check.ready
    await asyncio.wait_for(check.wait_ready(), 1)

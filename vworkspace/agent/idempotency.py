"""Idempotency keys of applied jobs, and the ids of answered signed jobs (agent/replay.py),
persisted in a ConfigMap so they survive restarts.

ConfigMap ``vworkspace-applied-jobs``, key ``applied-keys.json``: a JSON array of strings, as the
Go agent writes it. Two differences: the array is kept oldest-first and **bounded** instead of
growing forever, and writes are compare-and-swap on the resourceVersion (a conflict re-reads and
merges), so two writers never lose each other's keys.

The bound is by count (default 10,000 keys) **and by bytes** (default 768 KiB of JSON): keys are
free-form, and 10,000 keys of 100 characters already exceed the API server's 1 MiB object limit,
after which every record would fail. The oldest keys are evicted until both hold; the margin to
1 MiB is for the object's metadata (managedFields grow with every writer). A single key longer
than :data:`MAX_KEY_BYTES` is refused before the job is applied (the poller fails such a job),
so one hostile key cannot evict everything else.

**Group commit** (docs/pull-mode.md, "Idempotency"): rewriting the whole ConfigMap for every job
under one lock made the record the serial point of the Pull loop (one write per job, every other
job waiting). Keys are now written as a database writes its log: the first :meth:`record` call
starts a flush at once (no timer, so a lone job pays no extra latency); keys recorded while that
write is in flight join the *next* batch, written as soon as the current one ends; each batch is
ONE compare-and-swap write, however many keys it carries. :meth:`record` returns only when the
write holding its key has succeeded and raises when it failed, for every waiter of that batch,
so the poller posts a result only for a job whose key is durable. The trade-off: a failed write
fails the whole batch (each job gets the ``record idempotency key`` error it always got), and
keys of one batch are evicted together when the bound is reached.

:meth:`contains` reads the cached list (loaded once, refreshed by a conflict), never the API
server per job, and does not wait for a write in flight.

**Job ids** (replay protection, agent/replay.py) share the ConfigMap, under a second data key,
and the group commit: :meth:`record` takes a job's key *and* its id, and the write that makes one
durable makes the other durable too. A job id is *reserved* (:meth:`reserve`) before its job is
applied, so :meth:`seen` answers a second delivery while the first is still in flight, and the
bound is enforced before the apply instead of discovered after it. Ids are never evicted to make
room (agent/replay.py says why); expired ones are pruned on every write. :meth:`load` re-reads
the ConfigMap: the poller calls it before its first fetch, so a restarted agent knows every id
recorded before the restart.
"""

from __future__ import annotations

import asyncio
import datetime
import json

import attrs

from vworkspace.agent import replay
from vworkspace.api.constants import FIELD_MANAGER_AGENT
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock, RealClock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import AlreadyExistsError, ConflictError, NotFoundError
from vworkspace.kube.rest.resources import CONFIG_MAPS

CONFIG_MAP = "vworkspace-applied-jobs"
DATA_KEY = "applied-keys.json"
MAX_BYTES = 768 * 1024
MAX_KEY_BYTES = 4096


def encoded_size(key: str) -> int:
    """Bytes ``key`` takes in the stored array: its JSON string plus the ``", "`` separator."""
    return len(json.dumps(key).encode()) + 2


def bounded(keys: list[str], *, max_keys: int, max_bytes: int) -> list[str]:
    """The newest suffix of ``keys`` (oldest first) with at most ``max_keys`` keys whose JSON
    array, as :func:`json.dumps` writes it, is at most ``max_bytes`` long."""
    total = 2  # "[]"
    start = len(keys)
    while start > 0 and len(keys) - start < max_keys:
        # Each key costs its JSON string, plus ", " unless it is the only one.
        size = encoded_size(keys[start - 1]) - (2 if start == len(keys) else 0)
        if total + size > max_bytes:
            break
        total += size
        start -= 1
    return keys[start:]


@attrs.define
class _Batch:
    """Keys and job ids waiting for one write, and the future their
    :meth:`IdempotencyStore.record` calls wait on."""

    keys: list[str]
    done: asyncio.Future[None]
    ids: replay.JobIds = attrs.field(factory=dict)


@attrs.frozen
class _Stored:
    """What the ConfigMap holds: the keys (oldest first) and the job ids with their expiry."""

    keys: list[str]
    ids: replay.JobIds


def merged(stored: list[str], new: list[str]) -> list[str]:
    """``stored`` (oldest first) with ``new`` appended in order; a key already present moves to
    the end, so it is evicted last."""
    fresh = list(dict.fromkeys(new))
    moving = set(fresh)
    return [k for k in stored if k not in moving] + fresh


class IdempotencyStore:
    def __init__(
        self,
        client: KubeApi,
        *,
        namespace: str,
        name: str = CONFIG_MAP,
        max_keys: int = 10_000,
        max_bytes: int = MAX_BYTES,
        attempts: int = 5,
        max_ids: int = replay.MAX_IDS,
        max_id_bytes: int = replay.MAX_BYTES,
        clock: Clock | None = None,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        if max_bytes < MAX_KEY_BYTES + 2:
            raise ValueError(f"max_bytes must hold at least one key of {MAX_KEY_BYTES} bytes")
        self._client = client
        self.key = ObjectKey(namespace, name)
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.max_ids = max_ids
        self.max_id_bytes = max_id_bytes
        self._clock = clock or RealClock()
        self._keys: list[str] | None = None
        self._key_set: frozenset[str] = frozenset()
        self._ids: replay.JobIds = {}
        self._reserved: replay.JobIds = {}  # ids of jobs in flight, not yet durable
        self._load_lock = asyncio.Lock()
        self._resource_version: str | None = None
        self._open: _Batch | None = None  # keys recorded since the last flush began
        self._flusher: asyncio.Task[None] | None = None

    async def _load(self) -> _Stored:
        try:
            cm = await self._client.get(CONFIG_MAPS, self.key)
        except NotFoundError:
            self._resource_version = None
            return _Stored(keys=[], ids={})
        self._resource_version = cm["metadata"]["resourceVersion"]
        data = cm.get("data") or {}
        try:
            keys = json.loads(data.get(DATA_KEY, "[]"))
        except json.JSONDecodeError:
            keys = []
        return _Stored(
            keys=[k for k in keys if isinstance(k, str)] if isinstance(keys, list) else [],
            ids=replay.decode(data.get(replay.DATA_KEY, "{}")),
        )

    def _remember(self, stored: _Stored) -> None:
        self._keys = stored.keys
        self._key_set = frozenset(stored.keys)
        self._ids = stored.ids

    async def _cached(self) -> _Stored:
        if self._keys is None:
            async with self._load_lock:  # one first read, however many jobs ask at once
                if self._keys is None:
                    self._remember(await self._load())
        assert self._keys is not None
        return _Stored(keys=self._keys, ids=self._ids)

    async def load(self) -> None:
        """Read the ConfigMap again, whatever is cached: what another agent (a previous leader)
        recorded is known before the first job is looked up. Call it with no write in flight
        (the poller does, before its first fetch). When the read fails the cache is dropped, so
        the next lookup reads again rather than trusting an old copy."""
        async with self._load_lock:
            self._keys = None
            self._remember(await self._load())

    @staticmethod
    def problem(key: str) -> str:
        """Why ``key`` cannot be recorded ("" when it can)."""
        if encoded_size(key) - 4 > MAX_KEY_BYTES:  # without the quotes and the separator
            return f"idempotencyKey is longer than {MAX_KEY_BYTES} bytes"
        return ""

    async def contains(self, key: str) -> bool:
        """Whether ``key`` is durably recorded, from the cache (one read at first use)."""
        await self._cached()
        return key in self._key_set

    async def seen(self, job_id: str) -> bool:
        """Whether the job ``job_id`` was answered (its id is durable) or is in flight (reserved),
        from the cache (one read at first use)."""
        await self._cached()
        return job_id in self._ids or job_id in self._reserved

    def reserve(self, job_id: str, expires_at: datetime.datetime) -> str:
        """Hold room for ``job_id`` until it is recorded or released; the reason it cannot be
        remembered ("" when it can). Call after :meth:`seen` (which loads the cache)."""
        if problem := replay.id_problem(job_id):
            return problem
        expiry = replay.expiry_of(expires_at)
        live = replay.unexpired({**self._ids, **self._reserved}, now=self._now())
        problem = replay.capacity_problem(
            live, job_id, expiry, max_ids=self.max_ids, max_bytes=self.max_id_bytes
        )
        if not problem:
            self._reserved[job_id] = expiry
        return problem

    def release(self, job_id: str) -> None:
        """Drop the reservation of ``job_id`` (once its id is durable, or its job gave up)."""
        self._reserved.pop(job_id, None)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def record(self, key: str, *, job_id: str = "") -> None:
        """Return once ``key`` (unless "") and the reserved ``job_id`` (unless "") are in the
        ConfigMap; raise the write's error otherwise.

        Joins the batch that the next write takes; starts that write at once when none is in
        flight. Cancelling the caller does not cancel the write (other jobs wait on it)."""
        if self._open is None:
            self._open = _Batch(keys=[], done=asyncio.get_running_loop().create_future())
        batch = self._open
        if key:
            batch.keys.append(key)
        if job_id:
            batch.ids[job_id] = self._reserved[job_id]
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="idempotency group commit")
        await asyncio.shield(batch.done)

    async def close(self, *, grace: float = 2.0) -> None:
        """Let a write in flight finish within ``grace`` seconds, else cancel it: nothing is left
        running (its waiters, if any are left, see the cancellation)."""
        flusher = self._flusher
        if flusher is None:
            return
        _, pending = await asyncio.wait({flusher}, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(flusher, return_exceptions=True)

    async def _flush(self) -> None:
        """Write batches one after another until none is waiting. Owned by the store: it lives
        only while a batch waits, and every batch's callers await its outcome."""
        try:
            while self._open is not None:
                batch, self._open = self._open, None
                try:
                    await self._commit(batch)
                except Exception as err:  # every waiter of the batch gets the same error
                    batch.done.set_exception(err)
                    batch.done.exception()  # retrieved: waiters may all have gone
                except asyncio.CancelledError:
                    batch.done.cancel()
                    raise
                else:
                    batch.done.set_result(None)
        finally:
            self._flusher = None
            if self._open is not None:  # cancelled with keys waiting: they are not durable
                self._open.done.cancel()
                self._open = None

    async def _commit(self, batch: _Batch) -> None:
        stored = await self._cached()
        for _ in range(self.attempts):
            keys = merged(stored.keys, batch.keys)
            wanted = _Stored(
                keys=bounded(keys, max_keys=self.max_keys, max_bytes=self.max_bytes),
                # Never evicted, only pruned once expired (agent/replay.py): reserve() kept the
                # bound before the jobs were applied.
                ids=replay.unexpired({**stored.ids, **batch.ids}, now=self._now()),
            )
            try:
                await self._write(wanted)
            except (ConflictError, AlreadyExistsError):
                # Someone else wrote: their list is the newer truth (every key we wrote before
                # is in it unless evicted); add ours to it and try again.
                stored = await self._load()
                self._remember(stored)
                continue
            self._remember(wanted)
            return
        raise ConflictError(
            status=409,
            reason="Conflict",
            message=f"could not record idempotency key after {self.attempts} attempts",
            body={},
            method="PUT",
            path=str(self.key),
        )

    async def _write(self, wanted: _Stored) -> None:
        data = {DATA_KEY: json.dumps(wanted.keys)}
        if wanted.ids:  # without signed jobs the ConfigMap stays exactly the Go agent's
            data[replay.DATA_KEY] = replay.encode(wanted.ids)
        body: JsonObj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.key.name, "namespace": self.key.namespace},
            "data": data,
        }
        if self._resource_version is None:
            stored = await self._client.create(CONFIG_MAPS, body, field_manager=FIELD_MANAGER_AGENT)
        else:
            body["metadata"]["resourceVersion"] = self._resource_version
            stored = await self._client.replace(
                CONFIG_MAPS, body, field_manager=FIELD_MANAGER_AGENT
            )
        self._resource_version = stored["metadata"]["resourceVersion"]

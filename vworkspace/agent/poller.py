"""The long-poll loop: fetch jobs, then ack -> apply -> exactly one result per job.

* **Waits for credentials**, and picks up new ones (a rotated token) for the very next request.
* **Waits for the trusted keys** before its first fetch (the verifier's informer has listed the
  keys ConfigMap or Secret): a signed job fetched right after a start is checked against the keys
  that exist, not against an empty cache that would fail it for good as ``unknown_key``.
* **Loads the idempotency store** before its first fetch, so after a restart (or a change of
  leader) every key and job id recorded before is known to the first job.
* **Concurrency**: up to ``concurrency`` jobs at once across objects, but jobs that target the
  same object run strictly in the order they arrived (a per-object chain), so "create then patch"
  never becomes "patch then create".
* **Signatures first** (agent/verifier.py): before the expiry check, the idempotency lookup and
  the apply; a rejected job is ``failed`` naming the cause and its key is not recorded.
* **Expired** jobs get ``noop`` / ``expired`` without touching the cluster; an **idempotency key**
  already recorded gives ``noop``; keys are recorded right after a successful apply, before the
  result is posted, so a crash in between yields ``noop`` when the job is delivered again. The
  store group-commits the keys of jobs finishing together (agent/idempotency.py): a job waits
  for the write holding its key, and a failed write fails every job of that batch.
* **Replays** (signatures required, agent/replay.py): a signed job whose id was answered before,
  or is in hand right now, is ``noop`` / ``replayed`` and never applied. Otherwise its id is
  reserved before the apply (refused, ``replay_capacity``, when the store is full: fail closed)
  and recorded in the same write as its key, whatever the outcome, before the result is posted.
* A job whose ack fails is left for redelivery (no result); a result that cannot be posted after
  the client's retries is logged; the control plane redelivers it and the idempotency key makes
  the second pass a ``noop``: no job lost, none applied twice.
* Fetch errors back off (Retry-After when the server gives one, else 0.5 s -> 30 s with
  jitter), and the connectivity gauge says so. That includes answers the protocol does not
  allow (an HTML login page from a proxy, a truncated body): the client turns them into a
  counted :class:`~vworkspace.agent.errors.ProtocolError`, logged here in one line.
* **Graceful stop**: stop fetching, finish the jobs in hand (bounded), then return.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import attrs
import structlog

from vworkspace.agent.applier import Applier, JobError
from vworkspace.agent.client import (
    ControlPlaneClient,
    ControlPlaneError,
    NoCredentialsError,
    RetryAfterError,
)
from vworkspace.agent.credentials import CredentialStore
from vworkspace.agent.idempotency import IdempotencyStore
from vworkspace.agent.metrics import CONNECTED, DISCONNECTED, RECONNECTING, AgentMetrics
from vworkspace.agent.signing import REPLAY_CAPACITY, REPLAYED, SignatureError
from vworkspace.agent.verifier import JobVerifier
from vworkspace.agent.wire import Job, JobDecodeError, JobResult, Outcome
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.errors import ApiError

_log = structlog.get_logger("vworkspace.agent.poller")
# The ``error`` of a replayed signed job's ``noop`` result.
REPLAYED_ERROR = "replayed"
# What reading or writing the idempotency ConfigMap may raise; a transport error fails the job
# like an API error instead of ending its task without a result.
_STORE_ERRORS = (ApiError, aiohttp.ClientError, TimeoutError)
# Jobs in hand at once. Each job is a few round trips (ack, apply, its share of an idempotency
# write, result), mostly waiting; 16 lets a burst keep the API server busy (bench/
# bench_pull_loop.py: about 100 jobs/s on 2 cores, where 4 gave about 30) while bounding the
# writes in flight. Jobs on one object stay in arrival order whatever the setting.
DEFAULT_CONCURRENCY = 16


def parse_interval(text: str) -> int:
    """``30s``, ``1m``, ``90`` -> whole seconds (at least 1); ValueError otherwise."""
    value = text.strip().lower()
    scale = 1
    if value.endswith("ms"):
        raise ValueError(f"{text!r}: the poll interval is whole seconds")
    if value.endswith("s"):
        value = value[:-1]
    elif value.endswith("m"):
        value, scale = value[:-1], 60
    elif value.endswith("h"):
        value, scale = value[:-1], 3600
    try:
        seconds = int(float(value) * scale)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 30s, 1m or 45") from None
    if seconds < 1:
        raise ValueError(f"{text!r}: the poll interval must be at least 1s")
    return seconds


def target_of(job: Job) -> str:
    """A key for "the object this job touches", to keep per-object order. A wholly encrypted
    payload names no object before it is decrypted (after the signature check, at apply time),
    so such jobs share one chain: in arrival order among themselves, at the cost of running one
    at a time."""
    if job.encrypted:
        return "encrypted-payload"
    payload: JsonObj = job.payload if isinstance(job.payload, dict) else {}
    if job.kind == "intent":
        inner = payload.get("applicationInstance") or payload.get("operation") or payload
        payload = inner if isinstance(inner, dict) else {}
    meta = payload.get("metadata")
    source: JsonObj = meta if isinstance(meta, dict) else payload
    name, namespace = source.get("name"), source.get("namespace")
    if isinstance(name, str) and name:
        return f"{namespace or ''}/{name}"
    return f"job:{job.id}"


class Poller:
    def __init__(
        self,
        *,
        client: ControlPlaneClient,
        credentials: CredentialStore,
        applier: Applier,
        idempotency: IdempotencyStore,
        clock: Clock,
        metrics: AgentMetrics,
        poll_interval: int = 30,
        concurrency: int = DEFAULT_CONCURRENCY,
        drain_timeout: float = 20.0,
        verifier: JobVerifier | None = None,
    ) -> None:
        self._client = client
        self._credentials = credentials
        self._applier = applier
        self._idempotency = idempotency
        self._clock = clock
        self._metrics = metrics
        self.poll_interval = poll_interval
        self._slots = asyncio.Semaphore(concurrency)
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.drain_timeout = drain_timeout
        self._verifier = verifier

    async def run(self, stop: asyncio.Event) -> None:
        log = _log.bind()
        # The idempotency ConfigMap lives in the operator namespace; on a local run against a
        # fresh cluster that namespace may not exist yet.
        try:
            await self._applier.ensure_namespace(self._idempotency.key.namespace or "default")
        except (JobError, ApiError, aiohttp.ClientError, TimeoutError) as err:
            # Not fatal: recording keys fails (and says so) until the namespace exists.
            log.warning("cannot ensure the operator namespace", error=str(err))
        await self._load_store()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            if not await self._keys_synced(stopping):
                return
            while not stop.is_set():
                credentials = self._credentials.current()
                if credentials is None:
                    self._metrics.connectivity.set(RECONNECTING)
                    if self._credentials.suspended:
                        # Stopped on purpose (its Cluster is being deleted), not reconnecting.
                        self._metrics.connectivity.set(DISCONNECTED)
                        log.warning("agent stopped polling", reason=self._credentials.suspended)
                    else:
                        log.info("waiting for agent credentials", secret=str(self._credentials.key))
                    changed = asyncio.ensure_future(
                        self._credentials.wait_changed(self._credentials.version)
                    )
                    await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
                    continue
                fetch = asyncio.ensure_future(
                    self._client.fetch_jobs(
                        cluster_id=credentials.cluster_id, wait=self.poll_interval
                    )
                )
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                try:
                    raw_jobs = fetch.result()
                except NoCredentialsError:
                    continue
                except ControlPlaneError as err:
                    await self._back_off(err, stopping)
                    continue
                self._metrics.connectivity.set(CONNECTED)
                self._client.backoff.reset()
                self._note_lag(raw_jobs)
                for raw in raw_jobs:
                    self._schedule(raw)
        except asyncio.CancelledError:
            # Cancellation is a hard stop: jobs in hand are abandoned (the control plane
            # redelivers them). A graceful stop comes through ``stop`` instead.
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            stopping.cancel()
        await self._drain()
        await self._idempotency.close()

    async def _load_store(self) -> None:
        """Read the idempotency store afresh before the first job. A failure is not fatal: the
        first lookup reads it again, and a job whose lookup fails is ``failed``, never applied
        unchecked."""
        try:
            await self._idempotency.load()
        except _STORE_ERRORS as err:
            _log.warning("cannot read the idempotency store yet", error=str(err))

    async def _keys_synced(self, stopping: asyncio.Future[Any]) -> bool:
        """Wait until the verifier's trusted keys are listed; False when stopped first."""
        if self._verifier is None or self._verifier.ready:
            return True
        _log.info("waiting for the trusted job-signing keys before fetching jobs")
        synced = asyncio.ensure_future(self._verifier.wait_ready())
        await asyncio.wait({synced, stopping}, return_when=asyncio.FIRST_COMPLETED)
        synced.cancel()
        return not stopping.done()

    async def _back_off(self, err: ControlPlaneError, stopping: asyncio.Future[Any]) -> None:
        delay = (
            err.retry_after
            if isinstance(err, RetryAfterError)
            else self._client.backoff.next_delay()
        )
        self._metrics.connectivity.set(DISCONNECTED if err.status in (401, 403) else RECONNECTING)
        _log.warning(
            "fetching jobs failed", error=str(err), status=err.status, retry_in=round(delay, 2)
        )
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        await asyncio.wait({sleeper, stopping}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()

    def _note_lag(self, raw_jobs: list[Any]) -> None:
        oldest = None
        for raw in raw_jobs:
            try:
                created = Job.from_wire(raw).created_at
            except JobDecodeError:
                continue
            if created is not None and (oldest is None or created < oldest):
                oldest = created
        lag = (self._clock.now() - oldest).total_seconds() if oldest else 0.0
        self._metrics.job_lag.set(max(0.0, lag))

    def _schedule(self, raw: Any) -> None:
        try:
            job = Job.from_wire(raw)
        except JobDecodeError as err:
            job_id = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(job_id, str) or not job_id:
                _log.error("dropping a job without an id", error=str(err))
                return
            job = Job(id=job_id, kind="", payload=None)
            task = asyncio.ensure_future(self._process(job, decode_error=str(err)))
        else:
            key = target_of(job)
            previous = self._chains.get(key)
            task = asyncio.ensure_future(self._process(job, after=previous))
            self._chains[key] = task
            task.add_done_callback(self._chain_done(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chain_done(self, key: str) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            if self._chains.get(key) is task:
                del self._chains[key]

        return done

    async def _process(
        self, job: Job, *, after: asyncio.Task[None] | None = None, decode_error: str = ""
    ) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)  # same object: strictly in order
        async with self._slots:
            log = _log.bind(job_id=job.id, job_kind=job.kind)
            try:
                await self._client.ack(job.id)
            except ControlPlaneError as err:
                log.warning("ack failed; leaving the job for redelivery", error=str(err))
                return
            if decode_error:
                result = JobResult(
                    outcome=Outcome.FAILED, timestamp=self._clock.now(), error=decode_error
                )
            else:
                result = await self._outcome(job)
            self._metrics.jobs.labels(result.outcome.value).inc()
            try:
                await self._client.post_result(job.id, result)
            except ControlPlaneError as err:
                log.error("posting the result failed; the job will be redelivered", error=str(err))
                return
            log.info("job done", outcome=result.outcome.value, error=result.error or None)
            if result.outcome is Outcome.SUCCEEDED:
                self._metrics.applied_jobs.inc()
                self._metrics.job_lag.set(0)

    async def _outcome(self, job: Job) -> JobResult:
        now = self._clock.now()
        if self._verifier is not None:
            credentials = self._credentials.current()
            try:
                self._verifier.check(job, cluster_id=credentials.cluster_id if credentials else "")
            except SignatureError as err:
                self._metrics.rejections.labels(err.reason).inc()
                return JobResult(outcome=Outcome.FAILED, timestamp=now, error=str(err))
        if job.expires_at is not None and job.expires_at <= now:
            return JobResult(outcome=Outcome.NOOP, timestamp=now, error="expired")
        key = job.idempotency_key
        if key and (problem := self._idempotency.problem(key)):
            # Refused before applying: recording it would fail after the apply.
            return JobResult(outcome=Outcome.FAILED, timestamp=now, error=problem)
        if not self._guards_replay(job):
            return await self._apply_once(job, key)
        assert job.expires_at is not None  # the verifier requires it
        try:
            if await self._idempotency.seen(job.id):
                self._metrics.rejections.labels(REPLAYED).inc()
                return JobResult(outcome=Outcome.NOOP, timestamp=now, error=REPLAYED_ERROR)
        except _STORE_ERRORS as err:
            return self._store_failed("check job id", err)
        if problem := self._idempotency.reserve(job.id, job.expires_at):
            self._metrics.rejections.labels(REPLAY_CAPACITY).inc()
            return JobResult(outcome=Outcome.FAILED, timestamp=now, error=problem)
        try:
            return await self._apply_once(job, key, remember_id=True)
        finally:
            # Recorded by now, or given up (a cancelled job is delivered again).
            self._idempotency.release(job.id)

    def _guards_replay(self, job: Job) -> bool:
        """Replay protection holds for signed jobs when signatures are required: only then is
        every job signed with a bounded ``expiresAt`` (with them optional, a hop could strip the
        signature and replay the job unsigned anyway)."""
        return self._verifier is not None and self._verifier.require and job.signed

    async def _apply_once(self, job: Job, key: str, *, remember_id: bool = False) -> JobResult:
        """The idempotency lookup, the apply, then the record (the key on success; the job id,
        when ``remember_id``, whatever the outcome) before the result may be posted."""
        seen = False
        if key:
            try:
                seen = await self._idempotency.contains(key)
            except _STORE_ERRORS as err:
                return self._store_failed("check idempotency key", err)
        if seen:
            result = JobResult(outcome=Outcome.NOOP, timestamp=self._clock.now())
        else:
            result = await self._applier.process(job)
        return await self._recorded(job, result, key=key, remember_id=remember_id)

    async def _recorded(
        self, job: Job, result: JobResult, *, key: str, remember_id: bool
    ) -> JobResult:
        """``result`` once what must survive it is durable; a ``failed`` result naming the write
        otherwise (the control plane learns that the job may run again)."""
        record_key = key if result.outcome is Outcome.SUCCEEDED else ""
        if not (record_key or remember_id):
            return result
        try:
            # Returns once the key and id are durable: only then may the result be posted.
            await self._idempotency.record(record_key, job_id=job.id if remember_id else "")
        except _STORE_ERRORS as err:
            if record_key:
                return self._store_failed("record idempotency key", err)
            failed = self._store_failed("record job id", err)
            original = result.outcome.value + (f": {result.error}" if result.error else "")
            return attrs.evolve(failed, error=f"{failed.error} (the job itself: {original})")
        return result

    def _store_failed(self, what: str, err: Exception) -> JobResult:
        message = err.message if isinstance(err, ApiError) else f"{type(err).__name__}: {err}"
        return JobResult(
            outcome=Outcome.FAILED, timestamp=self._clock.now(), error=f"{what}: {message}"
        )

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _log.info("finishing jobs in flight", count=len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

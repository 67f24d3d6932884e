"""The mock's in-memory state: tokens, per-cluster job queues, acks, results, events.

Long-poll waiters sleep on one ``asyncio.Condition`` per cluster and are notified by ``enqueue``
(and by a redelivery), so an idle mock uses no CPU and a job reaches a waiting agent at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.mockcontrolplane import sealer
from vworkspace.mockcontrolplane.signer import Signer

ZERO_TIME = "0001-01-01T00:00:00Z"


@attrs.define
class Delivery:
    job: JsonObj
    cluster_id: str
    delivered_at: float


@attrs.define
class Fault:
    """A scripted failure for tests: the next ``count`` agent requests whose path contains
    ``path`` (and whose method is ``method``, when given) get HTTP ``status`` (0: no error)
    after ``delay`` seconds.

    ``body`` set: the answer is ``status`` (200 allowed) with exactly these bytes, this
    ``content_type`` and these extra ``headers``, the way a proxy's login page, a truncated
    answer or a control plane with a bug would look (hostile-input tests)."""

    path: str
    status: int = 500
    delay: float = 0.0
    count: int = 1
    method: str = ""
    body: bytes | None = None
    content_type: str = "text/html"
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class ClusterState:
    queue: deque[JsonObj] = attrs.field(factory=deque)
    events: list[JsonObj] = attrs.field(factory=list)
    event_keys: set[str] = attrs.field(factory=set)
    wakeup: asyncio.Condition = attrs.field(factory=asyncio.Condition)
    rotations: int = 0


def wire_job(job: JsonObj) -> JsonObj:
    """A job as the Go mock re-serializes it: the three optional fields always present
    (zero time and empty key when unset), so agents are tested against what Go senders emit."""
    wire = {
        "id": job.get("id", ""),
        "kind": job.get("kind", ""),
        "payload": job.get("payload"),
        "idempotencyKey": job.get("idempotencyKey") or "",
        "createdAt": job.get("createdAt") or ZERO_TIME,
        "expiresAt": job.get("expiresAt") or ZERO_TIME,
    }
    if job.get("encryptedPayload"):
        wire["encryptedPayload"] = job["encryptedPayload"]
    if job.get("signature"):
        wire["signature"] = job["signature"]
    return wire


class EncryptError(ValueError):
    """An enqueue that asks for encryption the mock cannot do (no or a bad recipient)."""


class MockState:
    def __init__(
        self,
        *,
        visibility_timeout: float = 60.0,
        strict_registration: bool = False,
        clock: Callable[[], float] = time.monotonic,
        signer: Signer | None = None,
        encrypt_to: str = "",
    ) -> None:
        # With a signer every enqueued job is signed (mockcontrolplane/signer.py, modes).
        self.signer = signer
        # Every enqueued payload is encrypted whole to this recipient ("registered": the one
        # the cluster sent) unless the enqueue says otherwise (mockcontrolplane/sealer.py).
        self.encrypt_to = encrypt_to
        # cluster id -> the encryptionPublicKey of its last register body or heartbeat.
        self.encryption_keys: dict[str, str] = {}
        self.visibility_timeout = visibility_timeout
        # The Go mock accepts any registration token; strict mode answers 401 for unknown ones.
        self.strict_registration = strict_registration
        self._clock = clock
        self.registration_tokens: dict[str, str] = {}  # token -> cluster id
        self.bearer_tokens: dict[str, str] = {}  # token -> cluster id
        self.clusters: dict[str, ClusterState] = {}
        self.delivered: dict[str, Delivery] = {}  # job id -> delivery awaiting a result
        self.acked: set[str] = set()
        self.results: dict[str, JsonObj] = {}
        self.statuses: dict[str, list[JsonObj]] = {}
        self.requests = 0
        self.faults: list[Fault] = []
        self.enqueued_at: dict[str, float] = {}
        # First delivery and first ack of each job, so a benchmark can split enqueue -> result
        # into the long poll, the ack and the agent's own work.
        self.delivered_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.result_at: dict[str, float] = {}
        # Every result POST per job, the duplicates (answered 409) included: the chaos tier
        # (tests/chaos) shows how often an agent re-sent a result.
        self.result_posts: dict[str, int] = {}
        self.events_received = 0  # events POSTed, before de-duplication by key

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def take_fault(self, path: str, method: str = "") -> Fault | None:
        for fault in self.faults:
            if fault.method and method and fault.method.upper() != method.upper():
                continue
            if fault.path in path and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def cluster(self, cluster_id: str) -> ClusterState:
        return self.clusters.setdefault(cluster_id, ClusterState())

    # -- tokens ------------------------------------------------------------------------------

    def add_registration_token(self, token: str, cluster_id: str) -> None:
        self.registration_tokens[token] = cluster_id

    def set_bootstrap_token(self, cluster_id: str, token: str) -> None:
        for existing, owner in list(self.bearer_tokens.items()):
            if owner == cluster_id:
                del self.bearer_tokens[existing]
        self.bearer_tokens[token] = cluster_id
        self.cluster(cluster_id)

    def token_for(self, cluster_id: str) -> str | None:
        return next((t for t, c in self.bearer_tokens.items() if c == cluster_id), None)

    def register(self, registration_token: str, requested_cluster: str) -> tuple[str, str] | None:
        """Exchange a one-time token. Unknown tokens are accepted (as the Go mock) unless the
        mock is strict, then None."""
        cluster_id = self.registration_tokens.pop(registration_token, None)
        if cluster_id is None and self.strict_registration:
            return None
        if cluster_id is None:
            cluster_id = requested_cluster.strip() or f"cluster-{registration_token[:8]}"
        token = self.token_for(cluster_id)
        if token is None:
            token = f"bootstrap-{cluster_id}"
            self.set_bootstrap_token(cluster_id, token)
        return cluster_id, token

    def rotate(self, cluster_id: str) -> str:
        state = self.cluster(cluster_id)
        state.rotations += 1
        token = f"bootstrap-{cluster_id}-rotated-{state.rotations}"
        self.set_bootstrap_token(cluster_id, token)  # the old token is invalid at once
        return token

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(
        self,
        cluster_id: str,
        job: JsonObj,
        *,
        signing: str = "sign",
        encrypt: str = "",
        recipient: str = "",
    ) -> None:
        """Queue ``job``: encrypted first (``encrypt``: a mode of sealer.MODES, default
        ``payload`` with ``--encrypt-to``, else none), then signed. EncryptError when
        encryption is asked for and there is no usable recipient."""
        mode = encrypt or ("payload" if self.encrypt_to else "none")
        if mode != "none":
            job = sealer.seal(job, mode=mode, recipient=self._recipient(cluster_id, recipient))
        if self.signer is not None:
            # Signed in the form it is delivered in: the signature covers the wire values.
            job = self.signer.apply(wire_job(job), cluster_id=cluster_id, mode=signing)
        elif signing == "none":
            job = {k: v for k, v in job.items() if k != "signature"}
        state = self.cluster(cluster_id)
        state.queue.append(job)
        self.enqueued_at.setdefault(str(job.get("id")), self._clock())
        async with state.wakeup:
            state.wakeup.notify_all()

    def _recipient(self, cluster_id: str, given: str) -> str:
        chosen = given or self.encrypt_to
        if chosen in ("", sealer.REGISTERED):
            chosen = self.encryption_keys.get(cluster_id, "")
            if not chosen:
                raise EncryptError(
                    f"cluster {cluster_id} has sent no encryptionPublicKey (register or "
                    "heartbeat) yet; give a recipient"
                )
        problem = sealer.recipient_problem(chosen)
        if problem:
            raise EncryptError(problem)
        return chosen

    def _redeliver_expired(self, cluster_id: str) -> None:
        now = self._clock()
        state = self.cluster(cluster_id)
        for job_id, delivery in list(self.delivered.items()):
            if delivery.cluster_id != cluster_id or job_id in self.results:
                continue
            if now - delivery.delivered_at >= self.visibility_timeout:
                del self.delivered[job_id]
                state.queue.append(delivery.job)

    def next_redelivery_in(self, cluster_id: str) -> float | None:
        pending = [
            d.delivered_at + self.visibility_timeout - self._clock()
            for job_id, d in self.delivered.items()
            if d.cluster_id == cluster_id and job_id not in self.results
        ]
        return max(0.0, min(pending)) if pending else None

    def take(self, cluster_id: str) -> list[JsonObj]:
        self._redeliver_expired(cluster_id)
        state = self.cluster(cluster_id)
        jobs = list(state.queue)
        state.queue.clear()
        now = self._clock()
        for job in jobs:
            self.delivered[str(job.get("id"))] = Delivery(
                job=job, cluster_id=cluster_id, delivered_at=now
            )
            self.delivered_at.setdefault(str(job.get("id")), now)
        return jobs

    def ack(self, job_id: str) -> None:
        self.acked.add(job_id)
        self.acked_at.setdefault(job_id, self._clock())

    async def wait_for_jobs(self, cluster_id: str, wait: float) -> list[JsonObj]:
        """Jobs for the cluster, waiting up to ``wait`` seconds for the first one."""
        state = self.cluster(cluster_id)
        deadline = self._clock() + wait
        async with state.wakeup:
            while True:
                jobs = self.take(cluster_id)
                remaining = deadline - self._clock()
                if jobs or remaining <= 0:
                    return jobs
                redelivery = self.next_redelivery_in(cluster_id)
                timeout = remaining if redelivery is None else min(remaining, redelivery + 0.01)
                try:
                    async with asyncio.timeout(timeout):
                        await state.wakeup.wait()
                except TimeoutError:
                    pass

    def pending_count(self, cluster_id: str) -> int:
        return len(self.cluster(cluster_id).queue)

    def record_result(self, job_id: str, result: JsonObj) -> bool:
        """Store the first result of a job; False for a duplicate."""
        self.result_posts[job_id] = self.result_posts.get(job_id, 0) + 1
        if job_id in self.results:
            return False
        self.results[job_id] = result
        self.result_at[job_id] = self._clock()
        self.delivered.pop(job_id, None)
        return True

    # -- events ------------------------------------------------------------------------------

    def add_events(self, cluster_id: str, events: list[JsonObj]) -> None:
        state = self.cluster(cluster_id)
        self.events_received += len(events)
        for event in events:
            public_key = event.get("encryptionPublicKey")
            if event.get("kind") == "ClusterHeartbeat" and isinstance(public_key, str):
                self.encryption_keys[cluster_id] = public_key
            key = event.get("eventKey") or ""
            if key:
                if key in state.event_keys:
                    continue
                state.event_keys.add(key)
            state.events.append(event)

    def events(
        self, cluster_id: str, *, kind: str = "", namespace: str = "", name: str = ""
    ) -> list[JsonObj]:
        """Stored events; ``kind`` filters on resourceRef.kind (as the Go mock does)."""
        result = []
        for event in self.cluster(cluster_id).events:
            ref = event.get("resourceRef") or {}
            if kind and ref.get("kind") != kind:
                continue
            if namespace and ref.get("namespace") != namespace:
                continue
            if name and ref.get("name") != name:
                continue
            result.append(event)
        return result

"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm, 15 s / 10 s / 2 s).

* Every ``retry_period`` a candidate reads the Lease. The holder renews it; anyone else takes it
  over only after the record has stayed **unchanged for ``lease_duration`` on our own monotonic
  clock**: expiry is never computed from the timestamps in the Lease, so clock skew between nodes
  cannot cause two leaders.
* Writes are compare-and-swap on the Lease's resourceVersion (PUT), so two candidates never both
  win the same round.
* A leader that cannot renew for ``renew_deadline`` has lost: :meth:`run` returns, and the
  manager exits non-zero so the Deployment restarts it as a follower (controller-runtime does the
  same). Followers keep their caches warm; only the leader's workers run.
* On a clean shutdown the leader releases the Lease (empty holder) so a successor need not wait
  out the lease duration.

The kubernetes-asyncio leaderelection module is not used: it mixes naive local times with UTC,
mis-parses whole-second timestamps and decides expiry from wall-clock time (docs/development.md,
"kubernetes-asyncio: what the client code works around").
"""

from __future__ import annotations

import asyncio
import datetime

import aiohttp
import attrs
import structlog

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from vworkspace.kube.rest.resources import LEASES

_log = structlog.get_logger("vworkspace.leaderelection")


@attrs.frozen
class LeaseTiming:
    """client-go's three durations (its defaults). A killed leader is replaced after about
    ``lease_duration`` plus up to two ``retry_period`` s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(
                "need lease duration > renew deadline > 1.2 x retry period, got "
                f"{self.lease_duration:g}s, {self.renew_deadline:g}s, {self.retry_period:g}s"
            )


@attrs.frozen
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    timing: LeaseTiming = attrs.field(factory=LeaseTiming)

    @property
    def lease_duration(self) -> float:
        return self.timing.lease_duration

    @property
    def renew_deadline(self) -> float:
        return self.timing.renew_deadline

    @property
    def retry_period(self) -> float:
        return self.timing.retry_period


def _micro_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeApi,
        config: LeaseConfig,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self.config = config
        self._clock = clock
        self._metrics = metrics
        self.is_leader = asyncio.Event()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) as last seen
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._lease_rv: str | None = None
        self._set_metric(False)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.config.namespace, self.config.name)

    def _set_metric(self, leading: bool) -> None:
        if self._metrics:
            self._metrics.leader.labels(self.config.name).set(1 if leading else 0)

    async def run(self) -> None:
        """Campaign, then lead; return when leadership is lost (never returns as a follower)."""
        log = _log.bind(
            lease=f"{self.config.namespace}/{self.config.name}", identity=self.config.identity
        )
        log.info("waiting for leadership")
        while not await self._attempt():
            await self._clock.sleep(self.config.retry_period)
        self._last_renew = self._clock.monotonic()
        self.is_leader.set()
        self._set_metric(True)
        log.info("became leader")
        while True:
            await self._clock.sleep(self.config.retry_period)
            if await self._attempt():
                self._last_renew = self._clock.monotonic()
            elif self._clock.monotonic() - self._last_renew > self.config.renew_deadline:
                self.is_leader.clear()
                self._set_metric(False)
                log.error(
                    "leadership lost: could not renew the lease in time",
                    renew_deadline=self.config.renew_deadline,
                )
                return

    async def release(self) -> None:
        """Give the Lease up (best effort) so a successor can take over at once."""
        if not self.is_leader.is_set():
            return
        self.is_leader.clear()
        self._set_metric(False)
        try:
            lease = await self._client.get(LEASES, self.key)
            if lease.get("spec", {}).get("holderIdentity") != self.config.identity:
                return
            now = _micro_time(self._clock.now())
            lease["spec"].update(
                {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now}
            )
            await self._client.replace(LEASES, lease, field_manager=self.config.identity)
            _log.info("released leadership", identity=self.config.identity)
        except ApiError as err:
            _log.warning("releasing the lease failed", error=str(err))

    async def _attempt(self) -> bool:
        """One acquire-or-renew; an unreachable or garbled API server counts as a failed renew
        (the renew deadline decides), never as an exception that would leave ``is_leader`` set
        with nobody renewing."""
        try:
            return await self._try_acquire_or_renew()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
            _log.warning("lease request failed", error=f"{type(err).__name__}: {err}"[:300])
            return False

    async def _try_acquire_or_renew(self) -> bool:
        now = self._clock.now()
        try:
            lease = await self._client.get(LEASES, self.key)
        except NotFoundError:
            return await self._create(now)
        except ApiError as err:
            _log.warning("reading the lease failed", error=str(err))
            return False
        spec = lease.get("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock.monotonic()
        expired = self._clock.monotonic() - self._observed_at > self.config.lease_duration
        if holder and holder != self.config.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.config.identity:
            spec["acquireTime"] = _micro_time(now)
            transitions += 1
        spec.update(
            {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": int(self.config.lease_duration),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            }
        )
        try:
            updated = await self._client.replace(
                LEASES, {**lease, "spec": spec}, field_manager=self.config.identity
            )
        except (ConflictError, ApiError) as err:
            if not isinstance(err, ConflictError):
                _log.warning("updating the lease failed", error=str(err))
            return False
        self._observed = (self.config.identity, str(updated["spec"].get("renewTime", "")))
        self._observed_at = self._clock.monotonic()
        return True

    async def _create(self, now: datetime.datetime) -> bool:
        renew_time = _micro_time(now)
        lease: JsonObj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": {
                "holderIdentity": self.config.identity,
                "leaseDurationSeconds": int(self.config.lease_duration),
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            await self._client.create(LEASES, lease, field_manager=self.config.identity)
        except (AlreadyExistsError, ConflictError):
            return False
        except ApiError as err:
            _log.warning("creating the lease failed", error=str(err))
            return False
        self._observed = (self.config.identity, renew_time)
        self._observed_at = self._clock.monotonic()
        return True

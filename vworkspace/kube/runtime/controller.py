"""A controller: one work queue of keys, N workers, one ``reconcile(key) -> Result``.

What a reconcile returns or raises decides what happens to its key:

========================  ===============================================================
``Result.done()``         forget the key's backoff; nothing more until something changes
``Result.after(s)``       forget the backoff, look again in ``s`` seconds (external progress)
``TerminalError``         give up on this state: logged, counted, *no* retry (no hot loop);
                          the next change of the object brings it back
``InvalidNameError``      as ``TerminalError``: a name taken from a spec that cannot be a
                          Kubernetes name (api/names.py) will not become one by retrying
any other exception       logged with object context, counted, retried with backoff
timeout                   as an exception (the per-reconcile deadline is ``reconcile_timeout``)
========================  ===============================================================

Workers start only once the leadership gate opens, and stop taking keys at shutdown while
finishing the reconcile in hand.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import attrs
import structlog

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError
from vworkspace.kube.cache.informer import Informer, UpdatePredicate
from vworkspace.kube.metrics import ControllerMetrics
from vworkspace.kube.rest.resources import key_of
from vworkspace.kube.runtime.workqueue import WorkQueue
from vworkspace.kube.trace import Tracer, outcome_of

_log = structlog.get_logger("vworkspace.controller")


@attrs.frozen
class Result:
    """What a reconcile asks for next."""

    requeue_after: float | None = None

    @classmethod
    def done(cls) -> Result:
        return cls()

    @classmethod
    def after(cls, seconds: float) -> Result:
        return cls(requeue_after=seconds)


class TerminalError(Exception):
    """The object cannot be reconciled as it is; retrying would not help."""


class Reconciler(Protocol):
    async def reconcile(self, key: ObjectKey) -> Result: ...


class Controller:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        queue: WorkQueue[ObjectKey],
        *,
        workers: int = 2,
        reconcile_timeout: float = 30.0,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.reconciler = reconciler
        self.queue = queue
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self._metrics = metrics
        self._sources: list[Informer] = []  # the informers whose events feed the queue
        self.tracer: Tracer | None = None  # that of its informers' API (kube/trace.py)
        if metrics:
            metrics.max_concurrent.set(workers)

    # -- wiring event sources --------------------------------------------------------------

    def watch(self, informer: Informer, *, on_update: UpdatePredicate | None = None) -> None:
        """Reconcile the objects of ``informer`` themselves (the primary kind); updates only
        when ``on_update(previous, current)`` holds (kube/cache/predicates.py)."""
        informer.add_handler(
            lambda obj, initial: self.queue.add(key_of(obj), low_priority=initial),
            on_update=on_update,
        )
        self._sources.append(informer)
        self.tracer = self.tracer or informer.tracer

    def watch_owned(self, informer: Informer, *, owner_kind: str) -> None:
        """Reconcile the controlling owner (of ``owner_kind``) of each object of ``informer``,
        e.g. a HelmRelease change enqueues its ApplicationInstance."""

        def handler(obj: JsonObj, initial: bool) -> None:
            meta = obj.get("metadata", {})
            for ref in meta.get("ownerReferences", []) or []:
                if ref.get("kind") == owner_kind and ref.get("controller"):
                    self.queue.add(
                        ObjectKey(meta.get("namespace"), ref["name"]), low_priority=initial
                    )

        informer.add_handler(handler)
        self._sources.append(informer)
        self.tracer = self.tracer or informer.tracer

    def watch_mapped(
        self,
        informer: Informer,
        mapper: Callable[[JsonObj], list[ObjectKey]],
        *,
        on_update: UpdatePredicate | None = None,
    ) -> None:
        """Reconcile whatever keys ``mapper`` derives from each object of ``informer``; updates
        only when ``on_update(previous, current)`` holds."""

        def handler(obj: JsonObj, initial: bool) -> None:
            for key in mapper(obj):
                self.queue.add(key, low_priority=initial)

        informer.add_handler(handler, on_update=on_update)
        self._sources.append(informer)
        self.tracer = self.tracer or informer.tracer

    # -- running ---------------------------------------------------------------------------

    async def run(self, gate: asyncio.Event | None = None) -> None:
        """Run the workers (after ``gate`` opens) until the queue shuts down."""
        if gate is not None:
            await gate.wait()
        # As controller-runtime's WaitForCacheSync: a reconcile on a half-filled cache would
        # re-create or re-apply what is merely not listed yet (readiness names what is waiting).
        await asyncio.gather(*(informer.wait_synced() for informer in self._sources))
        _log.info("controller started", controller=self.name, workers=self.workers)
        async with asyncio.TaskGroup() as group:
            for index in range(self.workers):
                group.create_task(self._worker(), name=f"{self.name}-worker-{index}")
        _log.info("controller stopped", controller=self.name)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        reconcile_id = uuid.uuid4().hex[:12]
        log = _log.bind(
            controller=self.name, namespace=key.namespace, name=key.name, reconcile_id=reconcile_id
        )
        structlog.contextvars.bind_contextvars(
            controller=self.name, namespace=key.namespace, name=key.name, reconcile_id=reconcile_id
        )
        metrics = self._metrics
        started = time.perf_counter()
        if metrics:
            metrics.active_workers.inc()
        trace = self.tracer.begin(self.name, key, reconcile_id) if self.tracer else None
        outcome: Result | BaseException = asyncio.CancelledError()  # until it ends otherwise
        try:
            async with asyncio.timeout(self.reconcile_timeout):
                result = outcome = await self.reconciler.reconcile(key)
        except (TerminalError, InvalidNameError) as err:
            outcome = err
            self.queue.forget(key)
            log.error(
                "reconcile failed permanently; not retrying until the object changes",
                error=str(err),
            )
            if metrics:
                metrics.terminal_errors.inc()
                metrics.errors.inc()
                metrics.reconcile_total("error").inc()
        except TimeoutError as err:
            outcome = err
            self.queue.add_rate_limited(key)
            log.error(
                "reconcile timed out",
                timeout=self.reconcile_timeout,
                retries=self.queue.num_requeues(key),
            )
            if metrics:
                metrics.timeouts.inc()
                metrics.errors.inc()
                metrics.reconcile_total("error").inc()
        except Exception as err:
            outcome = err
            self.queue.add_rate_limited(key)
            log.exception(
                "reconcile failed; retrying with backoff",
                error=str(err),
                retries=self.queue.num_requeues(key),
            )
            if metrics:
                metrics.errors.inc()
                metrics.reconcile_total("error").inc()
        else:
            self.queue.forget(key)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
            if metrics:
                metrics.reconcile_total(
                    "requeue_after" if result.requeue_after is not None else "success"
                ).inc()
        finally:
            if self.tracer is not None and trace is not None:
                self.tracer.end(trace, _outcome(outcome))
            if metrics:
                metrics.active_workers.dec()
                metrics.reconcile_time.observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars(
                "controller", "namespace", "name", "reconcile_id"
            )


def _outcome(outcome: Result | BaseException) -> JsonObj:
    if isinstance(outcome, Result):
        return outcome_of(outcome.requeue_after)
    return outcome_of(error=outcome)

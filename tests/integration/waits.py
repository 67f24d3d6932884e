"""Helpers shared by the in-process operator tests: wait for a condition, or for the operator to
have looked again (:class:`Reconciles`), never sleep."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from vworkspace.api.meta import ObjectKey
from vworkspace.app.manager import Manager
from vworkspace.app.wiring import OperatorSettings
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import OPERATIONS, ResourceType
from vworkspace.kube.runtime.controller import Controller, Result


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20, what: str = ""
) -> Any:
    """Poll ``check()`` until it returns something truthy (NotFound counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except NotFoundError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition ``type_`` of ``obj``'s status, or {}."""
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})


async def op_phase(
    kube: KubeClient, namespace: str, name: str, phase: str
) -> dict[str, Any] | None:
    """The Operation when it is in ``phase``, else None."""
    op = await kube.get(OPERATIONS, ObjectKey(namespace, name))
    return op if (op.get("status") or {}).get("phase") == phase else None


class Reconciles:
    """The reconciles one controller of an in-process operator has run, per key: the positive
    signal that the operator *looked again*, awaited before a test asserts that something did
    not change, instead of sleeping through a poll and hoping one happened.

    It wraps ``controller.reconciler`` (the workers look it up afresh for every key), so it
    counts exactly the reconciles the workers run. The work queue never hands one key to two
    workers at once, so the reconciles of a key are serial: "the next one to start has
    finished" is a reconcile that began after the call and saw everything written before it
    (what it reads live; what it reads from the cache, once the informer has caught up)."""

    def __init__(self, controller: Controller) -> None:
        self._inner = controller.reconciler
        controller.reconciler = self
        self._started: Counter[ObjectKey] = Counter()
        self._finished: Counter[ObjectKey] = Counter()
        self._tick = asyncio.Event()

    @classmethod
    def of(cls, manager: Manager, name: str) -> Reconciles:
        """Count the reconciles of ``manager``'s controller ``name``."""
        return cls(next(c for c in manager.controllers if c.name == name))

    async def reconcile(self, key: ObjectKey) -> Result:
        self._started[key] += 1
        try:
            return await self._inner.reconcile(key)
        finally:
            self._finished[key] += 1
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()  # no await here: a cancelled reconcile still counts and wakes waiters

    def finished(self, key: ObjectKey) -> int:
        return self._finished[key]

    def started(self, key: ObjectKey) -> int:
        """How many reconciles of ``key`` have started: a mark to pass to :meth:`another` as
        ``since`` when the test itself causes the next reconcile (a poke), which may start and
        finish before the test gets to wait for it."""
        return self._started[key]

    async def another(
        self, key: ObjectKey, *, since: int | None = None, timeout: float = 20
    ) -> None:
        """Wait until a reconcile of ``key`` that starts after this call (or after the mark
        ``since`` from :meth:`started`) has finished."""
        start = self._started[key] if since is None else since
        await self._until(key, start + 1, timeout, "another reconcile")

    async def settled(self, key: ObjectKey, *, timeout: float = 20) -> None:
        """Wait until every reconcile of ``key`` started so far has finished (e.g. the one whose
        status write the test just read, with whatever it does after that write)."""
        await self._until(key, self._started[key], timeout, "the reconcile in flight")

    async def _until(self, key: ObjectKey, count: int, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self._finished[key] < count:
                    await self._tick.wait()
        except TimeoutError:
            raise AssertionError(
                f"{what} of {key} did not finish within {timeout}s "
                f"(started {self._started[key]}, finished {self._finished[key]})"
            ) from None


async def poke(kube: KubeClient, resource: ResourceType, key: ObjectKey) -> None:
    """Change a label of the object: a metadata change every controller reconciles (its update
    predicate passes spec and metadata changes), to make the operator look at an object that
    waits for nothing, e.g. a finished Operation. Take :meth:`Reconciles.started` before the
    poke and wait with ``another(key, since=...)``: the reconcile it causes may be over before
    the poke returns."""
    await kube.merge_patch(
        resource,
        key,
        {"metadata": {"labels": {"test.vworkspace.io/poked": str(time.monotonic_ns())}}},
        field_manager="test",
    )


# A Running Operation is polled this often by the in-process operators of the tests (5 s in
# production): a test that asserts "still Running" waits for a poll it can count
# (:class:`Reconciles`) rather than through one it cannot see.
OPERATION_POLL = 0.25


def short_operation_poll(settings: OperatorSettings) -> OperatorSettings:
    """``settings`` with the Operation poll at :data:`OPERATION_POLL`
    (``OperatorSettings.operation_poll_interval``, ``run --operation-poll-interval``)."""
    return attrs.evolve(settings, operation_poll_interval=OPERATION_POLL)

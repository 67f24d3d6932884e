"""Polling helpers shared by the in-process operator tests: wait for a condition, never sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import OPERATIONS


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

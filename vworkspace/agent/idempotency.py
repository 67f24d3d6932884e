"""Idempotency keys of applied jobs, persisted in a ConfigMap so they survive restarts.

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
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from vworkspace.api.constants import FIELD_MANAGER_AGENT
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import AlreadyExistsError, ConflictError, NotFoundError
from vworkspace.kube.resources import CONFIG_MAPS

JsonObj = dict[str, Any]
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


class IdempotencyStore:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str = CONFIG_MAP,
        max_keys: int = 10_000,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        if max_bytes < MAX_KEY_BYTES + 2:
            raise ValueError(f"max_bytes must hold at least one key of {MAX_KEY_BYTES} bytes")
        self._client = client
        self.key = ObjectKey(namespace, name)
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._keys: list[str] | None = None
        self._lock = asyncio.Lock()
        self._resource_version: str | None = None

    async def _load(self) -> list[str]:
        try:
            cm = await self._client.get(CONFIG_MAPS, self.key)
        except NotFoundError:
            self._resource_version = None
            return []
        self._resource_version = cm["metadata"]["resourceVersion"]
        try:
            keys = json.loads((cm.get("data") or {}).get(DATA_KEY, "[]"))
        except json.JSONDecodeError:
            keys = []
        return [k for k in keys if isinstance(k, str)]

    @staticmethod
    def problem(key: str) -> str:
        """Why ``key`` cannot be recorded ("" when it can)."""
        if encoded_size(key) - 4 > MAX_KEY_BYTES:  # without the quotes and the separator
            return f"idempotencyKey is longer than {MAX_KEY_BYTES} bytes"
        return ""

    async def contains(self, key: str) -> bool:
        async with self._lock:
            if self._keys is None:
                self._keys = await self._load()
            return key in self._keys

    async def record(self, key: str) -> None:
        async with self._lock:
            if self._keys is None:
                self._keys = await self._load()
            for _ in range(5):
                keys = [k for k in self._keys if k != key] + [key]
                keys = bounded(keys, max_keys=self.max_keys, max_bytes=self.max_bytes)
                try:
                    await self._write(keys)
                    self._keys = keys
                    return
                except (ConflictError, AlreadyExistsError):
                    # Someone else wrote: their list is the newer truth (every key we wrote
                    # before is in it unless evicted); add ours to it and try again.
                    self._keys = await self._load()
            raise ConflictError(
                status=409,
                reason="Conflict",
                message="could not record idempotency key after 5 attempts",
                body={},
                method="PUT",
                path=str(self.key),
            )

    async def _write(self, keys: list[str]) -> None:
        body: JsonObj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.key.name, "namespace": self.key.namespace},
            "data": {DATA_KEY: json.dumps(keys)},
        }
        if self._resource_version is None:
            stored = await self._client.create(CONFIG_MAPS, body, field_manager=FIELD_MANAGER_AGENT)
        else:
            body["metadata"]["resourceVersion"] = self._resource_version
            stored = await self._client.replace(
                CONFIG_MAPS, body, field_manager=FIELD_MANAGER_AGENT
            )
        self._resource_version = stored["metadata"]["resourceVersion"]

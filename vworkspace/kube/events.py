"""Kubernetes Events (``events.k8s.io/v1``) about our objects, with repeats aggregated.

The first occurrence of an event creates an Event object; a repeat of the same (object, type,
reason, action, note) within ``series_window`` updates that Event's ``series`` (count and last
time) instead of creating another, as client-go's EventRecorder does, so a flapping object cannot
flood etcd. Recording never fails a reconcile: errors are logged and dropped.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

import attrs
import structlog

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import EVENTS

NORMAL = "Normal"
WARNING = "Warning"
MAX_NOTE = 1024
_log = structlog.get_logger("vworkspace.events")


@attrs.define
class _Seen:
    name: str
    namespace: str
    count: int
    first_seen: float


def _micro_time(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventRecorder:
    def __init__(
        self,
        client: KubeApi,
        *,
        clock: Clock,
        controller: str = "vworkspace.io/operator",
        instance: str = "vworkspace-operator",
        series_window: float = 600.0,
        cache_size: int = 4096,
    ) -> None:
        self._client = client
        self._clock = clock
        self.controller = controller
        self.instance = instance
        self.series_window = series_window
        self._cache_size = cache_size
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()

    async def record(
        self, regarding: JsonObj, *, type_: str, reason: str, note: str, action: str = "Reconcile"
    ) -> None:
        meta = regarding.get("metadata", {})
        note = note if len(note) <= MAX_NOTE else note[: MAX_NOTE - 3] + "..."
        # Events of cluster-scoped objects go to "default", as client-go does.
        namespace = meta.get("namespace") or "default"
        cache_key = (str(meta.get("uid", meta.get("name"))), type_, reason, action, note)
        seen = self._seen.get(cache_key)
        now = self._clock.monotonic()
        try:
            if seen is not None and now - seen.first_seen < self.series_window:
                seen.count += 1
                self._seen.move_to_end(cache_key)
                await self._client.merge_patch(
                    EVENTS,
                    ObjectKey(seen.namespace, seen.name),
                    {"series": {"count": seen.count, "lastObservedTime": _micro_time(self._clock)}},
                    field_manager=self.instance,
                )
                return
            created = await self._client.create(
                EVENTS,
                self._event(
                    regarding, namespace, type_=type_, reason=reason, note=note, action=action
                ),
                field_manager=self.instance,
            )
            self._remember(cache_key, _Seen(created["metadata"]["name"], namespace, 1, now))
        except NotFoundError:
            self._seen.pop(
                cache_key, None
            )  # the Event expired (TTL); next repeat creates a new one
        except ApiError as err:
            _log.warning("recording event failed", reason=reason, error=str(err))

    def _remember(self, key: tuple[str, ...], seen: _Seen) -> None:
        self._seen[key] = seen
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)

    def _event(
        self, regarding: JsonObj, namespace: str, *, type_: str, reason: str, note: str, action: str
    ) -> JsonObj:
        meta = regarding.get("metadata", {})
        ref = {
            "apiVersion": regarding.get("apiVersion"),
            "kind": regarding.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            ref["namespace"] = meta["namespace"]
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # <object>.<random hex>, as client-go names Events (generateName may not end in ".").
            "metadata": {
                "name": f"{str(meta.get('name', 'object'))[:200]}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "eventTime": _micro_time(self._clock),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "type": type_,
            "note": note,
            "regarding": {k: v for k, v in ref.items() if v is not None},
        }

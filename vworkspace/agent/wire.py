"""The Pull protocol's JSON shapes (docs/pull-mode.md, "Wire format"), decoded strictly and
encoded exactly.

Decoding is defensive: a job is decoded on its own, so one malformed job yields a ``failed``
result for that job and never poisons the batch. Go senders emit the zero time
``0001-01-01T00:00:00Z`` for unset timestamps; it is treated exactly like an absent field.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

import attrs

from vworkspace.api.jsontypes import JsonObj

MEDIA_TYPE = "application/vnd.vworkspace.agent.v1+json"


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOOP = "noop"
    CONFLICT = "conflict"


class JobDecodeError(ValueError):
    """The job object itself is malformed (not its payload)."""


def parse_time(value: Any) -> datetime.datetime | None:
    """RFC 3339 -> aware UTC datetime; None for absent, empty or Go's zero time."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        raise JobDecodeError(f"invalid timestamp {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    if parsed.year <= 1:
        return None
    return parsed.astimezone(datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@attrs.frozen
class Job:
    id: str
    kind: str
    payload: Any
    idempotency_key: str = ""
    created_at: datetime.datetime | None = None
    expires_at: datetime.datetime | None = None
    # The job object exactly as received: a signature covers the wire values (agent/signing.py),
    # not their decoded form.
    wire: JsonObj = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def signed(self) -> bool:
        return self.wire.get("signature") not in (None, "")

    @property
    def encrypted(self) -> bool:
        """Whether the payload travels as ``encryptedPayload`` (agent/sealed.py)."""
        return self.wire.get("encryptedPayload") not in (None, "")

    @classmethod
    def from_wire(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise JobDecodeError(f"job must be an object, got {type(data).__name__}")
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id.strip():
            raise JobDecodeError("job has no id")
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise JobDecodeError(f"job {job_id} has no kind")
        if "payload" not in data and data.get("encryptedPayload") in (None, ""):
            raise JobDecodeError(f"job {job_id} has no payload")
        key = data.get("idempotencyKey") or ""
        return cls(
            id=job_id,
            kind=kind,
            payload=data.get("payload"),
            idempotency_key=str(key).strip(),
            created_at=parse_time(data.get("createdAt")),
            expires_at=parse_time(data.get("expiresAt")),
            wire=data,
        )


@attrs.frozen
class AppliedRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0

    def to_wire(self) -> JsonObj:
        wire: JsonObj = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,  # always serialized, "" for cluster-scoped objects
            "name": self.name,
        }
        if self.uid:
            wire["uid"] = self.uid
        if self.generation:
            wire["generation"] = self.generation
        return wire

    @classmethod
    def of(cls, obj: JsonObj) -> AppliedRef:
        meta = obj.get("metadata", {})
        return cls(
            api_version=str(obj.get("apiVersion", "")),
            kind=str(obj.get("kind", "")),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
        )


@attrs.frozen
class JobResult:
    outcome: Outcome
    timestamp: datetime.datetime
    error: str = ""
    applied_ref: AppliedRef | None = None

    def to_wire(self) -> JsonObj:
        wire: JsonObj = {"outcome": self.outcome.value}
        if self.error:
            wire["error"] = self.error
        if self.applied_ref is not None:
            wire["appliedRef"] = self.applied_ref.to_wire()
        wire["timestamp"] = format_time(self.timestamp)
        return wire


@attrs.frozen
class Credentials:
    """Where and as whom the agent talks to the control plane. The token never appears in
    ``repr`` (and so in no log line)."""

    base_url: str
    cluster_id: str
    token: str = attrs.field(repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.base_url and self.cluster_id and self.token)

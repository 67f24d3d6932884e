"""Turning one job into a change on the cluster, and its outcome (docs/pull-mode.md, "Job
results and outcomes" and "Payload kinds").

* ``apply``: the payload is a manifest; ``delete``: a reference; ``intent``: a structured record
  (``ensure-application-instance``, ``request-operation``, ``delete-application-instance``).
* **Allow-list.** Only kinds on the list may be written or deleted (default: the operator's own
  ApplicationInstance and Operation, and Namespaces; extendable by flag). Anything else
  is ``failed`` with an error naming the kind, so a compromised or buggy control plane cannot
  write RBAC, Pods or Secrets through the agent. Cluster is opt-in
  (``--agent-allow-kind ops.vworkspace.io/Cluster``): a Cluster re-registers the agent at the
  endpoint it names.
* **Metadata hygiene** (agent/hygiene.py): an applied object keeps only name, namespace, labels
  and annotations; ``ownerReferences``, ``finalizers``, ``generateName`` and labels or
  annotations the operator or Kubernetes act on are refused (``failed`` naming the field), the
  read-only fields of a round-tripped object (``uid``, ``resourceVersion``, ``managedFields``,
  ...) are dropped.
* **Local policy** (agent/policy.py), in addition to the allow-list: namespaces, catalog ids,
  chart sources, operation types and engines the cluster accepts; a violation is ``failed``
  naming the rule, checked before any namespace is created.
* Labels ``app.vworkspace.io/managed-by=control-plane`` and ``app.vworkspace.io/cluster-id`` are
  forced; a missing target namespace is created (labelled ``managed-by=vworkspace``). Namespaces
  seen to exist are remembered, so a stream of jobs into one namespace costs no GET per job; a
  namespace deleted since is noticed by the apply's NotFound, re-created, and the apply retried
  once.
* The ``appliedRef`` comes from the apply's answer (the stored object, as a read back would
  give it), not from a second GET.
* **Server-side apply** as ``vworkspace-agent``. For the operator's own kinds with ``force``: the
  control plane is the source of truth for every field it sends (as the Go agent). For any other
  allowed kind *without* force: the agent must not take fields from other managers, so such a
  clash is outcome ``conflict`` with an error naming the other field manager and the field path.
* **Names.** Every name and namespace a job carries is checked as the Kubernetes name it must
  be (agent/confine.py) before any request is built, and the policy then sees those names; a
  failure is ``failed`` naming the field (issue 24: a namespace ``team-a/../prod`` once reached
  ``prod``).
* **Encrypted payloads** (agent/sealed.py, agent/valuessecret.py): a job's ``encryptedPayload``
  is decrypted with the cluster's key after the signature check, and sealed values of an
  ApplicationInstance go into a Secret the instance references, never into its spec. A payload
  or value that cannot be decrypted (another key, no key, not an age file) is ``failed`` naming
  the field, before anything (a namespace included) is written.
* Bad input (not an object, missing apiVersion/kind/name, unknown kind, oversized payload) is a
  ``failed`` result with a clear message; :meth:`Applier.process` never raises (except on
  cancellation), so one bad job cannot stop the agent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from vworkspace.agent import confine
from vworkspace.agent.hygiene import check_metadata
from vworkspace.agent.policy import Policy, PolicyError
from vworkspace.agent.sealed import ENCRYPTED_PAYLOAD, SealedError, Unsealer
from vworkspace.agent.valuessecret import (
    ValuesSecret,
    ValuesSecretError,
    ValuesSecrets,
    carries_sealed,
    split,
)
from vworkspace.agent.wire import AppliedRef, Job, JobResult, Outcome
from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.discovery import Discovery, UnknownKindError, split_api_version
from vworkspace.kube.rest.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from vworkspace.kube.rest.resources import NAMESPACES, ResourceType

_log = structlog.get_logger("vworkspace.agent.applier")

OWN_KINDS = frozenset(
    {
        (constants.APPS_GROUP, "ApplicationInstance"),
        (constants.OPS_GROUP, "Operation"),
        (constants.OPS_GROUP, "Cluster"),
    }
)
# Not Cluster: a Cluster re-registers the agent at the endpoint it names, so writing one is the
# cluster's own decision (opt in with --agent-allow-kind ops.vworkspace.io/Cluster).
DEFAULT_ALLOWED = frozenset(
    {
        (constants.APPS_GROUP, "ApplicationInstance"),
        (constants.OPS_GROUP, "Operation"),
        ("", "Namespace"),
    }
)
DEFAULT_MAX_PAYLOAD = 1024 * 1024
# Namespaces remembered as existing; past this many the memory starts over (one GET each again).
MAX_KNOWN_NAMESPACES = 10_000


class JobError(Exception):
    """A job that cannot be carried out; the message becomes the result's ``error``."""


def parse_allowed(entries: list[str]) -> set[tuple[str, str]]:
    """``group/Kind`` (``/Kind`` or ``Kind`` for the core group) -> {(group, Kind)}."""
    allowed = set()
    for entry in entries:
        group, _, kind = entry.strip().rpartition("/")
        if not kind or not kind[0].isupper():
            raise ValueError(f"{entry!r} is not GROUP/Kind (e.g. apps/Deployment, /ConfigMap)")
        allowed.add((group, kind))
    return allowed


class Applier:
    def __init__(
        self,
        client: KubeApi,
        *,
        cluster_id: Callable[[], str],
        clock: Clock,
        allowed: frozenset[tuple[str, str]] | set[tuple[str, str]] = DEFAULT_ALLOWED,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        policy: Policy | None = None,
        on_rejected: Callable[[str], None] = lambda reason: None,
        unsealer: Unsealer | None = None,
    ) -> None:
        self._client = client
        self.policy = policy or Policy()
        # Counts policy rejections (reason ``policy_<rule>``) in the agent metrics.
        self._on_rejected = on_rejected
        self._cluster_id = cluster_id
        self._clock = clock
        self.allowed = frozenset(allowed)
        self.max_payload_bytes = max_payload_bytes
        self._discovery = Discovery(client)
        self._namespaces: set[str] = set()  # seen to exist; see ensure_namespace
        # Without one, an encrypted job fails with encryption_no_key (agent/sealed.py).
        self._unsealer = unsealer or Unsealer(key=lambda: None, source="(none configured)")
        self._values = ValuesSecrets(client)

    def _result(
        self, outcome: Outcome, *, error: str = "", ref: AppliedRef | None = None
    ) -> JobResult:
        return JobResult(outcome=outcome, timestamp=self._clock.now(), error=error, applied_ref=ref)

    async def process(self, job: Job) -> JobResult:
        try:
            if job.encrypted:
                await self._unsealer.ready()
            payload = self._payload(job)
            size = len(json.dumps(payload))
            if size > self.max_payload_bytes:
                raise JobError(
                    f"payload too large: {size} bytes exceeds the limit of {self.max_payload_bytes}"
                )
            if job.kind == "apply":
                ref = await self._apply(
                    _object(payload, "decode apply payload"), sealed=job.encrypted
                )
            elif job.kind == "delete":
                ref = await self._delete(payload)
            elif job.kind == "intent":
                ref = await self._intent(payload, sealed=job.encrypted)
            else:
                raise JobError(f'unsupported job kind "{job.kind}"')
        except PolicyError as err:
            self._on_rejected(f"policy_{err.rule}")
            return self._result(Outcome.FAILED, error=str(err))
        except SealedError as err:  # nothing was written: decryption precedes every request
            self._on_rejected(err.reason)
            return self._result(Outcome.FAILED, error=str(err))
        except InvalidNameError as err:  # agent/confine.py: names the field at fault
            return self._result(Outcome.FAILED, error=str(err))
        except (JobError, ValuesSecretError) as err:
            message = str(err)
            outcome = Outcome.CONFLICT if "conflict" in message else Outcome.FAILED
            return self._result(outcome, error=message)
        except ApiError as err:
            return self._result(Outcome.FAILED, error=f"{err.status} {err.reason}: {err.message}")
        except Exception as err:  # the last guard: a job of a shape nobody foresaw still ends
            # with a result (else it would be redelivered forever) and never stops the agent.
            _log.exception("job failed unexpectedly", job_id=job.id, kind=job.kind)
            return self._result(
                Outcome.FAILED, error=f"cannot process the job: {type(err).__name__}: {err}"[:500]
            )
        return self._result(Outcome.SUCCEEDED, ref=ref)

    def _payload(self, job: Job) -> Any:
        """The payload, decrypted first when it travels as ``encryptedPayload``."""
        if not job.encrypted:
            return job.payload
        if job.payload is not None:
            raise JobError(
                f"job carries both payload and {ENCRYPTED_PAYLOAD}; send exactly one of them"
            )
        armored = job.wire[ENCRYPTED_PAYLOAD]
        # Bounded before decrypting: armour and age framing add about a third.
        if isinstance(armored, str) and len(armored) > 2 * self.max_payload_bytes:
            raise JobError(
                f"{ENCRYPTED_PAYLOAD} too large: {len(armored)} bytes exceeds twice the limit "
                f"of {self.max_payload_bytes}"
            )
        return self._unsealer.payload(armored)

    # -- kinds -------------------------------------------------------------------------------

    async def _apply(self, obj: JsonObj, *, sealed: bool = False) -> AppliedRef:
        resource = await self._allowed_resource(obj.get("apiVersion"), obj.get("kind"))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise JobError("decode apply payload: metadata must be an object")
        _require_string(meta, "name", "metadata.name", required=True)
        _require_string(meta, "namespace", "metadata.namespace", required=False)
        check_metadata(meta)  # refuses what the server would act on (agent/hygiene.py)
        if "spec" in obj and not isinstance(obj["spec"], dict | None):
            raise JobError(
                f"decode apply payload: spec must be an object, got {type(obj['spec']).__name__}"
            )
        labels = meta.get("labels")
        meta["labels"] = {
            **(labels if isinstance(labels, dict) else {}),
            constants.LABEL_MANAGED_BY: constants.MANAGED_BY_CONTROL_PLANE,
        }
        cluster_id = self._cluster_id()
        if cluster_id:
            meta["labels"][constants.LABEL_CLUSTER_ID] = cluster_id
        obj.pop("status", None)
        # Names, then the local policy, before anything (a namespace included) is created.
        confine.check_applied(resource, obj)
        self.policy.check_object(resource.group, resource.kind, obj)
        values = None
        is_instance = (resource.group, resource.kind) == (
            constants.APPS_GROUP,
            "ApplicationInstance",
        )
        if is_instance and carries_sealed(obj, sealed_payload=sealed):
            # Decrypted before any request: a value this cluster cannot read applies nothing.
            await self._unsealer.ready()
            values = split(obj, unsealer=self._unsealer, sealed_payload=sealed)
        namespaces: list[str] = []
        if resource.namespaced:  # confine checked the namespace is there and valid
            namespaces.append(meta["namespace"])
            release = (obj.get("spec") or {}).get("release")
            release_ns = (
                release.get("namespace")
                if resource.kind == "ApplicationInstance" and isinstance(release, dict)
                else None
            )
            if isinstance(release_ns, str) and release_ns and release_ns != meta["namespace"]:
                namespaces.append(release_ns)
        else:
            meta.pop("namespace", None)
        for namespace in namespaces:
            await self.ensure_namespace(namespace)
        try:
            stored = await self._write(resource, obj, values)
        except NotFoundError:
            if not namespaces:
                raise
            # A remembered namespace may have been deleted since: check them again, once.
            self._namespaces.difference_update(namespaces)
            for namespace in namespaces:
                await self.ensure_namespace(namespace)
            stored = await self._write(resource, obj, values)
        return AppliedRef.of(stored)

    async def _write(
        self, resource: ResourceType, obj: JsonObj, values: ValuesSecret | None
    ) -> JsonObj:
        """The apply, with the values Secret first and owned after (agent/valuessecret.py)."""
        if values is None:
            return await self._server_side_apply(resource, obj)
        created = await self._values.write(values)
        try:
            stored = await self._server_side_apply(resource, obj)
        except Exception:  # (not on cancellation: a stopping agent leaves it to the next try)
            if created:
                await self._values.drop(values)
            raise
        await self._values.own(values, stored)
        return stored

    async def _server_side_apply(self, resource: ResourceType, obj: JsonObj) -> JsonObj:
        """The stored object; NotFoundError passes through (a namespace may be gone)."""
        own = (resource.group, resource.kind) in OWN_KINDS
        try:
            return await self._client.apply(
                resource, obj, field_manager=constants.FIELD_MANAGER_AGENT, force=own
            )
        except ConflictError as err:
            owners = "; ".join(
                f'{c.field} is owned by field manager "{c.field_manager}"' for c in err.causes
            )
            raise JobError(f"apply conflict: {owners or err.message}") from None
        except NotFoundError:
            raise
        except ApiError as err:
            raise JobError(f"server-side apply: {err.status} {err.reason}: {err.message}") from None

    async def _delete(self, payload: Any) -> AppliedRef:
        ref = _object(payload, "decode delete payload")
        api_version, kind, name = ref.get("apiVersion"), ref.get("kind"), ref.get("name")
        if not (
            isinstance(api_version, str)
            and api_version
            and isinstance(kind, str)
            and kind
            and isinstance(name, str)
            and name
        ):
            raise JobError("delete payload requires apiVersion, kind, and name")
        resource = await self._allowed_resource(api_version, kind)
        key = ObjectKey(
            confine.object_namespace(resource, ref.get("namespace"), field="namespace"),
            confine.object_name(resource, name, field="name"),
        )
        namespace = key.namespace or ""
        # The policy sees the key the request is built from (a Namespace: its own name).
        is_namespace = (resource.group, resource.kind) == ("", "Namespace")
        self.policy.check_namespace(key.name if is_namespace else key.namespace)
        try:
            await self._client.delete(resource, key)
        except NotFoundError:
            pass
        except ApiError as err:
            raise JobError(f"delete {kind}/{name}: {err.message}") from None
        return AppliedRef(api_version=api_version, kind=kind, namespace=str(namespace), name=name)

    async def _intent(self, payload: Any, *, sealed: bool = False) -> AppliedRef:
        record = _object(payload, "decode intent payload")
        intent = record.get("intent")
        if intent == "ensure-application-instance":
            obj = record.get("applicationInstance")
            if not isinstance(obj, dict):
                raise JobError("ensure-application-instance requires applicationInstance")
            return await self._apply(
                {"apiVersion": constants.APPS_API_VERSION, "kind": "ApplicationInstance", **obj},
                sealed=sealed,
            )
        if intent == "request-operation":
            obj = record.get("operation")
            if not isinstance(obj, dict):
                raise JobError("request-operation requires operation")
            return await self._apply(
                {"apiVersion": constants.OPS_API_VERSION, "kind": "Operation", **obj}
            )
        if intent == "delete-application-instance":
            name = record.get("name")
            if not isinstance(name, str) or not name:
                raise JobError("delete-application-instance requires name")
            return await self._delete_instance(name, record.get("namespace"))
        raise JobError(f'unsupported intent "{intent}"')

    async def _delete_instance(self, name: str, namespace: Any) -> AppliedRef:
        resource = await self._allowed_resource(constants.APPS_API_VERSION, "ApplicationInstance")
        key = ObjectKey(
            confine.object_namespace(resource, namespace, field="namespace"),
            confine.object_name(resource, name, field="name"),
        )
        self.policy.check_namespace(key.namespace)
        try:
            current = await self._client.get(resource, key)
        except NotFoundError:
            return AppliedRef(
                api_version=constants.APPS_API_VERSION,
                kind="ApplicationInstance",
                namespace=key.namespace or "",
                name=name,
            )
        except ApiError as err:
            raise JobError(f"get application instance: {err.message}") from None
        try:
            await self._client.delete(resource, key)
        except NotFoundError:
            pass
        except ApiError as err:
            raise JobError(f"delete application instance: {err.message}") from None
        return AppliedRef.of(
            {**current, "apiVersion": constants.APPS_API_VERSION, "kind": "ApplicationInstance"}
        )

    # -- helpers -----------------------------------------------------------------------------

    async def _allowed_resource(self, api_version: Any, kind: Any) -> ResourceType:
        if not isinstance(api_version, str) or not api_version:
            raise JobError("decode apply payload: apiVersion is required")
        if not isinstance(kind, str) or not kind:
            raise JobError("decode apply payload: kind is required")
        try:
            group, _ = split_api_version(api_version)
        except ValueError as err:
            raise JobError(f"parse apiVersion: {err}") from None
        if (group, kind) not in self.allowed:
            allowed = ", ".join(sorted(f"{g or 'core'}/{k}" for g, k in self.allowed))
            group_name = group or "core"
            raise JobError(
                f"kind {kind} of API group {group_name} is not on the agent allow-list ({allowed})"
            )
        try:
            return await self._discovery.resolve(api_version, kind)
        except UnknownKindError as err:
            raise JobError(str(err)) from None

    async def ensure_namespace(self, name: str) -> None:
        if name in self._namespaces:
            return
        await self._ensure_namespace(name)
        if len(self._namespaces) >= MAX_KNOWN_NAMESPACES:
            self._namespaces.clear()
        self._namespaces.add(name)

    async def _ensure_namespace(self, name: str) -> None:
        try:
            await self._client.get(NAMESPACES, ObjectKey(None, name))
            return
        except NotFoundError:
            pass
        except ApiError as err:
            if err.status != 403:
                raise JobError(f'namespace "{name}": {err.message}') from None
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    constants.LABEL_NAMESPACE_MANAGED_BY: constants.NAMESPACE_MANAGED_BY_VALUE
                },
            },
        }
        try:
            await self._client.create(NAMESPACES, body, field_manager=constants.FIELD_MANAGER_AGENT)
            _log.info("created namespace", namespace=name)
        except AlreadyExistsError:
            pass
        except ApiError as err:
            if err.status == 403:
                raise JobError(
                    f'namespace "{name}" does not exist and cannot be created (check RBAC)'
                ) from None
            raise JobError(f'namespace "{name}": {err.message}') from None


def _require_string(obj: JsonObj, key: str, path: str, *, required: bool) -> None:
    value = obj.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        got = "missing" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"
        raise JobError(f"decode apply payload: {path} must be a non-empty string, got {got}")


def _object(payload: Any, prefix: str) -> JsonObj:
    if not isinstance(payload, dict):
        raise JobError(f"{prefix}: payload must be a JSON object, got {type(payload).__name__}")
    return dict(payload)

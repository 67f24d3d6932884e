"""Admission rules for ApplicationInstance and Operation (docs/webhooks.md), pure functions.

Each review returns None to admit, else one message a person can act on, naming the field at
fault; rules run in Go's order and the first failure wins. What a rule needs from the
cluster (the Namespace's annotations, the target, the other Operations) is passed in as a
:class:`World` the webhook fetched, so every rule is testable without an API server.

Deliberate differences from the Go webhooks (docs/webhooks.md):

* an UPDATE that leaves ``spec`` unchanged, or of an object being deleted, is admitted without
  running the rules: those are the finalizer and label writes of controllers, and rejecting them
  (for example because the target was deleted) would make the object undeletable;
* ``spec.values.inline`` findings name the dotted path and say to use ``secretRef``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.approvals import ClaimError, verify
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.templates import (
    KNOWN_TYPES,
    POD_ENGINES,
    RUNNER_SERVICE_ACCOUNT,
    TEMPLATES,
    parameter_problem,
    template_for,
)
from vworkspace.api.validation import (
    conflicting_operation,
    validate_application_instance,
    validate_operation,
)

# -- ApplicationInstance ----------------------------------------------------------------------

SECRET_KEY_SUFFIXES = ("password", "secret")
SECRET_KEYS = frozenset({"accesskey", "secretkey", "apikey", "token"})
PLACEHOLDERS = frozenset({"<set via externalsecret>", "<set via external-secret>"})
PEM_PRIVATE_KEY = re.compile(r"^-----BEGIN .*PRIVATE KEY-----")


def review_application_instance(new: JsonObj, old: JsonObj | None = None) -> str | None:
    if old is not None:
        if is_controller_write(new, old):
            return None
        problem = _placeholder_switch_problem(new, old)
        if problem:
            return problem
    problem = validate_application_instance(new)
    if problem:
        return problem
    spec = new.get("spec") or {}
    values = spec.get("values")
    if (
        spec.get("mode") != "placeholder"
        and isinstance(values, dict)
        and values.get("source") == "inline"
    ):
        return inline_secret_problem(values.get("inline"))
    return None


def is_controller_write(new: JsonObj, old: JsonObj) -> bool:
    """Metadata-only updates and writes to deleting objects (finalizer removal) pass."""
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return (new.get("spec") or {}) == (old.get("spec") or {})


def _placeholder_switch_problem(new: JsonObj, old: JsonObj) -> str | None:
    new_mode = (new.get("spec") or {}).get("mode") or "managed"
    old_spec = old.get("spec") or {}
    old_mode = old_spec.get("mode") or "managed"
    if new_mode != "placeholder" or old_mode == "placeholder":
        return None
    released = any((o.get("status") or {}).get("helmReleaseRef") for o in (old, new))
    if released or old_spec.get("chart") is not None or old_spec.get("release") is not None:
        return (
            "spec.mode cannot change from managed to placeholder once the instance has a chart, "
            "a release or a HelmRelease; delete the ApplicationInstance and create a "
            "placeholder instead"
        )
    return None


def inline_secret_problem(tree: Any, path: str = "spec.values.inline") -> str | None:
    """The first secret-looking entry in inline values (rule 2 of docs/webhooks.md), or None."""
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            problem = inline_secret_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if not isinstance(tree, dict):
        return None
    for key, value in tree.items():
        here = f"{path}.{key}"
        if isinstance(value, dict | list):
            problem = inline_secret_problem(value, here)
            if problem:
                return problem
            continue
        if not isinstance(value, str):
            continue
        text = value.strip()
        if not text or text.lower() in PLACEHOLDERS:
            continue
        if PEM_PRIVATE_KEY.match(text):
            return f"{here} holds a PEM private key; {_USE_SECRET_REF}"
        lowered = str(key).lower()
        if lowered.endswith(SECRET_KEY_SUFFIXES) or lowered in SECRET_KEYS:
            return f"{here} looks like a secret; {_USE_SECRET_REF}"
    return None


_USE_SECRET_REF = (
    "inline values are stored in the ApplicationInstance and the HelmRelease in clear text, so "
    "put secret values in a Secret and use spec.values.secretRef"
)

# -- Operation --------------------------------------------------------------------------------


@attrs.frozen
class World:
    """What the Operation rules read from the cluster."""

    namespace_annotations: dict[str, str] = attrs.field(factory=dict)
    target: JsonObj | None = None
    operations: list[JsonObj] = attrs.field(factory=list)  # in the Operation's namespace
    # The Operation's engine lets it start while its target does not exist (its policy hook,
    # OperationEngine.runs_without_target: a Velero Restore brings a deleted instance back).
    runs_without_target: bool = False


IDENTITY_FIELDS = (
    ("spec.targetRef.apiVersion", ("targetRef", "apiVersion")),
    ("spec.targetRef.kind", ("targetRef", "kind")),
    ("spec.targetRef.name", ("targetRef", "name")),
    ("spec.type", ("type",)),
    ("spec.engine", ("engine",)),
)


def review_operation(
    new: JsonObj,
    old: JsonObj | None = None,
    *,
    world: World,
    approval_secret: str,
    now: float,
) -> str | None:
    """Rules U1-U2 (UPDATE) and 1-10 of docs/webhooks.md, "Operation rules", in order."""
    check_parameters = True
    if old is not None:
        if is_controller_write(new, old):
            return None
        problem = _update_problem(new, old)
        if problem:
            return problem
        check_parameters = _parameters(new) != _parameters(old)
    spec = new.get("spec") or {}
    problem = _first_problem(
        lambda: validate_operation(new),
        lambda: service_account_problem(spec),
        lambda: known_type_problem(spec),
        lambda: allowed_type_problem(new, world.namespace_annotations),
        lambda: template_problem(spec),
        lambda: _target_missing_problem(new, world.target, world.runs_without_target),
        lambda: capability_problem(new, world.target),
        lambda: parameters_problem(new) if check_parameters else None,
    )
    if problem:
        return problem
    claim = ((spec.get("approvals") or {}).get("claim") or "").strip()
    if claim:
        try:
            verify(claim, secret=approval_secret, operation=_name(new), now=now)
        except ClaimError as err:
            return f"spec.approvals.claim: {err}"
    other = conflicting_operation(new, world.operations)
    if other is not None:
        return (
            f"{other['spec']['type']} Operation {other['metadata']['name']!r} is in flight on "
            f"ApplicationInstance {spec['targetRef']['name']!r}; a {spec['type']} cannot start "
            "until it finishes"
        )
    return None


# -- The rules the Operation reconciler enforces too (docs/webhooks.md, "Without the webhook") --


def operation_spec_problem(op: JsonObj) -> str | None:
    """Rules 1, 2, 3, 5 and 8: what the Operation alone decides, in the webhook's order.

    The Operation reconciler runs these before it looks at the target, so an Operation that
    skipped admission (webhook off, the default) never reaches an engine with a ServiceAccount,
    a (type, engine) pair or parameters the webhook would have refused; the message is the
    webhook's. Rule 4 sits between 3 and 5 in the webhook; it reads the Namespace and is in
    :func:`operation_cluster_problem`, so when several rules fail the two paths may name
    different ones first.
    """
    spec = op.get("spec") or {}
    return _first_problem(
        lambda: validate_operation(op),
        lambda: service_account_problem(spec),
        lambda: known_type_problem(spec),
        lambda: template_problem(spec),
        lambda: parameters_problem(op),
    )


def _first_problem(*rules: Callable[[], str | None]) -> str | None:
    """The first rule's message, running each only when all before it passed (later rules may
    assume what earlier ones checked, e.g. that ``spec.type`` is a string)."""
    for rule in rules:
        problem = rule()
        if problem:
            return problem
    return None


def operation_cluster_problem(
    op: JsonObj, *, namespace_annotations: dict[str, str], target: JsonObj
) -> str | None:
    """Rules 4 and 7 for an Operation that passed :func:`operation_spec_problem` and whose
    target exists: the Namespace's allow-list and the target's capability annotation."""
    return allowed_type_problem(op, namespace_annotations) or capability_problem(op, target)


def invalid_target_problem(op: JsonObj, target: JsonObj) -> str | None:
    """The target passes the ApplicationInstance validation (rule 1 of the instance webhook).

    Not an Operation rule of the webhook, where the instance's own admission already refused
    such a target; without the webhook an invalid instance exists (Blocked), and the engines
    put their workloads in its ``spec.release.namespace``: a RunCommand on an instance whose
    release namespace is ``kube-system`` would run its Job there.
    """
    problem = validate_application_instance(target)
    if problem is None:
        return None
    return (
        f"spec.targetRef.name: ApplicationInstance {op['spec']['targetRef']['name']!r} is not "
        f"valid: {problem}"
    )


def service_account_problem(spec: JsonObj) -> str | None:
    """Rule 2: a Pod-running engine runs as the runner ServiceAccount, nothing else (a tenant
    who may create Operations must not borrow another ServiceAccount's rights)."""
    parameters = spec.get("parameters")
    if spec.get("engine") not in POD_ENGINES or not isinstance(parameters, dict):
        return None
    account = parameters.get("serviceAccountName")
    if account is None or account == RUNNER_SERVICE_ACCOUNT:
        return None
    return (
        f"spec.parameters.serviceAccountName must be {RUNNER_SERVICE_ACCOUNT} (or unset) for "
        f"engine {spec['engine']}, got {account!r}"
    )


def known_type_problem(spec: JsonObj) -> str | None:
    """Rule 3: one of the six types."""
    if spec.get("type") in KNOWN_TYPES:
        return None
    return f"spec.type must be one of {', '.join(KNOWN_TYPES)}, got {spec.get('type')!r}"


def allowed_types(annotations: dict[str, str]) -> list[str]:
    """The namespace's allow-list; empty means every type is allowed."""
    raw = annotations.get(constants.ANNOTATION_ALLOWED_TYPES) or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


def allowed_type_problem(op: JsonObj, annotations: dict[str, str]) -> str | None:
    """Rule 4: the type is on the Namespace's allow-list (``annotations`` of the Namespace)."""
    type_ = (op.get("spec") or {}).get("type")
    allowed = allowed_types(annotations)
    if not allowed or type_ in allowed:
        return None
    return (
        f"Operation type {type_} is not allowed in namespace {_namespace(op)!r}: its "
        f"annotation {constants.ANNOTATION_ALLOWED_TYPES} allows only {', '.join(allowed)}"
    )


def template_problem(spec: JsonObj) -> str | None:
    """Rule 5: (type, engine) is one of the built-in templates."""
    type_, engine = spec.get("type"), spec.get("engine")
    if template_for(str(type_), str(engine)) is not None:
        return None
    return f"no built-in template for type {type_} with engine {engine}{_expected_engine(type_)}"


def targetless_problem(op: JsonObj) -> str | None:
    """For an Operation that runs without its target (its engine says so: a Velero Restore,
    engines/velero.py): a namespace mapping would let it write outside the Operation's
    namespace with no instance to consent, so it is refused."""
    params = _parameters(op)
    if not isinstance(params, dict) or not params.get("namespaceMapping"):
        return None
    spec = op.get("spec") or {}
    return (
        "spec.parameters.namespaceMapping: a Restore whose target ApplicationInstance "
        f"{spec['targetRef']['name']!r} does not exist restores into namespace "
        f"{_namespace(op)!r} only; remove the mapping"
    )


def _target_missing_problem(
    op: JsonObj, target: JsonObj | None, runs_without_target: bool
) -> str | None:
    """Rule 6 (the reconciler has its own: ``TargetNotReady``, retried, as Go's); an Operation
    whose engine lets it run without its target (``World.runs_without_target``) may."""
    if target is not None:
        return None
    if runs_without_target:
        return targetless_problem(op)
    return (
        f"spec.targetRef.name: ApplicationInstance {op['spec']['targetRef']['name']!r} "
        f"not found in namespace {_namespace(op)!r}"
    )


def capability_problem(op: JsonObj, target: JsonObj | None) -> str | None:
    """Rule 7: the target grants the template's capability to this engine (an absent target
    or template is the business of rules 5 and 6)."""
    spec = op.get("spec") or {}
    template = template_for(str(spec.get("type")), str(spec.get("engine")))
    if template is None or target is None:
        return None
    annotations = (target.get("metadata") or {}).get("annotations") or {}
    granted = (annotations.get(template.capability_annotation) or "").strip()
    if granted == spec["engine"]:
        return None
    return (
        f"ApplicationInstance {spec['targetRef']['name']!r} does not allow {spec['type']} "
        f"Operations: its annotation {template.capability_annotation} must be "
        f"{spec['engine']!r}, got {granted or 'nothing'!r}"
    )


def parameters_problem(op: JsonObj) -> str | None:
    """Rule 8: the parameters (absent = ``{}``) satisfy the template's JSON Schema."""
    spec = op.get("spec") or {}
    template = template_for(str(spec.get("type")), str(spec.get("engine")))
    if template is None:
        return None
    return parameter_problem(template, _parameters(op))


def _update_problem(new: JsonObj, old: JsonObj) -> str | None:
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    for field, path in IDENTITY_FIELDS:
        before, after = _dig(old_spec, path), _dig(new_spec, path)
        if before != after:
            return f"{field} is immutable (was {before!r}, now {after!r}); create a new Operation"
    phase = (old.get("status") or {}).get("phase") or ""
    if phase not in ("", "Pending") and _parameters(new) != _parameters(old):
        return f"spec.parameters cannot change once the Operation has started (phase {phase})"
    return None


def _expected_engine(type_: Any) -> str:
    engines = [t.engine for t in TEMPLATES if t.type == type_]
    return f" ({type_} runs on engine {engines[0]})" if engines else ""


def _parameters(op: JsonObj) -> Any:
    parameters = (op.get("spec") or {}).get("parameters")
    return {} if parameters is None else parameters


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _name(op: JsonObj) -> str:
    return str((op.get("metadata") or {}).get("name") or "")


def _namespace(op: JsonObj) -> str:
    return str((op.get("metadata") or {}).get("namespace") or "")

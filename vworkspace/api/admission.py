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
from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.approvals import ClaimError, verify
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

JsonObj = dict[str, Any]

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
    for problem in (
        validate_operation(new),
        _service_account_problem(spec),
        _known_type_problem(spec),
        _allowed_type_problem(spec, new, world.namespace_annotations),
    ):
        if problem:
            return problem
    template = template_for(spec["type"], spec["engine"])
    if template is None:
        return (
            f"no built-in template for type {spec['type']} with engine {spec['engine']}"
            f"{_expected_engine(spec['type'])}"
        )
    if world.target is None:
        return (
            f"spec.targetRef.name: ApplicationInstance {spec['targetRef']['name']!r} "
            f"not found in namespace {_namespace(new)!r}"
        )
    annotations = (world.target.get("metadata") or {}).get("annotations") or {}
    granted = (annotations.get(template.capability_annotation) or "").strip()
    if granted != spec["engine"]:
        return (
            f"ApplicationInstance {spec['targetRef']['name']!r} does not allow {spec['type']} "
            f"Operations: its annotation {template.capability_annotation} must be "
            f"{spec['engine']!r}, got {granted or 'nothing'!r}"
        )
    if check_parameters:
        problem = parameter_problem(template, _parameters(new))
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


def _service_account_problem(spec: JsonObj) -> str | None:
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


def _known_type_problem(spec: JsonObj) -> str | None:
    if spec.get("type") in KNOWN_TYPES:
        return None
    return f"spec.type must be one of {', '.join(KNOWN_TYPES)}, got {spec.get('type')!r}"


def allowed_types(annotations: dict[str, str]) -> list[str]:
    """The namespace's allow-list; empty means every type is allowed."""
    raw = annotations.get(constants.ANNOTATION_ALLOWED_TYPES) or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


def _allowed_type_problem(spec: JsonObj, op: JsonObj, annotations: dict[str, str]) -> str | None:
    allowed = allowed_types(annotations)
    if not allowed or spec["type"] in allowed:
        return None
    return (
        f"Operation type {spec['type']} is not allowed in namespace {_namespace(op)!r}: its "
        f"annotation {constants.ANNOTATION_ALLOWED_TYPES} allows only {', '.join(allowed)}"
    )


def _expected_engine(type_: str) -> str:
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

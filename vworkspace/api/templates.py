"""Built-in Operation templates: which (type, engine) pairs exist, which capability annotation
each needs on its target, and the JSON Schema of its parameters (docs/api.md, "Operation
templates").

The ids are shared with the control plane's catalog, so they are wire-exact. We use the wider of
the two schema revisions Go shipped (it matches what the engines read). Schemas are
validated with ``jsonschema`` (Draft 2020-12); the first error, sorted by path, becomes one
message naming the parameter at fault. ``jsonschema`` (with ``referencing`` and ``rpds``, a few
MiB) is imported when the first Operation is checked, not at start, and each validator is built
once.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs

from vworkspace.api.constants import capability_annotation
from vworkspace.api.jsontypes import JsonObj

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

RUNNER_SERVICE_ACCOUNT = "vworkspace-operation-runner"
# Engines whose workloads run Pods in the target namespace (Operation rule 2, docs/webhooks.md).
POD_ENGINES = frozenset({"job", "workflow", "helmHookJob"})

_STR: JsonObj = {"type": "string"}
_NONEMPTY: JsonObj = {"type": "string", "minLength": 1}
_BOOL: JsonObj = {"type": "boolean"}
_STRS: JsonObj = {"type": "array", "items": _STR}
_POSITIVE: JsonObj = {"type": "integer", "minimum": 1}
_NON_NEGATIVE: JsonObj = {"type": "integer", "minimum": 0}


def _object(properties: JsonObj, *, required: tuple[str, ...] = ()) -> JsonObj:
    schema: JsonObj = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _either_template(schema: JsonObj) -> JsonObj:
    """``template`` is required unless Go's ``workflowTemplate`` is given (the error names
    ``template``, the schema's spelling)."""
    return {
        **schema,
        "if": {"not": {"required": ["workflowTemplate"]}},
        "then": {"required": ["template"]},
    }


@attrs.frozen
class Template:
    ref: str
    type: str
    engine: str
    verb: str  # capability annotation ops.vworkspace.io/<verb> on the target
    requires_approval: bool
    schema: JsonObj = attrs.field(eq=False, repr=False)

    @property
    def capability_annotation(self) -> str:
        return capability_annotation(self.verb)


TEMPLATES: tuple[Template, ...] = (
    Template(
        "backup.velero",
        "Backup",
        "velero",
        "backup",
        False,
        _object(
            {
                "retention": _STR,
                "ttl": _STR,
                "snapshotClassName": _STR,
                "csiSnapshotClassName": _STR,
                "snapshotVolumes": _BOOL,
                "storageLocation": _STR,
                "includedResources": _STRS,
                "excludedResources": _STRS,
                # Read by the velero engine (docs/api.md, deviation 29); Go's schema lacked it.
                "allowPartialFailure": _BOOL,
            }
        ),
    ),
    Template(
        "restore.velero",
        "Restore",
        "velero",
        "restore",
        True,
        _object(
            {
                "backupName": _NONEMPTY,
                "namespaceMapping": {"type": "object", "additionalProperties": _STR},
                "restorePVs": _BOOL,
                "existingResourcePolicy": _STR,
                "includedResources": _STRS,
                "excludedResources": _STRS,
                "allowPartialFailure": _BOOL,
            },
            required=("backupName",),
        ),
    ),
    Template(
        "upgrade.helm",
        "Upgrade",
        "helm",
        "upgrade",
        False,
        _object(
            {
                "targetVersion": _NONEMPTY,
                "valuesPatch": {"type": "object"},
                # Read by the helm engine (docs/api.md, deviation 29); Go's schema lacked it.
                "timeoutSeconds": _POSITIVE,
            }
        ),
    ),
    Template(
        "migration.helmHookJob",
        "Migration",
        "helmHookJob",
        "migration",
        False,
        _object(
            {
                "hookName": _NONEMPTY,
                "activeDeadlineSeconds": _POSITIVE,
                "backoffLimit": _NON_NEGATIVE,
                # Wider than the Go schema (docs/api.md, deviation 23): the Go engine needs an
                # image the schema forbade.
                "image": _NONEMPTY,
                "command": _STRS,
                "args": _STRS,
                "ttlSecondsAfterFinished": _NON_NEGATIVE,
            },
            required=("hookName",),
        ),
    ),
    Template(
        "runCommand.job",
        "RunCommand",
        "job",
        "runcommand",
        False,
        _object(
            {
                "image": _NONEMPTY,
                "command": _STRS,
                "args": _STRS,
                # The schema's list of {name, value, valueFrom}, or Go's {name: value} map
                # (``items`` constrains only a list, ``additionalProperties`` only a map).
                "env": {
                    "type": ["array", "object"],
                    "items": _object(
                        {"name": _NONEMPTY, "value": _STR, "valueFrom": {"type": "object"}},
                        required=("name",),
                    ),
                    "additionalProperties": _STR,
                },
                "activeDeadlineSeconds": _POSITIVE,
                "timeoutSeconds": _POSITIVE,
                "backoffLimit": _NON_NEGATIVE,
                "ttlSecondsAfterFinished": _NON_NEGATIVE,
                "serviceAccountName": _NONEMPTY,
            },
            required=("image",),
        ),
    ),
    Template(
        "runbook.workflow",
        "Runbook",
        "workflow",
        "runbook",
        False,
        _either_template(
            _object(
                {
                    "template": _NONEMPTY,
                    "targetChartVersion": _STR,
                    "snapshotClassName": _STR,
                    "timeoutSeconds": _POSITIVE,
                    "failureAction": _STR,
                    # Go's spellings (docs/api.md): the engine read these, the schema forbade them.
                    "workflowTemplate": _NONEMPTY,
                    "workflowTemplateParameters": {"type": "object", "additionalProperties": _STR},
                    "serviceAccountName": _NONEMPTY,
                }
            )
        ),
    ),
)

KNOWN_TYPES: tuple[str, ...] = tuple(t.type for t in TEMPLATES)
_BY_PAIR = {(t.type, t.engine): t for t in TEMPLATES}
_BY_REF = {t.ref: t for t in TEMPLATES}


@functools.cache
def _validator(ref: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_BY_REF[ref].schema)


def template_for(type_: str, engine: str) -> Template | None:
    return _BY_PAIR.get((type_, engine))


def parameter_problem(template: Template, parameters: Any) -> str | None:
    """None when ``parameters`` satisfy the template's schema, else one message naming the
    parameter, e.g. ``spec.parameters.backupName: '' should be non-empty``."""
    errors = sorted(
        _validator(template.ref).iter_errors(parameters),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if not errors:
        return None
    first = errors[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
    return f"spec.parameters{path}: {first.message} (template {template.ref})"

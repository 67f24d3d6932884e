"""Admission rules (docs/webhooks.md): each rule admits and rejects, with its message."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vworkspace.api import approvals
from vworkspace.api.admission import (
    World,
    inline_secret_problem,
    review_application_instance,
    review_operation,
)
from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import objects
from vworkspace.testing.objects import managed_instance

NOW = 1_900_000_000.0
SECRET = "s3cret-hmac"


def instance(**spec: Any) -> JsonObj:
    base = managed_instance("shop", "team-a", version="1.2.3")
    base["spec"].update(spec)
    return base


def with_inline(values: Any) -> JsonObj:
    return instance(values={"source": "inline", "inline": values})


# -- ApplicationInstance ----------------------------------------------------------------------


def test_a_valid_managed_instance_is_admitted() -> None:
    assert review_application_instance(instance()) is None


def test_the_shared_semantic_validation_runs_first() -> None:
    bad = instance(release={"name": "shop", "namespace": "other"})
    assert review_application_instance(bad) == (
        "spec.release.namespace must equal metadata.namespace ('team-a'), got 'other'"
    )


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"db": {"password": "hunter2"}}, "spec.values.inline.db.password"),
        ({"adminPassword": "x"}, "spec.values.inline.adminPassword"),
        ({"clientSecret": "x"}, "spec.values.inline.clientSecret"),
        ({"s3": {"accessKey": "AKIA"}}, "spec.values.inline.s3.accessKey"),
        ({"secretKey": "x"}, "spec.values.inline.secretKey"),
        ({"apiKey": "x"}, "spec.values.inline.apiKey"),
        ({"Token": "x"}, "spec.values.inline.Token"),
        ({"users": [{"name": "a"}, {"password": "x"}]}, "spec.values.inline.users[1].password"),
    ],
)
def test_secret_like_keys_are_rejected_naming_the_path(values: JsonObj, path: str) -> None:
    message = review_application_instance(with_inline(values))
    assert message is not None
    assert message.startswith(f"{path} looks like a secret;")
    assert "use spec.values.secretRef" in message


def test_pem_private_keys_are_rejected_under_any_key() -> None:
    pem = "  -----BEGIN RSA PRIVATE KEY-----\nMIIE...\n-----END RSA PRIVATE KEY-----"
    message = review_application_instance(with_inline({"tls": {"cert": pem}}))
    assert message is not None
    assert message.startswith("spec.values.inline.tls.cert holds a PEM private key;")


@pytest.mark.parametrize(
    "values",
    [
        {"password": ""},
        {"password": "   "},
        {"password": "<set via ExternalSecret>"},
        {"dbPassword": "<set via external-secret>"},
        {"password": 12345},
        {"token": True},
        {"passwordPolicy": "strict"},  # does not *end* with password
        {"tokens": "x"},  # not exactly token
        {"publicKey": "-----BEGIN PUBLIC KEY-----"},
    ],
)
def test_placeholders_non_strings_and_innocent_keys_pass(values: JsonObj) -> None:
    assert inline_secret_problem(values) is None


def test_secret_scan_only_applies_to_inline_values() -> None:
    ref = instance(values={"source": "secretRef", "secretRef": {"name": "v", "key": "values"}})
    assert review_application_instance(ref) is None


def test_managed_to_placeholder_is_rejected_once_a_release_exists() -> None:
    old = instance()
    new = copy.deepcopy(old)
    new["spec"] = {"appRef": {"catalogId": "odoo"}, "mode": "placeholder"}
    message = review_application_instance(new, old)
    assert message is not None
    assert message.startswith("spec.mode cannot change from managed to placeholder")


def test_managed_to_placeholder_is_rejected_when_status_has_a_helm_release() -> None:
    old = instance()
    old["spec"] = {"appRef": {"catalogId": "odoo"}}  # managed by default, no chart yet
    old["status"] = {"helmReleaseRef": {"name": "shop", "namespace": "team-a"}}
    new = copy.deepcopy(old)
    new["spec"]["mode"] = "placeholder"
    assert review_application_instance(new, old) is not None
    del old["status"]
    del new["status"]
    assert review_application_instance(new, old) is None  # nothing to orphan


def test_placeholder_to_managed_is_allowed() -> None:
    old = instance()
    old["spec"] = {"appRef": {"catalogId": "odoo"}, "mode": "placeholder"}
    assert review_application_instance(instance(), old) is None


def test_metadata_only_updates_and_deletions_are_admitted_even_if_invalid() -> None:
    # Objects created before the webhook existed may be invalid; their finalizer must still go.
    old = instance(release={"name": "shop", "namespace": "other"})
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    assert review_application_instance(new, old) is None
    new["spec"]["chart"]["version"] = "2.0.0"
    assert review_application_instance(new, old) is not None
    new["metadata"]["deletionTimestamp"] = "2026-11-22T05:00:00Z"
    assert review_application_instance(new, old) is None


# -- Operation --------------------------------------------------------------------------------


def operation(name: str = "op-1", **spec: Any) -> JsonObj:
    op = objects.operation(name, "team-a", **spec)
    op["metadata"]["creationTimestamp"] = "2026-11-22T04:00:00Z"
    return op


def target(**annotations: str) -> JsonObj:
    granted = {
        "ops.vworkspace.io/backup": "velero",
        "ops.vworkspace.io/restore": "velero",
        "ops.vworkspace.io/upgrade": "helm",
        "ops.vworkspace.io/runcommand": "job",
    }
    granted.update(annotations)
    return {"metadata": {"name": "shop", "namespace": "team-a", "annotations": granted}}


def world(**kwargs: Any) -> World:
    kwargs.setdefault("target", target())
    return World(**kwargs)


def review(new: JsonObj, old: JsonObj | None = None, **kwargs: Any) -> str | None:
    return review_operation(
        new, old, world=kwargs.pop("world", world()), approval_secret=SECRET, now=NOW, **kwargs
    )


def claim(op: str = "op-1", *, exp: float = NOW + 600, secret: str = SECRET) -> str:
    payload = {"v": 1, "rid": 7, "op": op, "by": "alice", "at": "now", "exp": int(exp)}
    return approvals.sign(payload, secret)


def test_a_valid_backup_is_admitted() -> None:
    assert review(operation(parameters={"ttl": "72h", "snapshotVolumes": True})) is None


def test_rule_1_target_ref_shape() -> None:
    bad = operation(targetRef={"apiVersion": "v1", "kind": "ApplicationInstance", "name": "x"})
    assert review(bad) == (
        "spec.targetRef.apiVersion must be apps.vworkspace.io/v1alpha1, got 'v1'"
    )
    assert review(operation(engine=" ")) == "spec.engine must not be blank"


def test_rule_2_pod_engines_must_use_the_runner_service_account() -> None:
    op = operation(
        type="RunCommand",
        engine="job",
        parameters={"image": "busybox", "serviceAccountName": "admin"},
    )
    assert review(op) == (
        "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or unset) "
        "for engine job, got 'admin'"
    )
    op["spec"]["parameters"]["serviceAccountName"] = "vworkspace-operation-runner"
    assert review(op) is None


def test_rule_3_unknown_types_are_rejected() -> None:
    assert review(operation(type="Snapshot")) == (
        "spec.type must be one of Backup, Restore, Upgrade, Migration, RunCommand, Runbook, "
        "got 'Snapshot'"
    )


def test_rule_4_namespace_allow_list_names_the_type_and_the_annotation() -> None:
    ns = {"ops.vworkspace.io/allowed-types": " Backup , Upgrade ,"}
    message = review(
        operation(type="Restore", parameters={"backupName": "b"}),
        world=world(namespace_annotations=ns),
    )
    assert message == (
        "Operation type Restore is not allowed in namespace 'team-a': its annotation "
        "ops.vworkspace.io/allowed-types allows only Backup, Upgrade"
    )
    assert review(operation(), world=world(namespace_annotations=ns)) is None
    blank = {"ops.vworkspace.io/allowed-types": "  "}
    assert review(operation(), world=world(namespace_annotations=blank)) is None


def test_rule_5_only_the_built_in_type_engine_pairs_exist() -> None:
    assert review(operation(engine="helm")) == (
        "no built-in template for type Backup with engine helm (Backup runs on engine velero)"
    )
    assert review(operation(engine="volsync")) is not None


def test_rule_6_the_target_must_exist() -> None:
    assert review(operation(), world=World(target=None)) == (
        "spec.targetRef.name: ApplicationInstance 'shop' not found in namespace 'team-a'"
    )


def test_rule_7_the_target_must_grant_the_capability() -> None:
    no_grant = {"metadata": {"name": "shop", "annotations": {}}}
    assert review(operation(), world=world(target=no_grant)) == (
        "ApplicationInstance 'shop' does not allow Backup Operations: its annotation "
        "ops.vworkspace.io/backup must be 'velero', got 'nothing'"
    )
    wrong = target(**{"ops.vworkspace.io/backup": " restic "})
    message = review(operation(), world=world(target=wrong))
    assert message is not None
    assert message.endswith("got 'restic'")
    padded = target(**{"ops.vworkspace.io/backup": " velero "})
    assert review(operation(), world=world(target=padded)) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "Restore", "parameters": {}},
            "spec.parameters: 'backupName' is a required property (template restore.velero)",
        ),
        (
            {"type": "Restore", "parameters": {"backupName": ""}},
            "spec.parameters.backupName: '' should be non-empty (template restore.velero)",
        ),
        (
            {"parameters": {"ttl": 3}},
            "spec.parameters.ttl: 3 is not of type 'string' (template backup.velero)",
        ),
        (
            {"parameters": {"schedule": "daily"}},
            "spec.parameters: Additional properties are not allowed ('schedule' was unexpected) "
            "(template backup.velero)",
        ),
        (
            {
                "type": "RunCommand",
                "engine": "job",
                "parameters": {"image": "busybox", "env": [{"name": "A", "extra": 1}]},
            },
            "spec.parameters.env[0]: Additional properties are not allowed ('extra' was "
            "unexpected) (template runCommand.job)",
        ),
    ],
)
def test_rule_8_parameters_must_match_the_template_schema(spec: JsonObj, message: str) -> None:
    assert review(operation(**spec)) == message


def test_rule_9_a_claim_must_verify() -> None:
    good = operation(type="Restore", parameters={"backupName": "b"}, approvals={"claim": claim()})
    assert review(good) is None
    forged = operation(approvals={"claim": claim(secret="other")})
    assert review(forged) == "spec.approvals.claim: approval claim signature does not verify"
    expired = operation(approvals={"claim": claim(exp=NOW - 1)})
    assert review(expired) == "spec.approvals.claim: approval claim has expired"
    other_op = operation(approvals={"claim": claim(op="op-2")})
    assert review(other_op) == (
        "spec.approvals.claim: approval claim is for operation 'op-2', not 'op-1'"
    )
    no_secret = review_operation(good, world=world(), approval_secret="", now=NOW)
    assert no_secret == (
        "spec.approvals.claim: no approval-claim secret is configured on the operator"
    )


def test_rule_9_an_absent_claim_passes_even_when_approval_is_required() -> None:
    # The reconciler blocks it with AwaitingApproval until a claim arrives.
    assert review(operation(type="Restore", parameters={"backupName": "b"})) is None


def in_flight(name: str, type_: str, phase: str = "Running") -> JsonObj:
    op = operation(name, type=type_, engine="helm" if type_ == "Upgrade" else "velero")
    op["metadata"]["creationTimestamp"] = "2026-11-22T03:00:00Z"
    op["status"] = {"phase": phase}
    return op


def test_rule_10_conflicting_in_flight_operations_are_named() -> None:
    others = [in_flight("backup-nightly", "Backup")]
    restore = operation(type="Restore", parameters={"backupName": "b"})
    assert review(restore, world=world(operations=others)) == (
        "Backup Operation 'backup-nightly' is in flight on ApplicationInstance 'shop'; "
        "a Restore cannot start until it finishes"
    )
    done = [in_flight("backup-nightly", "Backup", phase="Succeeded")]
    assert review(restore, world=world(operations=done)) is None
    # Backups do not block each other.
    assert review(operation(), world=world(operations=others)) is None


def test_update_rule_u1_identity_is_immutable() -> None:
    old = operation()
    new = operation(type="Restore", parameters={"backupName": "b"})
    assert review(new, old) == (
        "spec.type is immutable (was 'Backup', now 'Restore'); create a new Operation"
    )
    renamed = operation(targetRef={**old["spec"]["targetRef"], "name": "other"})
    message = review(renamed, old)
    assert message is not None
    assert message.startswith("spec.targetRef.name is immutable")


def test_update_rule_u2_parameters_are_frozen_once_started() -> None:
    old = operation(parameters={"ttl": "1h"})
    old["status"] = {"phase": "Running"}
    new = operation(parameters={"ttl": "2h"})
    assert review(new, old) == (
        "spec.parameters cannot change once the Operation has started (phase Running)"
    )
    old["status"] = {"phase": "Pending"}
    assert review(new, old) is None


def test_update_checks_the_schema_only_when_parameters_change() -> None:
    # Parameters that were valid under an older schema survive unrelated spec edits.
    old = operation(parameters={"legacy": 1})
    new = operation(parameters={"legacy": 1}, approvals={"required": True})
    assert review(new, old) is None
    changed = operation(parameters={"legacy": 2})
    assert review(changed, old) is not None


def test_finalizer_writes_pass_even_when_the_target_is_gone() -> None:
    # docs/webhooks.md, "Differences from the Go webhooks": rule 6 must not make an Operation
    # undeletable.
    old = operation()
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    new["metadata"]["deletionTimestamp"] = "2026-11-22T05:00:00Z"
    assert review(new, old, world=World(target=None)) is None


def queued(name: str, type_: str, created: str, phase: str | None = None) -> JsonObj:
    op = operation(name, type=type_, engine="helm" if type_ == "Upgrade" else "velero")
    op["metadata"]["creationTimestamp"] = created
    if phase:
        op["status"] = {"phase": phase}
    return op


def test_operations_created_together_start_in_creation_order() -> None:
    from vworkspace.api.validation import conflicting_operation

    backup = queued("backup-1", "Backup", "2026-11-22T03:00:00Z")
    restore = queued("restore-1", "Restore", "2026-11-22T03:00:00Z")  # same second: name decides
    both = [backup, restore]
    # Neither has a status yet (two workers, neither sees the other's write): one starts.
    assert conflicting_operation(backup, both) is None
    assert conflicting_operation(restore, both) is backup
    # Both Blocked (Pending) for another reason: still exactly one waits for the other.
    backup["status"] = restore["status"] = {"phase": "Pending"}
    assert conflicting_operation(backup, both) is None
    assert conflicting_operation(restore, both) is backup


def test_a_started_operation_blocks_whatever_its_age() -> None:
    from vworkspace.api.validation import conflicting_operation

    older_backup = queued("backup-1", "Backup", "2026-11-22T03:00:00Z")
    running_restore = queued("restore-1", "Restore", "2026-11-22T03:00:05Z", phase="Running")
    assert conflicting_operation(older_backup, [older_backup, running_restore]) is running_restore
    done = queued("restore-1", "Restore", "2026-11-22T03:00:05Z", phase="Succeeded")
    assert conflicting_operation(older_backup, [older_backup, done]) is None


def test_admission_of_a_new_operation_waits_for_one_not_yet_started() -> None:
    waiting = [queued("backup-nightly", "Backup", "2026-11-22T03:00:00Z")]
    restore = operation(type="Restore", parameters={"backupName": "b"})
    assert review(restore, world=world(operations=waiting)) == (
        "Backup Operation 'backup-nightly' is in flight on ApplicationInstance 'shop'; "
        "a Restore cannot start until it finishes"
    )

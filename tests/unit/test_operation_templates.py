"""The template schemas accept what their engines read, and still name what they refuse."""

from __future__ import annotations

import pytest

from vworkspace.api.templates import TEMPLATES, parameter_problem

BY_REF = {template.ref: template for template in TEMPLATES}


@pytest.mark.parametrize(
    ("ref", "parameters"),
    [
        ("upgrade.helm", {"targetVersion": "1.2.3", "timeoutSeconds": 600}),
        ("backup.velero", {"storageLocation": "default", "allowPartialFailure": True}),
        ("restore.velero", {"backupName": "b1", "allowPartialFailure": False}),
        ("migration.helmHookJob", {"hookName": "pre-upgrade", "image": "busybox:1.36"}),
        ("runCommand.job", {"image": "busybox", "env": {"A": "1"}}),
        ("runCommand.job", {"image": "busybox", "env": [{"name": "A", "value": "1"}]}),
        ("runbook.workflow", {"template": "restart"}),
        ("runbook.workflow", {"workflowTemplate": "restart"}),
    ],
)
def test_parameters_the_engines_read_are_admitted(ref: str, parameters: dict[str, object]) -> None:
    assert parameter_problem(BY_REF[ref], parameters) is None


@pytest.mark.parametrize(
    ("ref", "parameters", "named"),
    [
        ("upgrade.helm", {"timeoutSeconds": 0}, "timeoutSeconds"),
        ("backup.velero", {"allowPartialFailure": "yes"}, "allowPartialFailure"),
        ("runbook.workflow", {}, "template"),
        ("runCommand.job", {"image": "busybox", "surprise": 1}, "surprise"),
    ],
)
def test_what_the_schemas_refuse_is_named(
    ref: str, parameters: dict[str, object], named: str
) -> None:
    problem = parameter_problem(BY_REF[ref], parameters)
    assert problem is not None
    assert named in problem

"""The hardening flags (app/hardening_flags.py), the local policy (agent/policy.py) and Flux
impersonation (engines/flux.py): parsing, refusals naming the flag, and the rule named in errors."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

import pytest

from vworkspace.agent.policy import Policy, PolicyError
from vworkspace.agent.trustedkeys import KeySource
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.app.cli import build_parser
from vworkspace.app.run_cmd import ignored_flags, settings_from
from vworkspace.engines.flux import desired_objects


def args_of(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_defaults_limit_nothing_and_do_not_require_signatures() -> None:
    settings = settings_from(args_of("--agent-enabled"), {})
    assert settings.agent is not None
    hardening = settings.agent.hardening
    assert hardening.require_signed_jobs is False
    assert hardening.signed_job_max_age == datetime.timedelta(hours=24)
    assert hardening.trusted_keys == KeySource("configmap", "vworkspace-job-signing-keys")
    assert not hardening.policy.restricted
    assert settings.flux_service_account == ""


def test_every_flag_reaches_the_settings() -> None:
    settings = settings_from(
        args_of(
            "--agent-enabled",
            "--agent-require-signed-jobs",
            "--agent-signed-job-max-age=90m",
            "--agent-trusted-keys=secret/keys",
            "--agent-allowed-namespaces=team-*,demo",
            "--agent-allowed-namespaces=ops",
            "--agent-allowed-catalog-ids=crm",
            "--agent-allowed-chart-sources=oci://r.example.com/charts/",
            "--agent-allowed-operation-types=Backup,Restore",
            "--agent-allowed-engines=velero",
            "--flux-service-account=installer",
        ),
        {},
    )
    assert settings.agent is not None
    hardening = settings.agent.hardening
    assert hardening.require_signed_jobs is True
    assert hardening.signed_job_max_age == datetime.timedelta(minutes=90)
    assert hardening.trusted_keys == KeySource("secret", "keys")
    assert hardening.policy == Policy(
        namespaces=("team-*", "demo", "ops"),
        catalog_ids=("crm",),
        chart_sources=("oci://r.example.com/charts/",),
        operation_types=("Backup", "Restore"),
        engines=("velero",),
    )
    assert settings.flux_service_account == "installer"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--agent-signed-job-max-age=soon"], "--agent-signed-job-max-age"),
        (["--agent-trusted-keys=deployment/x"], "--agent-trusted-keys"),
        (["--agent-trusted-keys=secret/.."], "--agent-trusted-keys"),
        (["--agent-allowed-operation-types=Backpu"], "--agent-allowed-operation-types"),
        (["--agent-allowed-engines=argo"], "--agent-allowed-engines"),
        (["--agent-allowed-chart-sources=charts.example.com"], "--agent-allowed-chart-sources"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ValueError, match=f"^{flag}: "):
        settings_from(args_of("--agent-enabled", *argv), {})


def test_agent_only_flags_without_the_agent_are_reported_as_ignored() -> None:
    # The agent runs unless turned off (as in Go): only --agent-enabled=false makes them moot.
    flags = ("--agent-require-signed-jobs", "--agent-allowed-engines=job")
    notes = ignored_flags(args_of("--agent-enabled=false", *flags))
    assert any("--agent-require-signed-jobs, --agent-allowed-engines ignored" in n for n in notes)
    assert ignored_flags(args_of(*flags)) == []


def instance(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "a", "namespace": "team-a"},
        "spec": {"appRef": {"catalogId": "crm"}, **spec},
    }


def rule_of(policy: Policy, group: str, kind: str, obj: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as err:
        policy.check_object(group, kind, obj)
    return err.value.rule


def test_policy_rules_name_the_flag() -> None:
    policy = Policy(
        namespaces=("team-*",),
        catalog_ids=("crm",),
        chart_sources=("https://charts.example.com", "oci://r.example.com/charts/"),
        operation_types=("Backup",),
        engines=("velero",),
    )
    ai = "apps.vworkspace.io", "ApplicationInstance"
    ok_chart = {"chart": {"url": "https://charts.example.com/stable"}}
    policy.check_object(*ai, instance(**ok_chart))
    policy.check_object(*ai, instance(chart={"url": "oci://r.example.com/charts/crm"}))
    policy.check_object(*ai, instance(chart={"url": "https://charts.example.com"}))
    evil = instance(chart={"url": "https://charts.example.com.evil.io/x"})
    assert rule_of(policy, *ai, evil) == "chart_sources"
    assert rule_of(policy, *ai, instance(chart={"url": 7})) == "chart_sources"
    assert rule_of(policy, *ai, instance(appRef={"catalogId": "miner"})) == "catalog_ids"
    assert rule_of(policy, *ai, instance(release={"namespace": "kube-system"})) == "namespaces"
    other_ns = {**instance(), "metadata": {"name": "a", "namespace": "default"}}
    assert rule_of(policy, *ai, other_ns) == "namespaces"
    assert rule_of(policy, "", "Namespace", {"metadata": {"name": "kube-public"}}) == "namespaces"
    op = "ops.vworkspace.io", "Operation"
    meta = {"name": "o", "namespace": "team-b"}
    policy.check_object(*op, {"metadata": meta, "spec": {"type": "Backup", "engine": "velero"}})
    restore = {"metadata": meta, "spec": {"type": "Restore", "engine": "velero"}}
    assert rule_of(policy, *op, restore) == "operation_types"
    job = {"metadata": meta, "spec": {"type": "Backup", "engine": "job"}}
    with pytest.raises(
        PolicyError,
        match=r'^policy: engine "job" is not allowed by --agent-allowed-engines \(velero\)$',
    ):
        policy.check_object(*op, job)


def test_flux_impersonation_sets_the_service_account_only_when_configured() -> None:
    ai = {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "crm", "namespace": "team-a", "uid": "u1"},
        "spec": {
            "chart": {
                "sourceType": "helm",
                "url": "https://c.example.com",
                "name": "crm",
                "version": "1.0.0",
            },
            "release": {"name": "crm", "namespace": "team-a"},
            "values": {"source": "inline", "inline": {}},
        },
    }
    _, (_, plain) = desired_objects(ApplicationInstanceView(ai))
    assert "serviceAccountName" not in plain["spec"]
    _, (_, bounded) = desired_objects(ApplicationInstanceView(ai), service_account="installer")
    assert bounded["spec"]["serviceAccountName"] == "installer"

"""The worked example of docs/pull-mode.md, "Encrypted payloads", byte for byte: the job shown
there, decrypted with the key shown there through the agent's applier, yields exactly the
Secret ``values.yaml`` and the instance ``spec`` the document shows."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from vworkspace.agent.applier import Applier
from vworkspace.agent.sealed import ClusterKey, Unsealer
from vworkspace.agent.wire import Job, Outcome
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, SECRETS
from vworkspace.testing.fakeapi import FakeApi

DOC = Path(__file__).resolve().parents[2] / "docs" / "pull-mode.md"
DISCOVERY = {
    "/api/v1": [{"name": "namespaces", "kind": "Namespace", "namespaced": False}],
    "/apis/apps.vworkspace.io/v1alpha1": [
        {"name": "applicationinstances", "kind": "ApplicationInstance", "namespaced": True}
    ],
}


def example_blocks() -> list[str]:
    """The fenced blocks of the section's worked example, in order, exactly as written."""
    text = DOC.read_text()
    section = text.split("### Encrypted payloads", 1)[1].split("\n### ", 1)[0]
    example = section.split("**Worked example.**", 1)[1]
    return re.findall(r"^```[a-z]*\n(.*?)^```$", example, flags=re.MULTILINE | re.DOTALL)


def instance_spec(spec: object) -> str:
    """How the document prints the applied spec."""
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


async def apply_example() -> tuple[str, str, Job]:
    identity, recipient, job_json, _, _ = example_blocks()
    key = ClusterKey.parse(identity)
    assert key.recipient == recipient.strip()
    api = FakeApi()
    for path, resources in DISCOVERY.items():
        api.respond("GET", path, lambda _, resources=resources: {"resources": resources})
    api.add(NAMESPACES, {"metadata": {"name": "team-a"}})
    job = Job.from_wire(json.loads(job_json))
    result = await Applier(
        api,
        cluster_id=lambda: "cluster-dev-1",
        clock=FakeClock(),
        unsealer=Unsealer(key=lambda: key, source="vworkspace-system/vworkspace-agent-encryption"),
    ).process(job)
    assert result.outcome == Outcome.SUCCEEDED, result.error
    secret = api.stored(SECRETS, ObjectKey("team-a", "wiki-vws-values"))
    instance = api.stored(APPLICATION_INSTANCES, ObjectKey("team-a", "wiki"))
    assert secret is not None
    assert instance is not None
    values = base64.b64decode(secret["data"]["values.yaml"]).decode("utf-8")
    return values, instance_spec(instance["spec"]), job


async def test_the_documented_job_yields_the_documented_secret_and_spec() -> None:
    values, spec, _ = await apply_example()
    _, _, _, documented_values, documented_spec = example_blocks()
    assert values == documented_values
    assert spec == documented_spec


async def test_the_documented_ciphertext_holds_the_password_and_the_spec_does_not() -> None:
    values, spec, job = await apply_example()
    assert "password: correct horse battery staple\n" in values
    assert "correct horse battery staple" not in spec
    assert "correct horse battery staple" not in json.dumps(job.wire)

"""The mock control plane encrypts jobs to the cluster's age recipient before it signs
(docs/pull-mode.md, "Encrypted payloads" and "The mock control plane"); the agent's unsealer
reads what the mock wrote, and the agent's verifier checks the signature over the ciphertext."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vworkspace.agent import signing
from vworkspace.agent.sealed import ClusterKey, Unsealer, is_sealed
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.mockcontrolplane.server import MEDIA_TYPE
from vworkspace.mockcontrolplane.signer import Signer

CLUSTER = "cluster-1"
TOKEN = "token-1"
KEY = ClusterKey.generate()
SECRET = "hunter2-but-longer"


def instance_job(job_id: str = "j-1") -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": "intent",
        "payload": {
            "intent": "ensure-application-instance",
            "applicationInstance": {
                "metadata": {"name": "shop", "namespace": "team-a"},
                "spec": {
                    "values": {
                        "source": "inline",
                        "inline": {"db": {"password": SECRET, "port": 5432}, "tags": ["a"]},
                    }
                },
            },
        },
    }


def unsealer() -> Unsealer:
    return Unsealer(key=lambda: KEY, source="ns/vworkspace-agent-encryption")


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    signer = Signer(key=Ed25519PrivateKey.generate(), key_id="k1")
    async with MockControlPlane(signer=signer) as server:
        server.set_bootstrap_token(CLUSTER, TOKEN)
        yield server


async def fetch(mock: MockControlPlane) -> dict[str, Any]:
    headers = {"Accept": MEDIA_TYPE, "Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{mock.url}/api/agent/jobs?cluster={CLUSTER}&wait=0", headers=headers) as resp,
    ):
        body = await resp.json(content_type=None)
    [job] = body["jobs"]
    result: dict[str, Any] = job
    return result


async def test_payload_mode_encrypts_then_signs_with_the_registered_key(
    mock: MockControlPlane,
) -> None:
    # The key arrives in a heartbeat, as the agent sends it.
    mock.state.add_events(
        CLUSTER, [{"kind": "ClusterHeartbeat", "encryptionPublicKey": KEY.recipient}]
    )
    await AdminClient(mock.url).enqueue(CLUSTER, instance_job(), encrypt="payload")
    job = await fetch(mock)
    assert job["payload"] is None
    assert is_sealed(job["encryptedPayload"])
    assert SECRET not in json.dumps(job)
    assert unsealer().payload(job["encryptedPayload"]) == instance_job()["payload"]
    assert mock.state.signer is not None
    public = mock.state.signer.key.public_key()
    assert signing.verify(job, cluster_id=CLUSTER, keys={"k1": public}) == "k1"


async def test_values_mode_encrypts_each_string_leaf_of_the_inline_values(
    mock: MockControlPlane,
) -> None:
    await mock.enqueue(CLUSTER, instance_job(), encrypt="values", recipient=KEY.recipient)
    job = await fetch(mock)
    inline = job["payload"]["applicationInstance"]["spec"]["values"]["inline"]
    assert is_sealed(inline["db"]["password"])
    assert is_sealed(inline["tags"][0])
    assert inline["db"]["port"] == 5432
    assert SECRET not in json.dumps(job)
    plain, paths = unsealer().values(inline, path="inline")
    assert plain == {"db": {"password": SECRET, "port": 5432}, "tags": ["a"]}
    assert sorted(paths) == ["inline.db.password", "inline.tags[0]"]


async def test_register_records_the_key_and_encrypt_to_registered_uses_it() -> None:
    async with MockControlPlane(encrypt_to="registered") as server:
        headers = {"Accept": MEDIA_TYPE, "Authorization": "Bearer reg", "Content-Type": MEDIA_TYPE}
        body = {
            "registrationToken": "reg",
            "clusterId": CLUSTER,
            "encryptionPublicKey": KEY.recipient,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}/api/agent/register", json=body, headers=headers) as resp,
        ):
            assert resp.status == 200
        assert server.state.encryption_keys[CLUSTER] == KEY.recipient
        await server.enqueue(CLUSTER, instance_job())
        [job] = server.state.take(CLUSTER)
        assert (
            unsealer().payload(job["encryptedPayload"])["intent"] == "ensure-application-instance"
        )


async def test_encryption_without_a_recipient_is_a_400_naming_the_cause(
    mock: MockControlPlane,
) -> None:
    admin = AdminClient(mock.url)
    with pytest.raises(RuntimeError, match="has sent no encryptionPublicKey"):
        await admin.enqueue(CLUSTER, instance_job(), encrypt="payload")
    with pytest.raises(RuntimeError, match="not an age X25519 recipient"):
        await admin.enqueue(CLUSTER, instance_job(), encrypt="payload", recipient="age1nope")
    with pytest.raises(RuntimeError, match="encrypt must be one of"):
        await admin.enqueue(CLUSTER, instance_job(), encrypt="sealed")
    assert mock.pending_count(CLUSTER) == 0


def test_the_command_refuses_a_bad_encrypt_to() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vworkspace", "mock-control-plane", "--encrypt-to", "age1bad"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--encrypt-to: 'age1bad' is not an age X25519 recipient" in done.stdout

"""Encrypted payloads and values (agent/sealed.py, agent/valuessecret.py, the applier's path;
docs/pull-mode.md, "Encrypted payloads"): round trips with real age keys, the refusals, and that
no plaintext reaches the instance spec or an error message."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.agent import signing
from vworkspace.agent.applier import Applier
from vworkspace.agent.encryptionkeys import EncryptionKeys, key_of, secret_body
from vworkspace.agent.sealed import (
    MALFORMED,
    NO_KEY,
    WRONG_KEY,
    ClusterKey,
    SealedError,
    Unsealer,
    encrypt,
    has_sealed,
    is_sealed,
)
from vworkspace.agent.valuessecret import MANAGED_BY, render
from vworkspace.agent.wire import Job, JobDecodeError, JobResult, Outcome
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, SECRETS
from vworkspace.testing.fakeapi import FakeApi

PLAINTEXT = "s3cr3t-Pa55w0rd-7f1e"
KEY = ClusterKey.generate()
OTHER = ClusterKey.generate()
DISCOVERY = {
    "/api/v1": [
        {"name": "namespaces", "kind": "Namespace", "namespaced": False},
        {"name": "secrets", "kind": "Secret", "namespaced": True},
    ],
    "/apis/apps.vworkspace.io/v1alpha1": [
        {"name": "applicationinstances", "kind": "ApplicationInstance", "namespaced": True}
    ],
}


def unsealer(key: ClusterKey | None = KEY) -> Unsealer:
    return Unsealer(key=lambda: key, source="vworkspace-system/vworkspace-agent-encryption")


def instance(values: Any) -> JsonObj:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "shop", "namespace": "team-a"},
        "spec": {
            "appRef": {"catalogId": "odoo"},
            "values": {"source": "inline", "inline": values},
        },
    }


def fake_kube() -> FakeApi:
    api = FakeApi()
    for path, resources in DISCOVERY.items():
        api.respond("GET", path, lambda _, resources=resources: {"resources": resources})
    api.add(NAMESPACES, {"metadata": {"name": "team-a"}})
    return api


async def run(job: Job, *, key: ClusterKey | None = KEY) -> tuple[JobResult, FakeApi, list[str]]:
    kube = fake_kube()
    rejected: list[str] = []
    result = await Applier(
        kube,
        cluster_id=lambda: "c-1",
        clock=FakeClock(),
        unsealer=unsealer(key),
        on_rejected=rejected.append,
    ).process(job)
    return result, kube, rejected


def values_secret(kube: FakeApi) -> JsonObj | None:
    return kube.stored(SECRETS, ObjectKey("team-a", "shop-vws-values"))


def secret_document(secret: JsonObj) -> str:
    return base64.b64decode(secret["data"]["values.yaml"]).decode()


# -- the format ------------------------------------------------------------------------------


def test_a_value_round_trips_and_is_detected_as_sealed() -> None:
    armored = encrypt(PLAINTEXT.encode(), KEY.recipient)
    assert armored.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    assert is_sealed(armored)
    assert is_sealed("\n  " + armored)
    assert not is_sealed(PLAINTEXT)
    assert not is_sealed(42)
    tree, paths = unsealer().values({"db": {"password": armored}}, path="spec.values.inline")
    assert tree == {"db": {"password": PLAINTEXT}}
    assert paths == ["spec.values.inline.db.password"]


def test_nested_leaves_in_lists_are_decrypted_and_the_rest_is_untouched() -> None:
    sealed = encrypt(b"one", KEY.recipient)
    tree = {"a": [{"b": sealed}, "clear", 3], "c": {"d": None, "e": sealed}}
    assert has_sealed(tree)
    assert not has_sealed({"a": ["x", {"b": 1}]})
    plain, paths = unsealer().values(tree, path="v")
    assert plain == {"a": [{"b": "one"}, "clear", 3], "c": {"d": None, "e": "one"}}
    assert sorted(paths) == ["v.a[0].b", "v.c.e"]


def test_a_value_for_another_key_names_the_field_and_this_clusters_recipient() -> None:
    armored = encrypt(PLAINTEXT.encode(), OTHER.recipient)
    with pytest.raises(SealedError) as caught:
        unsealer().values({"db": {"password": armored}}, path="spec.values.inline")
    assert caught.value.reason == WRONG_KEY
    assert str(caught.value) == (
        "encryption: spec.values.inline.db.password is encrypted to another key (this "
        f"cluster's recipient is {KEY.recipient}); encrypt it to that recipient"
    )


@pytest.mark.parametrize(
    "garbage",
    [
        "-----BEGIN AGE ENCRYPTED FILE-----\nbm90IGFnZQ==\n-----END AGE ENCRYPTED FILE-----",
        "-----BEGIN AGE ENCRYPTED FILE-----\n",
    ],
)
def test_garbage_is_malformed(garbage: str) -> None:
    with pytest.raises(SealedError) as caught:
        unsealer().values({"x": garbage}, path="spec.values.inline")
    assert caught.value.reason == MALFORMED
    assert str(caught.value).startswith("encryption: spec.values.inline.x is not a valid age file")


def test_without_a_key_the_error_names_the_secret() -> None:
    with pytest.raises(SealedError) as caught:
        unsealer(None).payload(encrypt(b"{}", KEY.recipient))
    assert caught.value.reason == NO_KEY
    assert "Secret vworkspace-system/vworkspace-agent-encryption" in str(caught.value)


def test_a_payload_that_is_not_json_does_not_show_its_plaintext() -> None:
    armored = encrypt(f'{{"password": {PLAINTEXT}}}'.encode(), KEY.recipient)
    with pytest.raises(SealedError) as caught:
        unsealer().payload(armored)
    assert caught.value.reason == MALFORMED
    assert PLAINTEXT not in str(caught.value)
    assert PLAINTEXT not in repr(caught.value)


def test_a_payload_field_that_is_not_armored_is_malformed() -> None:
    with pytest.raises(SealedError, match="encryptedPayload is not an armored age file"):
        unsealer().payload({"kind": "not encrypted"})


def test_keys_parse_as_age_keygen_writes_them_and_never_show_in_repr() -> None:
    text = f"# created: 2026-12-07\n# public key: {KEY.recipient}\n{KEY.secret_text()}\n"
    parsed = ClusterKey.parse(text)
    assert parsed.recipient == KEY.recipient
    assert KEY.secret_text() not in repr(parsed)
    with pytest.raises(ValueError, match="not an age X25519 identity") as caught:
        ClusterKey.parse("AGE-SECRET-KEY-1NOTAKEY")
    assert "NOTAKEY" not in str(caught.value)
    with pytest.raises(ValueError, match="age1"):
        encrypt(b"x", "age1nope")


def test_a_rotated_key_keeps_the_previous_one_for_decryption_only() -> None:
    new = ClusterKey.generate()
    both = ClusterKey.parse(f"{new.secret_text()}\n# previous\n{KEY.secret_text()}\n")
    assert both.recipient == new.recipient
    old_value = encrypt(b"old", KEY.recipient)
    new_value = encrypt(b"new", new.recipient)
    tree, _ = Unsealer(key=lambda: both, source="s").values([old_value, new_value], path="v")
    assert tree == ["old", "new"]
    with pytest.raises(ValueError, match="key line 2 is not"):
        ClusterKey.parse(f"{new.secret_text()}\nAGE-SECRET-KEY-1BAD\n")


def test_the_secret_holds_the_key_and_a_bad_one_counts_as_none() -> None:
    body = secret_body(KEY, namespace="ns")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in body["stringData"].items()}
    key, problem = key_of({"data": data})
    assert key is not None
    assert key.recipient == KEY.recipient
    assert not problem
    assert key_of({"data": {"age.key": base64.b64encode(b"junk").decode()}})[0] is None
    assert key_of({"data": {}}) == (None, "no age.key key")
    assert key_of(None) == (None, "")


async def test_ensure_generates_once_and_keeps_an_existing_key() -> None:
    kube = FakeApi()
    keys = EncryptionKeys(kube, namespace="vworkspace-system")
    first = await keys.ensure()
    assert first is not None
    assert keys.public_key() == first.recipient
    assert first.recipient.startswith("age1")
    again = await EncryptionKeys(kube, namespace="vworkspace-system").ensure()
    assert again is not None
    assert again.recipient == first.recipient
    assert len([w for w in kube.writes if w.method == "POST"]) == 1


async def test_ensure_never_overwrites_a_secret_without_a_usable_key() -> None:
    kube = FakeApi()
    kube.add(
        SECRETS,
        {"metadata": {"name": "vworkspace-agent-encryption", "namespace": "ns"}, "data": {}},
    )
    keys = EncryptionKeys(kube, namespace="ns")
    assert await keys.ensure() is None
    assert keys.public_key() == ""
    assert not [w for w in kube.writes if w.method in ("POST", "PATCH", "PUT")]


# -- the wire and the signature ----------------------------------------------------------------


def test_a_job_may_carry_an_encrypted_payload_instead_of_a_payload() -> None:
    job = Job.from_wire({"id": "j", "kind": "apply", "encryptedPayload": "x"})
    assert job.encrypted
    assert job.payload is None
    with pytest.raises(JobDecodeError, match="no payload"):
        Job.from_wire({"id": "j", "kind": "apply", "encryptedPayload": ""})


def test_the_ciphertext_is_signed_and_verifies_without_the_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    job: JsonObj = {"id": "j", "kind": "apply", "payload": None, "encryptedPayload": "ct"}
    assert signing.envelope(job, cluster_id="c")["encryptedPayload"] == "ct"
    job["signature"] = signing.sign(job, cluster_id="c", key=private, key_id="k")
    signing.verify(job, cluster_id="c", keys={"k": private.public_key()})
    job["encryptedPayload"] = "ct2"
    with pytest.raises(signing.SignatureError):
        signing.verify(job, cluster_id="c", keys={"k": private.public_key()})


# -- through the applier -----------------------------------------------------------------------


async def test_a_sealed_value_goes_into_a_secret_and_the_instance_references_it() -> None:
    sealed = encrypt(PLAINTEXT.encode(), KEY.recipient)
    job = Job(id="j", kind="apply", payload=instance({"db": {"password": sealed, "user": "odoo"}}))
    result, kube, rejected = await run(job)
    assert result.outcome == Outcome.SUCCEEDED, result.error
    secret = values_secret(kube)
    assert secret is not None
    assert yaml.safe_load(secret_document(secret)) == {
        "db": {"password": PLAINTEXT, "user": "odoo"}
    }
    assert secret["metadata"]["labels"]["app.vworkspace.io/managed-by"] == MANAGED_BY
    stored = kube.stored(APPLICATION_INSTANCES, ObjectKey("team-a", "shop"))
    assert stored is not None
    assert stored["spec"]["values"] == {
        "source": "secretRef",
        "secretRef": {"name": "shop-vws-values", "key": "values.yaml"},
    }
    [owner] = secret["metadata"]["ownerReferences"]
    assert owner["uid"] == stored["metadata"]["uid"]
    assert owner["kind"] == "ApplicationInstance"
    # Neither the instance nor any request other than the Secret's carries the plaintext.
    for write in kube.writes:
        if write.resource == "secrets":
            continue
        assert PLAINTEXT not in json.dumps(write.body), write.resource
    assert not rejected


async def test_a_wholly_encrypted_intent_applies_its_inline_values_through_a_secret() -> None:
    ai = instance({"admin": {"password": PLAINTEXT}})
    payload = {"intent": "ensure-application-instance", "applicationInstance": ai}
    armored = encrypt(json.dumps(payload).encode(), KEY.recipient)
    job = Job.from_wire({"id": "j", "kind": "intent", "encryptedPayload": armored})
    result, kube, _ = await run(job)
    assert result.outcome == Outcome.SUCCEEDED, result.error
    secret = values_secret(kube)
    assert secret is not None
    assert secret_document(secret) == render({"admin": {"password": PLAINTEXT}})
    stored = kube.stored(APPLICATION_INSTANCES, ObjectKey("team-a", "shop"))
    assert stored is not None
    assert PLAINTEXT not in json.dumps(stored)


async def test_a_clear_instance_is_applied_as_before_without_a_secret() -> None:
    result, kube, _ = await run(Job(id="j", kind="apply", payload=instance({"replicas": 2})))
    assert result.outcome == Outcome.SUCCEEDED
    assert values_secret(kube) is None
    stored = kube.stored(APPLICATION_INSTANCES, ObjectKey("team-a", "shop"))
    assert stored is not None
    assert stored["spec"]["values"]["inline"] == {"replicas": 2}


@pytest.mark.parametrize("wrong", ["value", "payload", "no-key"])
async def test_a_job_this_cluster_cannot_decrypt_applies_nothing(wrong: str) -> None:
    # A namespace that does not exist yet: not even it may be created.
    ai = instance({"db": {"password": encrypt(PLAINTEXT.encode(), OTHER.recipient)}})
    ai["metadata"]["namespace"] = "team-new"
    if wrong == "payload":
        armored = encrypt(json.dumps(instance({"x": 1})).encode(), OTHER.recipient)
        job = Job.from_wire({"id": "j", "kind": "apply", "encryptedPayload": armored})
    else:
        job = Job(id="j", kind="apply", payload=ai)
    result, kube, rejected = await run(job, key=None if wrong == "no-key" else KEY)
    assert result.outcome == Outcome.FAILED
    assert result.error.startswith("encryption: ")
    assert rejected == [NO_KEY if wrong == "no-key" else WRONG_KEY]
    assert not [w for w in kube.writes if w.method != "GET"]


async def test_a_secret_of_that_name_not_managed_by_the_agent_is_a_conflict() -> None:
    kube = fake_kube()
    kube.add(
        SECRETS,
        {"metadata": {"name": "shop-vws-values", "namespace": "team-a"}, "data": {"x": "eA=="}},
    )
    sealed = encrypt(PLAINTEXT.encode(), KEY.recipient)
    result = await Applier(
        kube, cluster_id=lambda: "c", clock=FakeClock(), unsealer=unsealer()
    ).process(Job(id="j", kind="apply", payload=instance({"p": sealed})))
    assert result.outcome == Outcome.CONFLICT
    assert 'Secret "team-a/shop-vws-values" exists and is not managed by the agent' in result.error
    assert values_secret(kube) == kube.stored(SECRETS, ObjectKey("team-a", "shop-vws-values"))
    assert (values_secret(kube) or {})["data"] == {"x": "eA=="}
    assert kube.stored(APPLICATION_INSTANCES, ObjectKey("team-a", "shop")) is None


async def test_the_secret_is_deleted_again_when_the_instance_cannot_be_applied() -> None:
    kube = fake_kube()
    kube.fail_next("PATCH", "/apis/apps.vworkspace.io", status=422)
    sealed = encrypt(PLAINTEXT.encode(), KEY.recipient)
    result = await Applier(
        kube, cluster_id=lambda: "c", clock=FakeClock(), unsealer=unsealer()
    ).process(Job(id="j", kind="apply", payload=instance({"p": sealed})))
    assert result.outcome == Outcome.FAILED
    assert PLAINTEXT not in result.error
    assert values_secret(kube) is None
    assert [w.method for w in kube.writes if w.resource == "secrets"][-1] == "DELETE"


async def test_payload_and_encrypted_payload_together_fail() -> None:
    job = Job.from_wire({"id": "j", "kind": "apply", "payload": {"a": 1}, "encryptedPayload": "ct"})
    result, _, _ = await run(job)
    assert result.outcome == Outcome.FAILED
    assert "both payload and encryptedPayload" in result.error


# -- keys generate --encryption ----------------------------------------------------------------


def test_keys_generate_encryption_writes_a_usable_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vworkspace.app.cli import main

    out = tmp_path / "k"
    assert main(["keys", "generate", "--encryption", "--out", str(out)]) == 0
    private, public = out / "age.key", out / "age.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = ClusterKey.parse(private.read_text())
    assert public.read_text().strip() == key.recipient
    printed = capsys.readouterr().out
    assert f"recipient: {key.recipient}" in printed
    assert "create secret generic vworkspace-agent-encryption --from-file=age.key=" in printed
    assert key.secret_text() not in printed
    # What the agent reads from that Secret is the same key.
    data = {"age.key": base64.b64encode(private.read_bytes()).decode()}
    parsed, _ = key_of({"data": data})
    assert parsed is not None
    assert parsed.recipient == key.recipient
    # Never overwritten silently; --key-id belongs to signing keys.
    assert main(["keys", "generate", "--encryption", "--out", str(out)]) == 1
    assert main(["keys", "generate", "--encryption", "--out", str(out), "--key-id", "k"]) == 2
    assert ClusterKey.parse(private.read_text()).recipient == key.recipient


async def test_registration_goes_on_without_a_key_when_the_secret_cannot_be_written() -> None:
    from vworkspace.agent.gateway import AgentGateway

    kube = FakeApi()
    kube.fail_next("POST", "/api/v1/namespaces/ns/secrets", status=403)
    keys = EncryptionKeys(kube, namespace="ns")
    gateway = AgentGateway(
        store=None,  # type: ignore[arg-type]  # not used to pick the key
        client=None,  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        batcher=None,  # type: ignore[arg-type]
        clock=FakeClock(),
        keys=keys,
    )
    assert await gateway._encryption_key() == ""
    # Once the Secret can be written, the next registration sends the new key.
    recipient = await gateway._encryption_key()
    assert recipient.startswith("age1")
    assert recipient == keys.public_key()


def test_wholly_encrypted_jobs_keep_their_order_in_one_chain() -> None:
    from vworkspace.agent.poller import target_of

    first = Job.from_wire({"id": "a", "kind": "apply", "encryptedPayload": "x"})
    second = Job.from_wire({"id": "b", "kind": "intent", "encryptedPayload": "y"})
    assert target_of(first) == target_of(second) == "encrypted-payload"

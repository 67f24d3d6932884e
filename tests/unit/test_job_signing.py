"""Signed jobs (docs/pull-mode.md, "Signed jobs"): fixed vectors, canonicalisation, the verifier's
decisions, trusted-key parsing, and a property: any single-byte change to a signed envelope fails.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from vworkspace.agent import signing
from vworkspace.agent.signing import SignatureError
from vworkspace.agent.trustedkeys import KeySource, parse_keys
from vworkspace.agent.verifier import JobVerifier
from vworkspace.agent.wire import Job
from vworkspace.mockcontrolplane.signer import Signer

DOC = Path(__file__).resolve().parents[2] / "docs" / "pull-mode.md"

# The worked example of docs/pull-mode.md, byte for byte.
EXAMPLE_SEED = bytes(range(32))  # private key 000102...1f
EXAMPLE_PRIVATE_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
    "-----END PRIVATE KEY-----\n"
)
EXAMPLE_PUBLIC_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n"
    "-----END PUBLIC KEY-----\n"
)
EXAMPLE_CLUSTER = "cluster-dev-1"
EXAMPLE_KEY_ID = "example-1"
EXAMPLE_JOB_JSON = """{
  "id": "job-0042",
  "kind": "apply",
  "idempotencyKey": "applicationinstance/team-a/wiki@3",
  "createdAt": "2026-05-01T12:00:00Z",
  "expiresAt": "2026-05-01T13:00:00Z",
  "payload": {
    "apiVersion": "apps.vworkspace.io/v1alpha1",
    "kind": "ApplicationInstance",
    "metadata": {"name": "wiki", "namespace": "team-a"},
    "spec": {
      "mode": "placeholder",
      "appRef": {"catalogId": "wiki"},
      "release": {"namespace": "team-a", "name": "wiki"},
      "values": {
        "source": "inline",
        "inline": {"title": "Caf\\u00e9 \\u2615", "replicas": 2, "ratio": 0.5, "big": 1e21}
      }
    }
  }
}"""
EXAMPLE_CANONICAL = (
    '{"clusterId":"cluster-dev-1","createdAt":"2026-05-01T12:00:00Z",'
    '"expiresAt":"2026-05-01T13:00:00Z","id":"job-0042",'
    '"idempotencyKey":"applicationinstance/team-a/wiki@3","kind":"apply",'
    '"payload":{"apiVersion":"apps.vworkspace.io/v1alpha1","kind":"ApplicationInstance",'
    '"metadata":{"name":"wiki","namespace":"team-a"},"spec":{"appRef":{"catalogId":"wiki"},'
    '"mode":"placeholder","release":{"name":"wiki","namespace":"team-a"},'
    '"values":{"inline":{"big":1e+21,"ratio":0.5,"replicas":2,"title":"Café ☕"},'
    '"source":"inline"}}},"v":1}'
)
EXAMPLE_SHA256 = "0ca4441d82e53d3bc6e6f15be9364ed1ed7db9375cff39f516775ea3bcc744a9"
EXAMPLE_SIGNATURE = (
    "v1.example-1.SlMCYS7H5UlIYhTWZgwF26bH6HeTdvxvfCeReRDmjmwWplf8oKnn8DCO5Cpk7cvMmQ-IXtoYre_NN4UI"
    "-MPeAA"
)

NOW = datetime.datetime(2026, 5, 1, 12, 30, tzinfo=datetime.UTC)


class FixedClock:
    def __init__(self, now: datetime.datetime = NOW) -> None:
        self._now = now

    def now(self) -> datetime.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("not used")


def example_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED)


def example_job() -> dict[str, Any]:
    job: dict[str, Any] = json.loads(EXAMPLE_JOB_JSON)
    return job


def signed_example() -> dict[str, Any]:
    return {**example_job(), "signature": EXAMPLE_SIGNATURE}


def trusted() -> dict[str, Any]:
    return {EXAMPLE_KEY_ID: example_key().public_key()}


# -- the worked example ----------------------------------------------------------------------


def test_the_worked_example_keys_are_the_documented_pems() -> None:
    key = example_key()
    assert signing.private_pem(key).decode() == EXAMPLE_PRIVATE_PEM
    assert signing.public_pem(key.public_key()) == EXAMPLE_PUBLIC_PEM
    assert signing.load_private_key(EXAMPLE_PRIVATE_PEM.encode()).public_key() == key.public_key()


def test_the_worked_example_canonical_bytes_and_signature() -> None:
    canonical = signing.canonical(signing.envelope(example_job(), cluster_id=EXAMPLE_CLUSTER))
    assert canonical == EXAMPLE_CANONICAL.encode("utf-8")
    import hashlib

    assert hashlib.sha256(canonical).hexdigest() == EXAMPLE_SHA256
    signature = signing.sign(
        example_job(), cluster_id=EXAMPLE_CLUSTER, key=example_key(), key_id=EXAMPLE_KEY_ID
    )
    assert signature == EXAMPLE_SIGNATURE  # Ed25519 is deterministic
    assert (
        signing.verify(signed_example(), cluster_id=EXAMPLE_CLUSTER, keys=trusted()) == "example-1"
    )


def test_the_documentation_shows_exactly_this_example() -> None:
    doc = DOC.read_text()
    for text in (
        EXAMPLE_PRIVATE_PEM,
        EXAMPLE_PUBLIC_PEM,
        EXAMPLE_CANONICAL,
        EXAMPLE_SHA256,
        EXAMPLE_SIGNATURE,
        EXAMPLE_JOB_JSON.splitlines()[-6],  # the payload values line, escapes included
    ):
        assert text.strip() in doc, f"docs/pull-mode.md lacks {text.strip()[:60]!r}"


def test_the_mock_signs_exactly_like_the_documented_format() -> None:
    signer = Signer(key=example_key(), key_id=EXAMPLE_KEY_ID)
    assert signer.signature(example_job(), EXAMPLE_CLUSTER) == EXAMPLE_SIGNATURE


# -- canonicalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ({"b": 1, "a": 2, "A": 3, "aa": 4}, '{"A":3,"a":2,"aa":4,"b":1}'),  # UTF-16 code unit order
        ({"\u20ac": 1, "\r": 2, "\U0001f600": 3, "\u00e9": 4}, '{"\\r":2,"é":4,"€":1,"😀":3}'),
        ({"s": 'é\u2028\x1f"\\/'}, '{"s":"é\u2028\\u001f\\"\\\\/"}'),
        (
            [1.0, -0.0, 0.1, 1e21, 1e-7, 123456789012345680000.0],
            "[1,0,0.1,1e+21,1e-7,123456789012345680000]",
        ),
        ([True, False, None, 2**53 - 1], "[true,false,null,9007199254740991]"),
        ({"nested": {"z": [], "y": {}}}, '{"nested":{"y":{},"z":[]}}'),
    ],
)
def test_canonicalisation(value: Any, canonical: str) -> None:
    assert signing.canonical(value) == canonical.encode("utf-8")


def test_values_json_numbers_cannot_carry_are_refused_as_malformed() -> None:
    job = {**example_job(), "payload": {"n": 2**53}}
    with pytest.raises(SignatureError) as err:
        signing.sign(job, cluster_id="c", key=example_key(), key_id="k1")
    assert err.value.reason == signing.MALFORMED


def test_absent_and_null_fields_are_omitted_from_the_envelope() -> None:
    env = signing.envelope(
        {"id": "1", "kind": "apply", "payload": {}, "expiresAt": None}, cluster_id="c"
    )
    assert env == {"v": 1, "clusterId": "c", "id": "1", "kind": "apply", "payload": {}}


# -- verification ----------------------------------------------------------------------------


def verifier(*, require: bool = True, max_age: float = 24 * 3600, keys: Any = None) -> JobVerifier:
    found = trusted() if keys is None else keys
    return JobVerifier(
        keys=lambda: found,
        clock=FixedClock(),
        require=require,
        max_age=datetime.timedelta(seconds=max_age),
    )


def reason_of(raw: dict[str, Any], **kwargs: Any) -> str:
    cluster = kwargs.pop("cluster_id", EXAMPLE_CLUSTER)
    with pytest.raises(SignatureError) as err:
        verifier(**kwargs).check(Job.from_wire(raw), cluster_id=cluster)
    assert str(err.value).startswith("signature: ")
    return err.value.reason


def test_a_correctly_signed_job_passes() -> None:
    verifier().check(Job.from_wire(signed_example()), cluster_id=EXAMPLE_CLUSTER)


def test_each_change_is_named() -> None:
    tampered = signed_example()
    tampered["payload"]["metadata"]["namespace"] = "kube-system"
    assert reason_of(tampered) == signing.BAD_SIGNATURE
    assert reason_of({**signed_example(), "kind": "delete"}) == signing.BAD_SIGNATURE
    assert reason_of({**signed_example(), "id": "job-0043"}) == signing.BAD_SIGNATURE
    assert reason_of(signed_example(), cluster_id="cluster-other") == signing.BAD_SIGNATURE
    moved = {**signed_example(), "expiresAt": "2026-05-01T14:00:00Z"}
    assert reason_of(moved) == signing.BAD_SIGNATURE
    assert reason_of(example_job()) == signing.UNSIGNED
    assert reason_of({**example_job(), "signature": "v1.k2.AAAA"}) == signing.MALFORMED
    assert reason_of({**example_job(), "signature": 42}) == signing.MALFORMED


def test_unknown_key_id_is_named_in_the_error() -> None:
    raw = {**example_job(), "signature": EXAMPLE_SIGNATURE.replace("example-1", "k2")}
    with pytest.raises(SignatureError, match=r'^signature: unknown key id "k2"$'):
        verifier().check(Job.from_wire(raw), cluster_id=EXAMPLE_CLUSTER)


def sign_with(job: dict[str, Any]) -> dict[str, Any]:
    signature = signing.sign(job, cluster_id=EXAMPLE_CLUSTER, key=example_key(), key_id="example-1")
    return {**job, "signature": signature}


def test_expiry_rules_when_signatures_are_required() -> None:
    no_expiry = sign_with({k: v for k, v in example_job().items() if k != "expiresAt"})
    assert reason_of(no_expiry) == signing.NO_EXPIRY
    zero = sign_with({**example_job(), "expiresAt": "0001-01-01T00:00:00Z"})  # Go's zero time
    assert reason_of(zero) == signing.NO_EXPIRY
    far = sign_with({**example_job(), "expiresAt": "2026-05-03T12:30:01Z"})
    assert reason_of(far) == signing.EXPIRY_TOO_FAR
    assert reason_of(signed_example(), max_age=60) == signing.EXPIRY_TOO_FAR
    verifier(max_age=30 * 60).check(Job.from_wire(signed_example()), cluster_id=EXAMPLE_CLUSTER)


def test_not_required_unsigned_passes_but_a_bad_signature_never_does() -> None:
    verifier(require=False).check(Job.from_wire(example_job()), cluster_id=EXAMPLE_CLUSTER)
    no_expiry = sign_with({k: v for k, v in example_job().items() if k != "expiresAt"})
    verifier(require=False).check(Job.from_wire(no_expiry), cluster_id=EXAMPLE_CLUSTER)
    tampered = {**signed_example(), "kind": "intent"}
    assert reason_of(tampered, require=False) == signing.BAD_SIGNATURE
    assert reason_of(signed_example(), require=False, keys={}) == signing.UNKNOWN_KEY


@pytest.mark.parametrize(
    "signature",
    [
        "v2.example-1.AAAA",
        "v1.example.1.AAAA",
        "v1..AAAA",
        EXAMPLE_SIGNATURE + "=",  # padding is not allowed: one encoding per signature
        EXAMPLE_SIGNATURE[:-2],
        EXAMPLE_SIGNATURE.replace("-", "+"),  # base64, not base64url
    ],
)
def test_malformed_signatures(signature: str) -> None:
    with pytest.raises(SignatureError) as err:
        signing.parse(signature)
    assert err.value.reason == signing.MALFORMED


# -- trusted keys ----------------------------------------------------------------------------


def test_trusted_keys_from_a_configmap_and_a_secret_skip_bad_entries() -> None:
    other = Ed25519PrivateKey.generate().public_key()
    configmap = {
        "data": {
            "k1": EXAMPLE_PUBLIC_PEM,
            "k2": signing.public_pem(other),
            "bad.id": EXAMPLE_PUBLIC_PEM,
            "k3": "not a key",
        }
    }
    keys, problems = parse_keys(configmap)
    assert sorted(keys) == ["k1", "k2"]
    assert len(problems) == 2
    assert any("'bad.id'" in p for p in problems)
    assert any("'k3'" in p and "not a PEM public key" in p for p in problems)
    secret = {"data": {"k1": base64.b64encode(EXAMPLE_PUBLIC_PEM.encode()).decode()}}
    keys, problems = parse_keys(secret, secret=True)
    assert keys == {"k1": example_key().public_key()}
    assert not problems


def test_key_source_flag_syntax() -> None:
    assert KeySource.parse("keys") == KeySource("configmap", "keys")
    assert KeySource.parse("secret/keys") == KeySource("secret", "keys")
    assert KeySource.parse("ConfigMap/keys") == KeySource("configmap", "keys")
    with pytest.raises(ValueError, match="is not NAME"):
        KeySource.parse("deployment/keys")


def test_derived_key_ids_are_stable_and_valid() -> None:
    assert signing.derived_key_id(example_key().public_key()) == "ed25519-56475aa75463474c"
    signing.check_key_id(signing.derived_key_id(Ed25519PrivateKey.generate().public_key()))


# -- property: any single-byte change fails --------------------------------------------------


def job_from_envelope(envelope: Any) -> tuple[dict[str, Any], str] | None:
    """The job and cluster id an attacker would have to deliver for this envelope."""
    if not isinstance(envelope, dict) or envelope.get("v") != 1:
        return None
    cluster = envelope.get("clusterId")
    if not isinstance(cluster, str):
        return None
    job = {k: v for k, v in envelope.items() if k not in ("v", "clusterId")}
    return job, cluster


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_to_a_signed_envelope_fails(position: int, replacement: int) -> None:
    original = EXAMPLE_CANONICAL.encode("utf-8")
    position %= len(original)
    if original[position] == replacement:
        replacement = (replacement + 1) % 256
    changed = bytearray(original)
    changed[position] = replacement
    _, _, encoded = EXAMPLE_SIGNATURE.split(".")
    raw_signature = base64.urlsafe_b64decode(encoded + "==")
    # At the byte level the signature never covers the changed bytes...
    with pytest.raises(InvalidSignature):
        example_key().public_key().verify(raw_signature, bytes(changed))
    # ...and when they still decode to a job, the agent refuses that job.
    try:
        decoded = json.loads(bytes(changed))
    except (ValueError, UnicodeDecodeError):
        return
    found = job_from_envelope(decoded)
    if found is None:
        return
    job, cluster = found
    job["signature"] = EXAMPLE_SIGNATURE
    with pytest.raises(SignatureError):
        signing.verify(copy.deepcopy(job), cluster_id=cluster, keys=trusted())

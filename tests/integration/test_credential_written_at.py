"""Against the real API server: the credentials Secret the agent writes records its data writes
in managedFields, which is what the credential age counts from (credentials.written_at), and a
rotation moves it (tests/unit/test_credential_age.py covers the arithmetic)."""

from __future__ import annotations

import datetime

import pytest

from vworkspace.agent.credentials import CredentialStore, written_at
from vworkspace.agent.wire import Credentials
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.client import KubeClient

pytestmark = pytest.mark.integration


async def test_a_persisted_secret_dates_its_credentials_from_the_data_write(
    kube: KubeClient, kube_namespace: str
) -> None:
    store = CredentialStore(kube, namespace=kube_namespace, clock=RealClock())
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    await store.persist(Credentials(base_url="http://cp", cluster_id="c-1", token="first"))
    first = store.written_at()
    assert first is not None
    assert first >= before - datetime.timedelta(seconds=1)
    await store.persist(Credentials(base_url="http://cp", cluster_id="c-1", token="rotated"))
    assert store.current() is not None
    assert store.current().token == "rotated"  # type: ignore[union-attr]
    second = store.written_at()
    assert second is not None
    assert second >= first
    secret = store._secret  # the object as the API server returned it
    assert secret is not None
    entries = [
        e
        for e in secret["metadata"]["managedFields"]
        if {"f:data", "f:stringData"} & set(e.get("fieldsV1") or {})
    ]
    assert entries, secret["metadata"]["managedFields"]
    assert written_at(secret) == second

"""Point the test API server at a webhook served from this machine.

The ValidatingWebhookConfiguration is the shipped one (manifests/webhook) with two changes a
local server needs: ``clientConfig.url`` instead of the in-cluster Service, and the CA bundle of
the throw-away certificates. A ``namespaceSelector`` limits it to one test namespace, so other
tests sharing the control plane never reach a webhook that has stopped.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import time
import uuid
from pathlib import Path

import yaml

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, ResourceType

WEBHOOK_CONFIGS = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)
SHIPPED = Path(__file__).resolve().parents[2] / "manifests" / "webhook"


def shipped_configuration() -> JsonObj:
    for path in sorted(SHIPPED.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ValidatingWebhookConfiguration":
                return dict(doc)
    raise AssertionError(f"no ValidatingWebhookConfiguration in {SHIPPED}")


def local_configuration(*, base_url: str, ca_pem: bytes, namespace: str) -> JsonObj:
    config = copy.deepcopy(shipped_configuration())
    config["metadata"] = {"name": f"vworkspace-test-{uuid.uuid4().hex[:8]}"}
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {
            "url": f"{base_url}{path}",
            "caBundle": base64.b64encode(ca_pem).decode(),
        }
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return config


async def register(kube: KubeClient, config: JsonObj) -> None:
    await kube.create(WEBHOOK_CONFIGS, config, field_manager="vworkspace-test")


async def unregister(kube: KubeClient, config: JsonObj) -> None:
    await kube.delete(WEBHOOK_CONFIGS, ObjectKey(None, config["metadata"]["name"]))


async def wait_until_enforced(kube: KubeClient, namespace: str, timeout: float = 20) -> None:
    """The API server picks up a new webhook configuration asynchronously; probe with a
    dry-run create that only the webhook rejects."""
    probe: JsonObj = {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "webhook-probe", "namespace": namespace},
        "spec": {"appRef": {"catalogId": "probe"}, "mode": "placeholder"},
    }
    # Schema-valid, but the release namespace must equal the instance namespace.
    probe["spec"]["release"] = {"name": "probe", "namespace": "elsewhere"}
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            await kube.request(
                "POST",
                APPLICATION_INSTANCES.collection_path(namespace),
                body=probe,
                query={"dryRun": "All"},
            )
        except ApiError as err:
            if "denied the request" in err.message:
                return
            last = str(err)
        else:
            last = "admitted"
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"the webhook was not enforced in {namespace} within {timeout}s; last probe: {last}"
    )

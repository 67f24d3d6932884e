"""The kopf operator a Python team would write instead of vworkspace, for the benchmarks only.

Per managed Helm ApplicationInstance it makes exactly vworkspace's writes (bench/peers/objects.py
spells out the shapes): the finalizer ``apps.vworkspace.io/finalizer``, the Flux HelmRepository
(shared by the namespace's instances) and HelmRelease by server-side apply with force as
``vworkspace-operator``, and a status with the Ready condition and ``helmReleaseRef``. Deleting
an instance deletes its HelmRelease; the shared HelmRepository stays.

    KUBECONFIG=... python -m bench.peers.kopf_peer --namespace bench

Choices, each the idiomatic one unless it would make the comparison unfair:

* one async handler for ``on.resume``, ``on.create`` and ``on.update`` (spec only): the
  level-triggered style kopf's documentation shows; async so kopf runs it on its event loop
  rather than in its thread pool, with kubernetes-asyncio (the client vworkspace uses, too);
* kopf's own finalizer machinery, renamed to vworkspace's finalizer (``settings.persistence``):
  kopf adds it because a non-optional ``on.delete`` handler exists;
* progress and the diff base in **annotations**: the CRD's status has a structural schema, so
  kopf's default ``status.kopf`` progress record would be pruned by the API server;
* events only at WARNING and above (``settings.posting.level``): vworkspace records no Event for
  an instance that is merely progressing, so kopf's per-handler "succeeded" INFO events would be
  writes vworkspace does not make;
* status patched only when it changed (ignoring ``lastReconcileTime``), as vworkspace does;
* standalone (no peering objects): one replica, as in the benchmark.

kopf is a bench-only extra (``pip install -e '.[bench]'``); the operator never imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from bench.peers import objects

GROUP, VERSION, PLURAL = objects.INSTANCES.split("/")
APPLY = "application/apply-patch+yaml"


def managed_helm(spec: kopf.Spec, **_: Any) -> bool:
    chart = spec.get("chart") or {}
    return spec.get("mode") != "placeholder" and chart.get("sourceType") == "helm"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = objects.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="bench.vworkspace.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="bench.vworkspace.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    await config.load_kube_config()
    memo.api = client.ApiClient()
    memo.custom = client.CustomObjectsApi(memo.api)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


async def _apply(memo: kopf.Memo, resource: str, obj: dict[str, Any]) -> None:
    group, version, plural = resource.split("/")
    meta = obj["metadata"]
    await memo.custom.patch_namespaced_custom_object(
        group,
        version,
        meta["namespace"],
        plural,
        meta["name"],
        obj,
        field_manager=objects.FIELD_MANAGER,
        force=True,
        _content_type=APPLY,
    )


@kopf.on.resume(GROUP, VERSION, PLURAL, when=managed_helm)
@kopf.on.create(GROUP, VERSION, PLURAL, when=managed_helm)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=managed_helm)
async def reconcile(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    ai = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(status),
    }
    await _apply(memo, objects.HELM_REPOSITORIES, objects.helm_repository(ai))
    await _apply(memo, objects.HELM_RELEASES, objects.helm_release(ai))
    wanted = objects.status(ai, now=datetime.datetime.now(datetime.UTC))
    if not objects.same_status(ai["status"], wanted):
        patch.status.update(wanted)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=managed_helm)
async def uninstall(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace, release = body.metadata.namespace, body.spec["release"]["name"]
    # The HelmRepository is shared by the namespace's instances (vworkspace's garbage
    # collector-owned source): it stays, the benchmark's namespace goes with it.
    for resource, name in ((objects.HELM_RELEASES, release),):
        group, version, plural = resource.split("/")
        try:
            await memo.custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name
            )
        except ApiException as err:
            if err.status != 404:
                raise


def main() -> None:
    parser = argparse.ArgumentParser(description="the kopf peer of vworkspace (benchmarks only)")
    parser.add_argument("--namespace", required=True, help="watch this namespace only")
    parser.add_argument("--verbose", action="store_true", help="kopf's INFO logs")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(kopf.operator(namespaces=[args.namespace], standalone=True))


if __name__ == "__main__":
    main()

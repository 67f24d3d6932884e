"""The adversarial corpus: crafted jobs that try to act outside their target, each with a
one-line reason, and the hypothesis strategy that recombines the same building blocks.

Building blocks (every one with its reason):

* :func:`namespace_tricks` / :func:`name_tricks`: strings that try to change the shape of the
  request path once they are joined into it (``..``, ``/``, ``#``, ``?``, percent-encoded and
  double-encoded dots and slashes, backslashes, unicode look-alikes of dot and slash, NUL,
  CR/LF, overlong names, trailing dots), aimed at the victims (:class:`Victims`);
* :func:`kind_tricks`: kinds and apiVersions in odd spellings;
* :func:`metadata_tricks`: metadata the API server acts on (ownerReferences, finalizers,
  deletionGracePeriodSeconds, generateName, managedFields, uid, resourceVersion);
* :func:`spec_tricks`: references from a spec to objects in other namespaces
  (``spec.release.namespace``, ``values.secretRef``, an Operation's ``targetRef``, restore
  mappings, a Cluster's registration Secret).

:func:`corpus` combines each block with every job kind it applies to (apply, delete, and each
intent); :func:`generated_job` draws composites (a template, one to three poisoned fields, a
metadata trick) for the >= 1,000 generated jobs.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Callable

import attrs
from hypothesis import strategies as st

from vworkspace.api.jsontypes import JsonObj

APPS = "apps.vworkspace.io/v1alpha1"
OPS = "ops.vworkspace.io/v1alpha1"
TARGET_GLOB = "adv-target-*"
TARGET_A, TARGET_B = "adv-target-a", "adv-target-b"
KEEP = "keep-me"
UP = "../" * 8  # more ".." than any API path has segments: clamped at the root


@attrs.frozen
class Victims:
    """Names of the objects planted outside the target (tests/adversarial/victims.py)."""

    namespace: str  # holds a Backup, HelmRelease, Secret, ConfigMap, instance, Operation...
    lookalike: str  # a Namespace whose name starts like the target glob but does not match
    cluster: str  # a cluster-scoped Cluster
    uid: str = ""  # the victim ConfigMap's uid, for ownerReferences that point at it


Trick = tuple[str, str]  # (reason, value)


def escapes(v: Victims) -> list[Trick]:
    """Absolute API paths of victims, to be reached by climbing out of the job's own path."""
    ns = v.namespace
    return [
        ("a Velero Backup (issue F1)", f"apis/velero.io/v1/namespaces/{ns}/backups/{KEEP}"),
        (
            "a Flux HelmRelease",
            f"apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases/{KEEP}",
        ),
        ("a Secret", f"api/v1/namespaces/{ns}/secrets/{KEEP}"),
        ("a ConfigMap", f"api/v1/namespaces/{ns}/configmaps/{KEEP}"),
        ("every ConfigMap (a deletecollection)", f"api/v1/namespaces/{ns}/configmaps"),
        ("an ApplicationInstance", f"apis/{APPS}/namespaces/{ns}/applicationinstances/{KEEP}"),
        ("an Operation", f"apis/{OPS}/namespaces/{ns}/operations/{KEEP}"),
        ("a Seaweed", f"apis/seaweed.seaweedfs.com/v1/namespaces/{ns}/seaweeds/{KEEP}"),
        ("the victim Namespace", f"api/v1/namespaces/{ns}"),
        ("a cluster-scoped Cluster", f"apis/{OPS}/clusters/{v.cluster}"),
    ]


def namespace_tricks(v: Victims) -> list[Trick]:
    """Values for a namespace field that try to leave ``adv-target-a``."""
    ns = v.namespace
    tricks: list[Trick] = [
        ("'..' climbs from the target into the victim namespace", f"{TARGET_A}/../{ns}"),
        ("the glob's '*' matches '/' (issue F1)", f"{TARGET_B}-x/../{ns}"),
        ("'..' into kube-system", f"{TARGET_A}/../kube-system"),
        ("'./' then '..'", f"{TARGET_A}/./../{ns}"),
        ("percent-encoded dots %2e%2e", f"{TARGET_A}/%2e%2e/{ns}"),
        ("percent-encoded slash %2f", f"{TARGET_A}%2f..%2f{ns}"),
        ("double-encoded dots %252e", f"{TARGET_A}/%252e%252e/{ns}"),
        ("double-encoded slash %252f", f"{TARGET_A}%252f%252e%252e%252f{ns}"),
        ("backslashes as separators", f"{TARGET_A}\\..\\{ns}"),
        ("U+2024 ONE DOT LEADER looks like a dot", f"{TARGET_A}/\u2024\u2024/{ns}"),
        ("U+FF0F FULLWIDTH SOLIDUS looks like a slash", f"{TARGET_A}\uff0f..\uff0f{ns}"),
        ("U+2215 DIVISION SLASH looks like a slash", f"{TARGET_A}\u2215..\u2215{ns}"),
        ("NUL cuts a C string", f"{TARGET_A}\x00/../{ns}"),
        ("CR/LF injects a header", f"{TARGET_A}\r\nX-Adversarial: 1"),
        (
            "CR/LF injects a second request",
            f"{TARGET_A}\r\n\r\nDELETE /api/v1/namespaces/{ns} HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("a trailing dot", f"{TARGET_A}."),
        ("64 characters, one over a DNS label", "adv-target-" + "a" * 53),
        ("254 characters, one over a DNS subdomain", "adv-target-" + "a" * 243),
        ("';' path parameter", f"{TARGET_A};/../{ns}"),
        ("'#' cuts the rest of the path", f"{TARGET_A}#"),
        ("'?' starts a query (dryRun, selectors)", f"{TARGET_A}?dryRun=All&x="),
        ("an absolute path", f"/{ns}"),
    ]
    for what, path in escapes(v):
        tricks.append((f"climbs to {what}, '#' cuts the rest", f"{TARGET_A}/{UP}{path}#"))
    tricks.append(
        ("climbs to every ConfigMap, '?' cuts the rest", f"{TARGET_A}/{UP}{escapes(v)[4][1]}?")
    )
    return tricks


def name_tricks(v: Victims) -> list[Trick]:
    """Values for a name field (the last path segment) that try to point elsewhere."""
    ns = v.namespace
    tricks: list[Trick] = [
        ("'..'", ".."),
        ("'.'", "."),
        ("'/'", "/"),
        ("'..' to the victim's instance", f"../../{ns}/applicationinstances/{KEEP}"),
        ("'..' encoded as %2e%2e", f"%2e%2e/%2e%2e/{ns}/applicationinstances/{KEEP}"),
        ("'/' encoded as %2f", f"..%2f..%2f{ns}%2fapplicationinstances%2f{KEEP}"),
        ("double-encoded %252e%252e", f"%252e%252e/%252e%252e/{ns}/applicationinstances/{KEEP}"),
        ("backslashes", f"..\\..\\{ns}\\applicationinstances\\{KEEP}"),
        ("U+2024 look-alike dots", f"\u2024\u2024/\u2024\u2024/{ns}/applicationinstances/{KEEP}"),
        (
            "U+FF0F look-alike slashes",
            f"..\uff0f..\uff0f{ns}\uff0fapplicationinstances\uff0f{KEEP}",
        ),
        (
            "U+2215 look-alike slashes",
            f"..\u2215..\u2215{ns}\u2215applicationinstances\u2215{KEEP}",
        ),
        ("NUL", f"{KEEP}\x00/../../{ns}"),
        ("CR/LF", f"{KEEP}\r\nX-Adversarial: 1"),
        ("64 characters", "a" * 64),
        ("254 characters", "a" * 254),
        ("a trailing dot", f"{KEEP}."),
        ("'#' cuts a suffix", f"{KEEP}#/status"),
        ("a subresource suffix /status", f"{KEEP}/status"),
        ("a subresource suffix /finalize", f"{KEEP}/finalize"),
        ("'?' query injection", f"{KEEP}?propagationPolicy=Orphan"),
        ("the victim Namespace's name, climbing", f"{TARGET_A}/../{ns}"),
        ("the victim Cluster's name", v.cluster),
    ]
    for what, path in escapes(v):
        tricks.append((f"climbs to {what}", f"{UP}{path}"))
    tricks.append(("climbs three levels from /clusters/ to a Backup (issue F1)", cluster_f1(v)))
    return tricks


def cluster_f1(v: Victims) -> str:
    """The issue's Cluster trick: from /apis/ops.vworkspace.io/v1alpha1/clusters/ three levels
    up is /apis/, then a Velero Backup path."""
    return f"../../../velero.io/v1/namespaces/{v.namespace}/backups/{KEEP}"


def namespace_f1(v: Victims) -> str:
    """The issue's namespace trick: climb to the root, a Backup path, '#' cuts the rest."""
    return f"{TARGET_A}/../../../../../apis/velero.io/v1/namespaces/{v.namespace}/backups/{KEEP}#"


def kind_tricks() -> list[tuple[str, str, str]]:
    """(reason, apiVersion, kind) in odd spellings."""
    return [
        ("lower-case kind", APPS, "applicationinstance"),
        ("upper-case kind", APPS, "APPLICATIONINSTANCE"),
        ("plural as kind", APPS, "applicationinstances"),
        ("apiVersion climbing to the core group", f"{APPS}/../../v1", "Namespace"),
        ("apiVersion climbing to velero", f"{APPS}/../../velero.io/v1", "Backup"),
        ("leading space in apiVersion", f" {APPS}", "ApplicationInstance"),
        ("trailing '#' in apiVersion", f"{APPS}#", "ApplicationInstance"),
        ("upper-case version", "apps.vworkspace.io/V1ALPHA1", "ApplicationInstance"),
        ("'/v1' for the core group", "/v1", "Namespace"),
        ("'v1/' for the core group", "v1/", "Namespace"),
        ("Namespace with a group", "apps.vworkspace.io/v1", "Namespace"),
        ("Cluster under the apps group", APPS, "Cluster"),
        ("Cluster (a cluster-scoped kind, issue F8)", OPS, "Cluster"),
        ("a kind off the allow-list, in velero", "velero.io/v1", "Backup"),
        ("a kind off the allow-list, core Secret", "v1", "Secret"),
        ("kind with a path", APPS, f"ApplicationInstance/../../{UP}api/v1/namespaces"),
        ("kind with a NUL", APPS, "ApplicationInstance\x00"),
        ("kind with a look-alike letter (Cyrillic a)", APPS, "Applic\u0430tionInstance"),
    ]


def metadata_tricks(v: Victims) -> list[tuple[str, JsonObj]]:
    """(reason, metadata fields merged into an applied object's metadata)."""
    missing_owner = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "name": "adv-no-such-owner",
        "uid": "00000000-0000-4000-8000-00000000dead",
    }
    victim_owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": KEEP,
        "uid": v.uid or "00000000-0000-4000-8000-00000000beef",
        "blockOwnerDeletion": True,
        "controller": True,
    }
    return [
        (
            "an ownerReference to an owner that does not exist: the GC deletes it (issue F2)",
            {"ownerReferences": [missing_owner]},
        ),
        ("an ownerReference to the victim ConfigMap's uid", {"ownerReferences": [victim_owner]}),
        ("a finalizer nobody removes pins the object", {"finalizers": ["adv.example.com/pin"]}),
        ("the kubernetes finalizer", {"finalizers": ["kubernetes"]}),
        ("the foregroundDeletion finalizer", {"finalizers": ["foregroundDeletion"]}),
        ("deletionGracePeriodSeconds", {"deletionGracePeriodSeconds": 0}),
        ("deletionTimestamp", {"deletionTimestamp": "2020-01-01T00:00:00Z"}),
        ("generateName instead of a name", {"generateName": "adv-gen-"}),
        (
            "managedFields claiming another manager",
            {
                "managedFields": [
                    {
                        "manager": "kubectl",
                        "operation": "Apply",
                        "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:labels": {}}},
                    }
                ]
            },
        ),
        ("the victim ConfigMap's uid as our uid", {"uid": v.uid or "x"}),
        ("an old resourceVersion", {"resourceVersion": "1"}),
        (
            "selfLink to the victim",
            {"selfLink": f"/api/v1/namespaces/{v.namespace}/secrets/{KEEP}"},
        ),
        ("a namespace on a cluster-scoped object", {"namespace": v.namespace}),
        ("a label selecting the victim", {"labels": {"adv.vworkspace.io/victim": "true"}}),
    ]


def spec_tricks(v: Victims) -> list[tuple[str, str, JsonObj]]:
    """(reason, job template, spec fields) with references into other namespaces."""
    ns = v.namespace
    return [
        (
            "release.namespace is the victim namespace",
            "instance",
            {"release": {"name": KEEP, "namespace": ns}},
        ),
        (
            "release.namespace climbs into the victim namespace",
            "instance",
            {"release": {"name": KEEP, "namespace": f"{TARGET_A}/../{ns}"}},
        ),
        (
            "release.name climbs to the victim's HelmRelease",
            "instance",
            {"release": {"name": f"{UP}{escapes(v)[1][1]}", "namespace": TARGET_A}},
        ),
        (
            "values.secretRef names the victim Secret",
            "instance",
            {"values": {"source": "secretRef", "secretRef": {"name": KEEP, "key": "password"}}},
        ),
        (
            "values.secretRef climbs to the victim Secret",
            "instance",
            {
                "values": {
                    "source": "secretRef",
                    "secretRef": {"name": f"{UP}{escapes(v)[2][1]}", "key": "password"},
                }
            },
        ),
        (
            "values.configMapRef climbs to the victim ConfigMap",
            "instance",
            {
                "values": {
                    "source": "configMapRef",
                    "configMapRef": {"name": f"../../{ns}/configmaps/{KEEP}", "key": "k"},
                }
            },
        ),
        (
            "managed chart whose HelmRelease goes to the victim namespace",
            "instance",
            {
                "mode": "managed",
                "release": {"name": KEEP, "namespace": ns},
                "chart": {
                    "sourceType": "helm",
                    "url": "https://charts.example.com",
                    "name": "db",
                    "version": "1.0.0",
                },
            },
        ),
        (
            "chart name climbing to the victim",
            "instance",
            {
                "mode": "managed",
                "chart": {
                    "sourceType": "oci",
                    "url": "oci://reg.example.com/a/../../x",
                    "name": f"{UP}{escapes(v)[1][1]}",
                    "version": "1",
                },
            },
        ),
        (
            "Operation targetRef names the victim instance by climbing",
            "operation",
            {
                "targetRef": {
                    "apiVersion": APPS,
                    "kind": "ApplicationInstance",
                    "name": f"../../{ns}/applicationinstances/{KEEP}",
                }
            },
        ),
        (
            "Operation targetRef to a Backup kind",
            "operation",
            {"targetRef": {"apiVersion": "velero.io/v1", "kind": "Backup", "name": KEEP}},
        ),
        (
            "Restore mapping the victim namespace onto the target",
            "operation",
            {
                "type": "Restore",
                "parameters": {
                    "backupName": KEEP,
                    "namespaceMapping": {ns: TARGET_A},
                    "includedNamespaces": [ns],
                },
            },
        ),
        (
            "Backup of the victim namespace by parameters",
            "operation",
            {"parameters": {"includedNamespaces": [ns], "storageLocation": f"../{ns}"}},
        ),
        (
            "RunCommand with a privileged ServiceAccount (issue F9)",
            "operation",
            {
                "type": "RunCommand",
                "engine": "job",
                "parameters": {
                    "image": "busybox",
                    "serviceAccountName": "cluster-admin",
                    "namespace": ns,
                },
            },
        ),
        (
            "Cluster whose registration Secret is the victim Secret",
            "cluster",
            {
                "registrationTokenSecretRef": {"name": KEEP, "key": "password"},
                "controlPlaneEndpoint": "http://evil.example.com",
            },
        ),
    ]


# -- job templates -----------------------------------------------------------------------------


def instance(name: str = "adv-app", namespace: str = TARGET_A) -> JsonObj:
    return {
        "apiVersion": APPS,
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"appRef": {"catalogId": "adv"}, "mode": "placeholder"},
    }


def operation(name: str = "adv-op", namespace: str = TARGET_A) -> JsonObj:
    return {
        "apiVersion": OPS,
        "kind": "Operation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": APPS, "kind": "ApplicationInstance", "name": "adv-app"},
            "type": "Backup",
            "engine": "velero",
        },
    }


def cluster(name: str) -> JsonObj:
    return {"apiVersion": OPS, "kind": "Cluster", "metadata": {"name": name}, "spec": {}}


def namespace_obj(name: str) -> JsonObj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def apply(obj: JsonObj) -> JsonObj:
    return {"kind": "apply", "payload": obj}


def delete(api_version: str, kind: str, name: str, namespace: str = "") -> JsonObj:
    ref = {"apiVersion": api_version, "kind": kind, "name": name}
    if namespace:
        ref["namespace"] = namespace
    return {"kind": "delete", "payload": ref}


def ensure(obj: JsonObj) -> JsonObj:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return {
        "kind": "intent",
        "payload": {"intent": "ensure-application-instance", "applicationInstance": body},
    }


def request(obj: JsonObj) -> JsonObj:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    return {"kind": "intent", "payload": {"intent": "request-operation", "operation": body}}


def delete_intent(name: str, namespace: str) -> JsonObj:
    return {
        "kind": "intent",
        "payload": {"intent": "delete-application-instance", "name": name, "namespace": namespace},
    }


# Where a namespace trick goes: (label, job built from the namespace value).
NAMESPACE_SLOTS: list[tuple[str, Callable[[str], JsonObj]]] = [
    ("apply ApplicationInstance", lambda ns: apply(instance(namespace=ns))),
    ("apply Operation", lambda ns: apply(operation(namespace=ns))),
    ("ensure-application-instance", lambda ns: ensure(instance(namespace=ns))),
    ("request-operation", lambda ns: request(operation(namespace=ns))),
    ("delete ApplicationInstance", lambda ns: delete(APPS, "ApplicationInstance", "adv-app", ns)),
    ("delete Operation", lambda ns: delete(OPS, "Operation", "adv-op", ns)),
    ("delete-application-instance", lambda ns: delete_intent("adv-app", ns)),
    ("apply Namespace (as its name)", lambda ns: apply(namespace_obj(ns))),
    ("delete Namespace (as its name)", lambda ns: delete("v1", "Namespace", ns)),
]

# Where a name trick goes.
NAME_SLOTS: list[tuple[str, Callable[[str], JsonObj]]] = [
    ("apply ApplicationInstance", lambda n: apply(instance(name=n))),
    ("ensure-application-instance", lambda n: ensure(instance(name=n))),
    ("request-operation", lambda n: request(operation(name=n))),
    ("delete ApplicationInstance", lambda n: delete(APPS, "ApplicationInstance", n, TARGET_A)),
    ("delete Operation", lambda n: delete(OPS, "Operation", n, TARGET_A)),
    ("delete-application-instance", lambda n: delete_intent(n, TARGET_A)),
    ("apply Cluster", lambda n: apply(cluster(n))),
    ("delete Cluster", lambda n: delete(OPS, "Cluster", n)),
]


def _with_spec(template: str, fields: JsonObj) -> JsonObj:
    base = {"instance": instance, "operation": operation}.get(template)
    obj = cluster("adv-cluster") if base is None else base()
    obj["spec"] = {**obj["spec"], **copy.deepcopy(fields)}
    return obj


def corpus(v: Victims) -> list[tuple[str, JsonObj]]:
    """The hand-written corpus: (reason, job without id)."""
    cases: list[tuple[str, JsonObj]] = [
        (
            "issue F1: delete ApplicationInstance, namespace climbs to a Velero Backup",
            delete(APPS, "ApplicationInstance", "adv-app", namespace_f1(v)),
        ),
        (
            "issue F1: delete Cluster, name climbs to a Velero Backup",
            delete(OPS, "Cluster", cluster_f1(v)),
        ),
        (
            "issue F1: delete-application-instance, namespace climbs to a Velero Backup",
            delete_intent("adv-app", namespace_f1(v)),
        ),
    ]
    for why, value in namespace_tricks(v):
        for slot, build in NAMESPACE_SLOTS:
            cases.append((f"namespace: {why} ({slot})", build(value)))
    for why, value in name_tricks(v):
        for slot, build in NAME_SLOTS:
            cases.append((f"name: {why} ({slot})", build(value)))
    for why, api_version, kind in kind_tricks():
        obj = {**instance(), "apiVersion": api_version, "kind": kind}
        cases.append((f"kind: {why} (apply)", apply(obj)))
        cases.append(
            (
                f"kind: {why} (delete of the victim's {KEEP})",
                delete(api_version, kind, KEEP, v.namespace),
            )
        )
        cases.append(
            (f"kind: {why} (delete in the target)", delete(api_version, kind, KEEP, TARGET_A))
        )
    for why, fields in metadata_tricks(v):
        for label, obj in (
            ("ApplicationInstance", instance("adv-meta")),
            ("Namespace", namespace_obj("adv-target-meta")),
            ("Operation", operation("adv-meta")),
        ):
            obj["metadata"] = {**obj["metadata"], **copy.deepcopy(fields)}
            cases.append((f"metadata: {why} (apply {label})", apply(obj)))
        ai = instance("adv-meta-intent")
        ai["metadata"] = {**ai["metadata"], **copy.deepcopy(fields)}
        cases.append((f"metadata: {why} (ensure-application-instance)", ensure(ai)))
    for why, template, fields in spec_tricks(v):
        obj = _with_spec(template, fields)
        cases.append((f"spec: {why} (apply)", apply(obj)))
        if template == "instance":
            cases.append((f"spec: {why} (ensure-application-instance)", ensure(obj)))
        elif template == "operation":
            cases.append((f"spec: {why} (request-operation)", request(obj)))
    return _distinct(cases)


def _distinct(cases: list[tuple[str, JsonObj]]) -> list[tuple[str, JsonObj]]:
    seen: set[str] = set()
    out = []
    for why, job in cases:
        key = json.dumps(job, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((why, job))
    return out


# -- hypothesis ---------------------------------------------------------------------------------

ENCODINGS: list[tuple[str, Callable[[str], str]]] = [
    ("as is", lambda s: s),
    ("percent-encoded", lambda s: urllib.parse.quote(s, safe="")),
    ("dots percent-encoded", lambda s: s.replace(".", "%2e")),
    ("slashes percent-encoded", lambda s: s.replace("/", "%2f")),
    ("double-encoded", lambda s: urllib.parse.quote(urllib.parse.quote(s, safe=""), safe="")),
    ("slashes as backslashes", lambda s: s.replace("/", "\\")),
    ("slashes as U+FF0F", lambda s: s.replace("/", "\uff0f")),
    ("slashes as U+2215", lambda s: s.replace("/", "\u2215")),
    ("dots as U+2024", lambda s: s.replace(".", "\u2024")),
    ("upper-cased", lambda s: s.upper()),
    ("with a trailing dot", lambda s: s + "."),
    ("with a NUL inside", lambda s: s[: len(s) // 2] + "\x00" + s[len(s) // 2 :]),
    ("with CR/LF appended", lambda s: s + "\r\n"),
    ("with '#' appended", lambda s: s + "#"),
    ("with '?' appended", lambda s: s + "?"),
]


@st.composite
def generated_job(draw: st.DrawFn, v: Victims) -> tuple[str, JsonObj]:
    """A composite: a job template with one to three poisoned fields (a trick, perhaps
    encoded, perhaps wrapped in random text) and perhaps a metadata trick."""
    why: list[str] = []
    kind = draw(st.sampled_from(["namespace", "name", "kind", "spec", "metadata"]))
    value_tricks = namespace_tricks(v) if kind == "namespace" else name_tricks(v)
    if kind in ("namespace", "name"):
        slots = NAMESPACE_SLOTS if kind == "namespace" else NAME_SLOTS
        slot, build = draw(st.sampled_from(slots))
        reason, value = draw(st.sampled_from(value_tricks))
        enc, encode = draw(st.sampled_from(ENCODINGS))
        prefix = draw(st.sampled_from(["", "", TARGET_A + "/", "adv-target-", "./", "x/.."]))
        suffix = draw(st.text(alphabet="./#?%\\-az\u2024", max_size=4))
        job = build(prefix + encode(value) + suffix)
        why.append(f"{kind} {enc}: {reason} ({slot}, prefix {prefix!r}, suffix {suffix!r})")
    elif kind == "kind":
        reason, api_version, kind_name = draw(st.sampled_from(kind_tricks()))
        target = draw(st.sampled_from(["delete-victim", "delete-target", "apply"]))
        name = draw(st.sampled_from([KEEP, *(t for _, t in name_tricks(v)[:6])]))
        if target == "apply":
            job = apply({**instance(name), "apiVersion": api_version, "kind": kind_name})
        else:
            ns = v.namespace if target == "delete-victim" else TARGET_A
            job = delete(api_version, kind_name, name, ns)
        why.append(f"kind: {reason} ({target}, name {name!r})")
    elif kind == "spec":
        reason, template, fields = draw(st.sampled_from(spec_tricks(v)))
        obj = _with_spec(template, fields)
        obj["metadata"]["name"] = draw(st.sampled_from(["adv-app", "adv-spec", KEEP]))
        job = draw(
            st.sampled_from(
                [
                    apply(obj),
                    ensure(obj)
                    if template == "instance"
                    else request(obj)
                    if template == "operation"
                    else apply(obj),
                ]
            )
        )
        why.append(f"spec: {reason}")
    else:
        reason, fields = draw(st.sampled_from(metadata_tricks(v)))
        base = draw(st.sampled_from(["instance", "operation", "namespace", "cluster"]))
        obj = {
            "instance": lambda: instance(
                "adv-gen-meta", draw(st.sampled_from([TARGET_A, TARGET_B]))
            ),
            "operation": lambda: operation("adv-gen-meta"),
            "namespace": lambda: namespace_obj(f"adv-target-gen-{draw(st.integers(0, 9))}"),
            "cluster": lambda: cluster(f"adv-gen-{draw(st.integers(0, 9))}"),
        }[base]()
        obj["metadata"] = {**obj["metadata"], **copy.deepcopy(fields)}
        job = apply(obj)
        why.append(f"metadata: {reason} (apply {base})")
    if kind != "metadata" and draw(st.booleans()) and job["kind"] == "apply":
        reason, fields = draw(st.sampled_from(metadata_tricks(v)))
        payload = job["payload"]
        if isinstance(payload.get("metadata"), dict):
            payload["metadata"] = {**payload["metadata"], **copy.deepcopy(fields)}
            why.append(f"+ metadata: {reason}")
    return "; ".join(why), job

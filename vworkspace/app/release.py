"""Release artifacts: `crds.yaml`, `operator.yaml`, the packaged Helm chart and `SHA256SUMS`.

`operator.yaml` is the kustomize base (manifests/) rendered here, in Python, so that cutting a
release needs neither kubectl nor helm. The renderer understands only what manifests/ uses
(``resources``, ``images``, ``labels``) and refuses any other kustomization field, so a new
kustomize feature in manifests/ fails the release loudly instead of being dropped; a test
compares its output with `kubectl kustomize manifests/` (docs/operations.md, "Install").

The chart is packaged with :mod:`tarfile` the way `helm package` lays it out (``vworkspace/...``
inside a gzip tar), following the chart's links into manifests/ so the archive is
self-contained. Timestamps and owners are fixed, so the same tree gives the same bytes and
the same checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

KUSTOMIZE_FIELDS = frozenset({"apiVersion", "kind", "resources", "images", "labels"})
# kubectl applies a list in order: what others depend on comes first (kustomize's legacy order).
KIND_ORDER = (
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "Service",
    "Deployment",
)


class ReleaseError(Exception):
    """The tree cannot be turned into release artifacts; the message names the file."""


def render_kustomization(directory: Path) -> list[Doc]:
    """The objects `kubectl kustomize DIRECTORY` prints, for the fields manifests/ uses."""
    docs = _render(directory.resolve(), seen=())
    return sorted(docs, key=_order)


def _order(doc: Doc) -> tuple[int, str, str]:
    kind = str(doc.get("kind", ""))
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    meta = doc.get("metadata") or {}
    return rank, str(meta.get("namespace", "")), str(meta.get("name", ""))


def _render(directory: Path, *, seen: tuple[Path, ...]) -> list[Doc]:
    if directory in seen:
        raise ReleaseError(f"{directory}: kustomization cycle")
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise ReleaseError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(spec) - KUSTOMIZE_FIELDS)
    if unknown:
        raise ReleaseError(f"{path}: unsupported kustomization field(s) {', '.join(unknown)}")
    docs: list[Doc] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            docs.extend(_render(target, seen=(*seen, directory)))
        else:
            docs.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
    for image in spec.get("images") or []:
        _set_image(docs, image)
    for group in spec.get("labels") or []:
        if group.get("includeSelectors") or group.get("includeTemplates"):
            raise ReleaseError(f"{path}: labels with includeSelectors/includeTemplates")
        for doc in docs:
            labels = doc.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(group.get("pairs") or {})
    return docs


def _set_image(docs: Iterable[Doc], image: Doc) -> None:
    name = image["name"]
    for doc in docs:
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            current = str(container.get("image", ""))
            repo, _, tag = current.partition(":") if "@" not in current else (current, "", "")
            if repo != name:
                continue
            new_repo = image.get("newName", repo)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_repo}:{new_tag}" if new_tag else new_repo


def dump(docs: Iterable[Doc]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False, explicit_start=True)


def chart_metadata(chart: Path) -> Doc:
    meta: Doc = yaml.safe_load((chart / "Chart.yaml").read_text())
    return meta


def package_chart(chart: Path, out: Path) -> Path:
    """`helm package CHART -d OUT`, reproducibly: OUT/NAME-VERSION.tgz."""
    meta = chart_metadata(chart)
    name, version = meta["name"], meta["version"]
    ignore = _helmignore(chart)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(_files(chart)):
            relative = path.relative_to(chart).as_posix()
            if any(pattern.search(relative) for pattern in ignore):
                continue
            data = path.read_bytes()  # through the links into manifests/
            info = tarfile.TarInfo(f"{name}/{relative}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    target = out / f"{name}-{version}.tgz"
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())
    return target


def _files(root: Path) -> Iterable[Path]:
    """Every file below ROOT, following links to directories (as helm's loader does)."""
    for path in root.iterdir():
        if path.is_dir():
            yield from _files(path)
        elif path.is_file():
            yield path


def _helmignore(chart: Path) -> list[re.Pattern[str]]:
    path = chart / ".helmignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    compiled = [
        re.compile(r"(^|/)" + re.escape(p.rstrip("/")).replace(r"\*", "[^/]*") + r"(/|$)")
        for p in patterns
    ]
    return [*compiled, re.compile(r"(^|/)\.helmignore$")]


def write_release(*, manifests: Path, chart: Path, out: Path) -> list[Path]:
    """Write the four artifacts into OUT; return their paths, SHA256SUMS last."""
    out.mkdir(parents=True, exist_ok=True)
    operator = render_kustomization(manifests)
    crds = [d for d in operator if d["kind"] == "CustomResourceDefinition"]
    if not crds:
        raise ReleaseError(f"{manifests}: renders no CustomResourceDefinition")
    written = [out / "crds.yaml", out / "operator.yaml"]
    written[0].write_text(dump(crds))
    written[1].write_text(dump(operator))
    written.append(package_chart(chart, out))
    sums = out / "SHA256SUMS"
    sums.write_text(
        "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in written)
    )
    return [*written, sums]

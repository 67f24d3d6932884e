"""ApplicationInstance (``apps.vworkspace.io/v1alpha1``): one application deployed on this cluster.

Wire-compatible with the Go operator (docs/api.md, "ApplicationInstance"). In managed mode the
operator turns
it into a Flux HelmRelease plus a HelmRepository or OCIRepository; in placeholder mode it owns no
release and exists so that cluster-level Operations have a target.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.conditions import Condition
from vworkspace.api.meta import ObjectMeta
from vworkspace.api.resource import AGE, PrinterColumn, ResourceInfo, Scope, condition_column
from vworkspace.api.schema import FreeForm, field
from vworkspace.api.view import ObjectView, mapping

KIND = "ApplicationInstance"


class Mode(enum.StrEnum):
    MANAGED = "managed"
    PLACEHOLDER = "placeholder"


class SourceType(enum.StrEnum):
    OCI = "oci"
    HELM = "helm"


class ValuesSource(enum.StrEnum):
    INLINE = "inline"
    SECRET_REF = "secretRef"
    CONFIG_MAP_REF = "configMapRef"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    BLOCKED = "Blocked"
    DELETING = "Deleting"


class Reason(enum.StrEnum):
    """Condition reasons the operator emits (the control plane depends on these strings)."""

    HELM_RELEASE_READY = "HelmReleaseReady"
    PLACEHOLDER = "Placeholder"
    HELM_RELEASE_FAILED = "HelmReleaseFailed"
    HELM_RELEASE_DEGRADED = "HelmReleaseDegraded"
    HELM_RELEASE_INSTALLING = "HelmReleaseInstalling"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    RECOVERED = "Recovered"
    VALIDATION_FAILED = "ValidationFailed"
    MISSING_DEPENDENCIES = "MissingDependencies"
    UNBLOCKED = "Unblocked"
    UNINSTALLING = "Uninstalling"
    DELETING = "Deleting"


@attrs.frozen
class AppRef:
    """Reference to the application in the control plane's catalog."""

    catalog_id: str = field(min_length=1)
    """Catalog identifier of the application (e.g. odoo). Must not be blank."""


@attrs.frozen
class ChartSpec:
    """The Helm chart to install and where to get it from."""

    source_type: SourceType = field()
    """Where the chart is published: helm (an HTTP(S) Helm repository) or oci (an OCI registry)."""
    url: str = field(min_length=1)
    """Repository URL: https://... for helm, oci://... for oci."""
    name: str = field(min_length=1)
    """Chart name within the repository."""
    version: str = field(min_length=1)
    """Chart version to install (exact version or semver range, passed to Flux as is)."""


@attrs.frozen
class ReleaseSpec:
    """The Helm release: the HelmRelease object and its namespace."""

    name: str = field(min_length=1)
    """Release name; also the name of the HelmRelease the operator creates."""
    namespace: str = field(min_length=1)
    """Release namespace; must equal the ApplicationInstance's own namespace."""


@attrs.frozen
class KeyRef:
    """A key in a Secret or ConfigMap in the ApplicationInstance's namespace."""

    name: str = field()
    """Name of the Secret or ConfigMap."""
    key: str = field()
    """Data key holding a YAML or JSON document of Helm values."""


@attrs.frozen
class ValuesSpec:
    """Helm values for the release, from exactly one source."""

    source: ValuesSource = field()
    """Which source is used: inline, secretRef or configMapRef. Sibling fields are ignored."""
    inline: FreeForm | None = field(default=None)
    """Helm values given inline (required when source is inline).
    Never put secrets here; use secretRef."""
    secret_ref: KeyRef | None = field(default=None)
    """Values from a Secret key (required when source is secretRef).
    Passed to Flux by reference; the values are never copied into the HelmRelease."""
    config_map_ref: KeyRef | None = field(default=None)
    """Values from a ConfigMap key (required when source is configMapRef)."""


@attrs.frozen
class ExternalSecretsIntegration:
    """External Secrets Operator integration (stored; not yet translated into values)."""

    enabled: bool = field(default=False)
    """Whether the integration is requested."""


@attrs.frozen
class CertManagerIntegration:
    """cert-manager integration (stored; not yet translated into values)."""

    enabled: bool = field(default=False)
    """Whether the integration is requested."""


@attrs.frozen
class IngressIntegration:
    """Ingress integration (stored; not yet translated into values)."""

    enabled: bool = field(default=False)
    """Whether the integration is requested."""
    host: str | None = field(default=None)
    """Host name for the ingress."""


@attrs.frozen
class Integrations:
    """Optional platform integrations. Accepted and stored; they do not change the release yet."""

    external_secrets: ExternalSecretsIntegration | None = field(default=None)
    """External Secrets Operator integration."""
    cert_manager: CertManagerIntegration | None = field(default=None)
    """cert-manager integration."""
    ingress: IngressIntegration | None = field(default=None)
    """Ingress integration."""


@attrs.frozen
class ApplicationInstanceSpec:
    """Desired state: which application, in which mode, with which chart, release and values."""

    app_ref: AppRef = field()
    """The catalog application this instance is of."""
    mode: Mode = field(default=Mode.MANAGED, crd_default=Mode.MANAGED.value)
    """managed: the operator runs a Helm release through Flux. placeholder: no release;
    the instance is a target for cluster-level Operations."""
    chart: ChartSpec | None = field(default=None)
    """The chart to install. Required in managed mode; must be absent in placeholder mode."""
    release: ReleaseSpec | None = field(default=None)
    """The Helm release. Required in managed mode."""
    values: ValuesSpec | None = field(default=None)
    """Helm values. Required in managed mode; must be absent in placeholder mode."""
    integrations: Integrations | None = field(default=None)
    """Optional platform integrations."""


@attrs.frozen
class HelmReleaseRef:
    """The HelmRelease that carries this instance."""

    name: str = field()
    """HelmRelease name."""
    namespace: str = field()
    """HelmRelease namespace."""


@attrs.frozen
class Endpoint:
    """A service endpoint of the application."""

    name: str = field()
    """Endpoint name."""
    url: str = field()
    """Endpoint URL."""
    type: str | None = field(default=None)
    """Endpoint type, e.g. s3."""
    notes: str | None = field(default=None)
    """Free-text notes."""


@attrs.frozen
class ApplicationInstanceStatus:
    """Observed state, written by the operator only."""

    observed_generation: int | None = field(default=None)
    """The metadata.generation last reconciled."""
    conditions: tuple[Condition, ...] = field(default=(), list_map_keys=("type",))
    """Ready, Reconciling, Degraded, Blocked and Deleting conditions."""
    helm_release_ref: HelmReleaseRef | None = field(default=None)
    """The HelmRelease created for this instance (managed mode)."""
    last_applied_chart: ChartSpec | None = field(default=None)
    """The chart last written to the HelmRelease."""
    last_reconcile_time: datetime.datetime | None = field(default=None)
    """When the operator last reconciled this instance."""
    endpoints: tuple[Endpoint, ...] = field(default=())
    """Service endpoints exposed by the application."""


@attrs.frozen(kw_only=True)
class ApplicationInstance:
    """An application deployed on this cluster."""

    api_version: str = constants.APPS_API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ApplicationInstanceSpec
    status: ApplicationInstanceStatus | None = None


RESOURCE = ResourceInfo(
    group=constants.APPS_GROUP,
    version=constants.VERSION,
    kind=KIND,
    plural="applicationinstances",
    singular="applicationinstance",
    scope=Scope.NAMESPACED,
    short_names=("appinst",),
    printer_columns=(
        condition_column("Ready", ConditionType.READY),
        PrinterColumn("Chart", "string", ".spec.chart.name", "Helm chart name"),
        PrinterColumn("Version", "string", ".spec.chart.version", "Helm chart version"),
        AGE,
    ),
    spec_type=ApplicationInstanceSpec,
    status_type=ApplicationInstanceStatus,
    description=(
        "ApplicationInstance is one vWorkspace application deployed on this cluster: in "
        "managed mode a Helm release run by Flux, in placeholder mode a target for "
        "cluster-level Operations."
    ),
)


class ApplicationInstanceView(ObjectView):
    """A stored ApplicationInstance, read-only (:mod:`vworkspace.api.view`)."""

    __slots__ = ()

    @property
    def catalog_id(self) -> str:
        """``spec.appRef.catalogId``: which offering (e.g. ``seaweedfs``) the instance is."""
        return str(mapping(self.spec.get("appRef")).get("catalogId") or "")

    @property
    def mode(self) -> str:
        """``spec.mode``, ``managed`` by default (the CRD's default)."""
        return str(self.spec.get("mode") or Mode.MANAGED)

    @property
    def placeholder(self) -> bool:
        return self.mode == Mode.PLACEHOLDER

    @property
    def chart(self) -> Mapping[str, Any]:
        """``spec.chart`` (sourceType, url, name, version), empty when unset."""
        return mapping(self.spec.get("chart"))

    @property
    def release(self) -> Mapping[str, Any]:
        """``spec.release`` (name, namespace), empty when unset."""
        return mapping(self.spec.get("release"))

    @property
    def release_name(self) -> str:
        return str(self.release.get("name") or "")

    @property
    def release_namespace(self) -> str:
        return str(self.release.get("namespace") or "")

    @property
    def values(self) -> Mapping[str, Any]:
        """``spec.values`` (source, inline, secretRef, configMapRef), empty when unset."""
        return mapping(self.spec.get("values"))

    @property
    def integrations(self) -> Mapping[str, Any]:
        return mapping(self.spec.get("integrations"))

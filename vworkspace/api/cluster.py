"""Cluster (``ops.vworkspace.io/v1alpha1``, cluster-scoped): this cluster's registration with the
control plane, its credentials and connectivity.

Expected to be a singleton, conventionally named after the cluster (docs/api.md, "Cluster").
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
from vworkspace.api.schema import field
from vworkspace.api.view import ObjectView, mapping

KIND = "Cluster"
DEFAULT_REGISTRATION_TOKEN_KEY = "registrationToken"


class Phase(enum.StrEnum):
    """Values of status.phase (a plain string on the wire, not an enum)."""

    PENDING = "Pending"
    REGISTERING = "Registering"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    ERROR = "Error"
    TERMINATING = "Terminating"


class ConditionType(enum.StrEnum):
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    AUTHENTICATED = "Authenticated"
    CONTROLLERS_HEALTHY = "ControllersHealthy"
    BUFFER_OVERFLOW = "BufferOverflow"


class Reason(enum.StrEnum):
    """Condition reasons the operator emits (the control plane depends on these strings)."""

    TOKEN_SECRET_MISSING = "TokenSecretMissing"
    REGISTRATION_PENDING = "RegistrationPending"
    REGISTRATION_FAILED = "RegistrationFailed"
    REGISTRATION_COMPLETE = "RegistrationComplete"
    CONTROL_PLANE_REACHABLE = "ControlPlaneReachable"
    ROTATION_FAILED = "RotationFailed"
    CREDENTIAL_MISSING = "CredentialMissing"
    ROUND_TRIP_OK = "RoundTripOK"
    CONNECTED = "Connected"
    CREDENTIAL_ACCEPTED = "CredentialAccepted"
    CONTROL_PLANE_UNREACHABLE = "ControlPlaneUnreachable"
    NO_RECENT_ROUND_TRIP = "NoRecentRoundTrip"
    CONTROL_PLANE_AUTHENTICATION_FAILED = "ControlPlaneAuthenticationFailed"
    EVENT_BUFFER_FULL = "EventBufferFull"
    BUFFER_DRAINED = "BufferDrained"
    CREDENTIAL_ROTATED = "CredentialRotated"


@attrs.frozen
class TokenSecretRef:
    """A key of a Secret in the operator's namespace."""

    name: str = field()
    """Name of the Secret (in the operator's namespace)."""
    key: str | None = field(default=None)
    """Data key holding the token; registrationToken when empty."""


@attrs.frozen
class Capabilities:
    """Reserved: capabilities of this cluster. Not reconciled."""

    flux: bool | None = field(default=None)
    """Flux is installed."""
    velero: bool | None = field(default=None)
    """Velero is installed."""


@attrs.frozen
class ClusterSpec:
    """How this cluster registers with the control plane."""

    cluster_id: str | None = field(default=None)
    """Identity issued by the control plane (a UUID). Filled from the registration answer
    when empty."""
    control_plane_endpoint: str | None = field(default=None, pattern=r"^https?://")
    """Base URL of the control plane (http:// or https://)."""
    control_plane_base_url: str | None = field(default=None)
    """Deprecated alias of controlPlaneEndpoint, used only when that is empty."""
    registration_token_secret_ref: TokenSecretRef | None = field(default=None)
    """Secret holding the one-time registration token."""
    registration_token: str | None = field(default=None)
    """Deprecated: the one-time registration token inline. Cleared after a successful exchange;
    prefer registrationTokenSecretRef."""
    capabilities: Capabilities | None = field(default=None)
    """Reserved; not reconciled."""
    rotate_credentials: bool | None = field(default=None)
    """Set true to rotate the agent's bearer token now; reset to false when done."""


@attrs.frozen
class CredentialStatus:
    """Where the agent credentials are and when they were issued."""

    secret_name: str | None = field(default=None)
    """Name of the credentials Secret."""
    secret_namespace: str | None = field(default=None)
    """Namespace of the credentials Secret."""
    registered_at: datetime.datetime | None = field(default=None)
    """When the registration token was exchanged."""
    registration_token_consumed: bool | None = field(default=None)
    """The registration token has been exchanged and cannot be used again."""


@attrs.frozen
class SecretRef:
    """A Secret by name and namespace."""

    name: str = field()
    """Name of the Secret."""
    namespace: str | None = field(default=None)
    """Namespace of the Secret."""


@attrs.frozen
class ClusterStatus:
    """Observed state, written by the operator only."""

    phase: str | None = field(default=None)
    """Pending, Registering, Connected, Disconnected, Error or Terminating."""
    conditions: tuple[Condition, ...] = field(default=(), list_map_keys=("type",))
    """Connected, Disconnected, Authenticated and BufferOverflow conditions."""
    last_heartbeat: datetime.datetime | None = field(default=None)
    """Last successful round trip to the control plane."""
    credential_status: CredentialStatus | None = field(default=None)
    """State of the agent credentials."""
    credentials_secret_ref: SecretRef | None = field(default=None)
    """Where the agent credentials were written."""
    observed_token: str | None = field(default=None)
    """First 16 hex characters of the SHA-256 of the last exchanged registration token."""


@attrs.frozen(kw_only=True)
class Cluster:
    """This cluster's registration with the control plane."""

    api_version: str = constants.OPS_API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ClusterSpec = ClusterSpec()
    status: ClusterStatus | None = None


RESOURCE = ResourceInfo(
    group=constants.OPS_GROUP,
    version=constants.VERSION,
    kind=KIND,
    plural="clusters",
    singular="cluster",
    scope=Scope.CLUSTER,
    short_names=("cluster",),
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Registration and connectivity phase"),
        condition_column("Connected", ConditionType.CONNECTED),
        AGE,
    ),
    spec_type=ClusterSpec,
    status_type=ClusterStatus,
    description=(
        "Cluster is this cluster's registration with the vWorkspace control plane: identity, "
        "credentials and connectivity. A singleton, conventionally named after the cluster."
    ),
    spec_required=False,
)


class ClusterView(ObjectView):
    """A stored Cluster, read-only (:mod:`vworkspace.api.view`)."""

    __slots__ = ()

    @property
    def cluster_id(self) -> str:
        return str(self.spec.get("clusterId") or "")

    @property
    def control_plane_endpoint(self) -> str:
        return str(self.spec.get("controlPlaneEndpoint") or "")

    @property
    def control_plane_base_url(self) -> str:
        return str(self.spec.get("controlPlaneBaseUrl") or "")

    @property
    def registration_token_secret_ref(self) -> Mapping[str, Any]:
        return mapping(self.spec.get("registrationTokenSecretRef"))

    @property
    def rotate_credentials(self) -> bool:
        return self.spec.get("rotateCredentials") is True

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

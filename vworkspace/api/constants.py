"""Every label, annotation, finalizer, group and well-known name the operator uses, in one place.

Values are wire-exact (docs/api.md, "Labels, annotations, finalizers"); changing one is a
breaking change.
"""

from typing import Final

# API groups and versions.
APPS_GROUP: Final = "apps.vworkspace.io"
OPS_GROUP: Final = "ops.vworkspace.io"
VERSION: Final = "v1alpha1"
APPS_API_VERSION: Final = f"{APPS_GROUP}/{VERSION}"
OPS_API_VERSION: Final = f"{OPS_GROUP}/{VERSION}"

# Finalizers.
APPLICATION_INSTANCE_FINALIZER: Final = "apps.vworkspace.io/finalizer"
OPERATION_FINALIZER: Final = "ops.vworkspace.io/finalizer"
CLUSTER_FINALIZER: Final = "ops.vworkspace.io/cluster-cleanup"

# Labels.
LABEL_MANAGED_BY: Final = "app.vworkspace.io/managed-by"
LABEL_CLUSTER_ID: Final = "app.vworkspace.io/cluster-id"
LABEL_APPLICATION_INSTANCE: Final = "app.vworkspace.io/application-instance"
LABEL_OPERATION: Final = "ops.vworkspace.io/operation"
LABEL_HOOK_NAME: Final = "ops.vworkspace.io/hook-name"
# The bare-key namespace label the agent writes when it creates a missing namespace.
LABEL_NAMESPACE_MANAGED_BY: Final = "managed-by"

# Values of the managed-by labels.
MANAGED_BY_CONTROL_PLANE: Final = "control-plane"  # objects applied by the Pull-mode agent
MANAGED_BY_OPERATOR: Final = "vworkspace-operator"  # engine-created and Flux objects
NAMESPACE_MANAGED_BY_VALUE: Final = "vworkspace"

# Annotations.
ANNOTATION_ALLOWED_TYPES: Final = "ops.vworkspace.io/allowed-types"
ANNOTATION_ROTATE_CREDENTIALS: Final = "ops.vworkspace.io/rotate-credentials"
ANNOTATION_HELM_HOOK: Final = "helm.sh/hook"
# The image a Migration (helmHookJob) runs when its parameters name none (docs/api.md).
ANNOTATION_MIGRATION_IMAGE: Final = "ops.vworkspace.io/migration-image"
ANNOTATION_REPORTED_MANAGED_STORAGE_KEY: Final = "vworkspace.io/reported-managed-storage-key"
ANNOTATION_REPORTED_MANAGED_STORAGE_FAILED: Final = "vworkspace.io/reported-managed-storage-failed"
ANNOTATION_REPORTED_SEAWEED_ENDPOINTS: Final = "vworkspace.io/reported-seaweed-endpoints"
SEAWEED_CATALOG_ID: Final = "seaweedfs"  # appRef.catalogId of native SeaweedFS instances
# Capability annotations on an ApplicationInstance: ops.vworkspace.io/<verb> = <engine>.
CAPABILITY_ANNOTATION_PREFIX: Final = "ops.vworkspace.io/"
CAPABILITY_VERBS: Final = ("backup", "restore", "upgrade", "migration", "runcommand", "runbook")

# Field managers.
FIELD_MANAGER_AGENT: Final = "vworkspace-agent"
FIELD_MANAGER_OPERATOR: Final = "vworkspace-operator"


def capability_annotation(verb: str) -> str:
    """The capability annotation key for an Operation verb, e.g. ``ops.vworkspace.io/backup``."""
    return CAPABILITY_ANNOTATION_PREFIX + verb

"""What the CRD generator needs to know about a kind beyond its spec and status models."""

from __future__ import annotations

import enum

import attrs


class Scope(enum.StrEnum):
    NAMESPACED = "Namespaced"
    CLUSTER = "Cluster"


@attrs.frozen
class PrinterColumn:
    """A column of ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str = ""


@attrs.frozen
class ResourceInfo:
    """Names, scope, columns and models of one custom resource kind."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    scope: Scope
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    spec_type: type
    status_type: type
    description: str
    spec_required: bool = True
    categories: tuple[str, ...] = ("vworkspace",)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def namespaced(self) -> bool:
        return self.scope is Scope.NAMESPACED


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


def condition_column(name: str, condition_type: str) -> PrinterColumn:
    return PrinterColumn(
        name,
        "string",
        f'.status.conditions[?(@.type=="{condition_type}")].status',
        description=f"Status of the {condition_type} condition",
    )

"""A Markdown field reference generated from the API models (docs/api-reference.md).

Generated, like the CRDs, so the reference a user reads cannot drift from the schema the API
server enforces; a test compares the committed file with what the models produce.
"""

from __future__ import annotations

from typing import Any

from vworkspace.api.crdgen import RESOURCES, openapi_schema
from vworkspace.api.resource import ResourceInfo

HEADER = (
    "<!-- Generated from vworkspace/api by `python -m vworkspace manifests api-reference`. "
    "Do not edit. -->\n"
)


def _type(prop: dict[str, Any]) -> str:
    kind = prop.get("type", "object")
    if kind == "array":
        return f"[]{_type(prop['items'])}"
    if prop.get("format"):
        return f"{kind} ({prop['format']})"
    if prop.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    return str(kind)


def _rules(prop: dict[str, Any]) -> str:
    rules = []
    if "enum" in prop:
        rules.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
    if "default" in prop:
        rules.append(f"default `{prop['default']}`")
    if "minLength" in prop:
        rules.append(f"min length {prop['minLength']}")
    if "maxLength" in prop:
        rules.append(f"max length {prop['maxLength']}")
    if "pattern" in prop:
        rules.append(f"pattern `{prop['pattern']}`")
    if "minimum" in prop:
        rules.append(f"minimum {prop['minimum']}")
    if "x-kubernetes-list-type" in prop:
        rules.append(f"list map keyed by `{', '.join(prop['x-kubernetes-list-map-keys'])}`")
    return "; ".join(rules)


def _rows(schema: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        description = prop.get("description", "").replace("|", "\\|")
        req = "yes" if name in required else ""
        rules = _rules(prop).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(prop)} | {req} | {rules} | {description} |")
        nested = prop["items"] if prop.get("type") == "array" else prop
        rows.extend(_rows(nested, path + ("[]" if prop.get("type") == "array" else "")))
    return rows


def _section(info: ResourceInfo) -> str:
    schema = openapi_schema(info)
    lines = [
        f"## {info.kind}",
        "",
        f"`{info.api_version}`, {info.scope.value.lower()}, plural `{info.plural}`, "
        f"short name{'s' if len(info.short_names) > 1 else ''} "
        + ", ".join(f"`{s}`" for s in info.short_names)
        + ".",
        "",
        info.description,
        "",
        "Printer columns: "
        + ", ".join(f"{c.name} (`{c.json_path}`)" for c in info.printer_columns)
        + ".",
        "",
        "| field | type | required | validation | description |",
        "|---|---|---|---|---|",
    ]
    for part in ("spec", "status"):
        lines.extend(
            _rows(
                {
                    "properties": {part: schema["properties"][part]},
                    "required": schema.get("required", []),
                },
                "",
            )
        )
    return "\n".join(line.replace("| `.", "| `", 1) for line in lines) + "\n"


def render() -> str:
    body = "\n".join(_section(info) for info in RESOURCES)
    return (
        HEADER
        + "# API field reference\n\nSee [api.md](api.md) for conditions, labels and deviations.\n\n"
        + body
    )

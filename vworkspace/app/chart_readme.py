"""The values table of charts/vworkspace/README.md, generated from the `# -- ` comments in
values.yaml (the helm-docs convention, without needing helm-docs).

A key is documented by the ``# -- text`` comment lines right above it; its default is the value
on that line (or ``{}``/``[]``/the nested block, shown as YAML). Keys without such a comment are
parents of documented keys and get no row. The README keeps everything outside the markers.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

BEGIN = "<!-- values-table:begin (python -m vworkspace manifests chart-readme) -->"
END = "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


def rows(values_text: str) -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML, description) for each documented key, in file order."""
    values = yaml.safe_load(values_text) or {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    found: list[tuple[str, str, str]] = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending.append(stripped[4:].strip())
            continue
        match = KEY.match(line)
        if match is None:
            if not stripped.startswith("#") and stripped and not stripped.startswith("-"):
                pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending:
            path = [k for _, k in stack]
            default: object = values
            for key in path:
                default = default[key]  # type: ignore[index]
            shown = yaml.safe_dump(default, default_flow_style=True).strip()
            shown = shown.removesuffix("\n...").removesuffix("...").strip()
            found.append((".".join(path), shown, " ".join(pending)))
            pending = []
    return found


def table(values_text: str) -> str:
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for key, default, text in rows(values_text):
        cell = default.replace("|", "\\|")
        lines.append(f"| `{key}` | `{cell}` | {text.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def render(readme_text: str, values_text: str) -> str:
    """README_TEXT with the table between the markers replaced."""
    if BEGIN not in readme_text or END not in readme_text:
        raise ValueError(f"the README has no {BEGIN} ... {END} markers")
    head, rest = readme_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(values_text)}\n{END}{tail}"


def update(chart: Path, *, check: bool) -> bool:
    """Rewrite CHART/README.md (or, with CHECK, only compare); True when it was up to date."""
    readme = chart / "README.md"
    current = readme.read_text()
    wanted = render(current, (chart / "values.yaml").read_text())
    if current == wanted:
        return True
    if not check:
        readme.write_text(wanted)
    return False

"""Figures of bench/bench_operators.py: the API server's own request counters, and the table.

Requests are counted black-box from kube-apiserver's ``/metrics`` (``apiserver_request_total``,
by verb, resource and subresource), so every contender is measured the same way. Server-side
apply shows as the verb ``APPLY``. The table gives, per figure, each contender's median with the
min-max spread over the runs, and the ratios vworkspace/kopf and vworkspace/bare.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The resources an instance's reconcile touches; the others are reported apart when nonzero.
MAIN = frozenset({"applicationinstances", "helmreleases", "helmrepositories"})
OTHER = frozenset({"configmaps", "events", "leases"})
WRITES = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE"})
VERB_ORDER = ("APPLY", "PATCH", "PUT", "POST", "DELETE", "GET", "LIST", "WATCH")
Key = tuple[str, str, str]  # (verb, resource, subresource)


def parse_requests(text: str) -> Counter[Key]:
    """``apiserver_request_total`` of the MAIN and OTHER resources, summed over codes."""
    counts: Counter[Key] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "")
            if resource in MAIN or resource in OTHER:
                key = (labels.get("verb", ""), resource, labels.get("subresource", ""))
                counts[key] += int(sample.value)
    return counts


def by_verb(delta: Mapping[Key, int], resources: Iterable[str]) -> dict[str, int]:
    wanted = frozenset(resources)
    verbs: Counter[str] = Counter()
    for (verb, resource, _), value in delta.items():
        if resource in wanted and value:
            verbs[verb] += value
    return {verb: verbs[verb] for verb in sorted(verbs, key=_verb_rank) if verbs[verb]}


def others(delta: Mapping[Key, int]) -> dict[str, dict[str, int]]:
    """The OTHER resources' requests, by resource then verb (only the nonzero ones). They
    include the control plane's own (kube-controller-manager renews its Lease every 2 s)."""
    found = {res: by_verb(delta, [res]) for res in sorted(OTHER)}
    return {res: verbs for res, verbs in found.items() if verbs}


def writes(delta: Mapping[Key, int]) -> int:
    return sum(v for (verb, res, _), v in delta.items() if res in MAIN and verb in WRITES)


def per_instance(verbs: Mapping[str, int], count: int) -> dict[str, float]:
    return {verb: round(value / count, 3) for verb, value in verbs.items()}


def _verb_rank(verb: str) -> int:
    return VERB_ORDER.index(verb) if verb in VERB_ORDER else len(VERB_ORDER)


def verb_line(verbs: Mapping[str, float]) -> str:
    """``writes 4 (APPLY 2, PATCH 1, PUT 1); reads: GET 0.1``"""
    write = [f"{v} {verbs[v]:g}" for v in sorted(verbs, key=_verb_rank) if v in WRITES]
    read = [f"{v} {verbs[v]:g}" for v in sorted(verbs, key=_verb_rank) if v not in WRITES]
    total = sum(value for verb, value in verbs.items() if verb in WRITES)
    return f"writes {total:g} ({', '.join(write) or 'none'}); reads: {', '.join(read) or 'none'}"


def samples(text: str) -> dict[str, float]:
    """Prometheus text exposition as {"name{labels}": value} (comments and blank lines left
    out; labels as written)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


# -- the table -----------------------------------------------------------------------------

# (scenario, figure key in the JSON line, label, unit)
FIGURES = (
    ("burst", "seconds", "burst: all reconciled", "s"),
    ("burst", "idle_rss_mib", "idle RSS", "MiB"),
    ("burst", "peak_rss_mib", "burst: peak RSS", "MiB"),
    ("burst", "rss_after_mib", "burst: RSS after, all cached", "MiB"),
    ("burst", "writes_per_instance", "burst: writes/instance", ""),
    ("burst", "cpu_seconds", "burst: operator CPU", "s"),
    ("restart", "seconds", "cold restart: all reconciled", "s"),
    ("restart", "peak_rss_mib", "cold restart: peak RSS", "MiB"),
    ("restart", "writes_per_instance", "cold restart: writes/instance", ""),
    ("restart", "cpu_seconds", "cold restart: operator CPU", "s"),
    ("warm", "writes", "warm restart: writes", ""),
    ("warm", "drained_seconds", "warm restart: last write after start", "s"),
    ("warm", "queue_drained_seconds", "warm restart: queue drained after start", "s"),
)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def cell(values: Sequence[float], unit: str = "") -> str:
    if not values:
        return "-"
    mid, low, high = spread(values)
    text = f"{mid:.1f}" if unit else f"{mid:g}"
    if len(values) > 1:
        text += f" [{low:.1f}-{high:.1f}]" if unit else f" [{low:g}-{high:g}]"
    return f"{text} {unit}".rstrip()


def ratio(mine: Sequence[float], theirs: Sequence[float]) -> str:
    if not mine or not theirs:
        return "-"
    other = statistics.median(theirs)
    if other == 0:
        return "-"
    return f"{statistics.median(mine) / other:.2f}x"


def collect(
    results: Iterable[Mapping[str, Any]], scenario: str, key: str
) -> dict[str, list[float]]:
    """contender -> the figure's values over the runs that succeeded."""
    found: dict[str, list[float]] = {}
    for line in results:
        value = line.get(key)
        if line.get("scenario") == scenario and "error" not in line and value is not None:
            found.setdefault(str(line["contender"]), []).append(float(value))
    return found


def table(results: Sequence[Mapping[str, Any]], contenders: Sequence[str]) -> str:
    """The medians, spreads and ratios as an aligned text table (Markdown-compatible)."""
    header = ["figure", *contenders]
    if "vworkspace" in contenders:
        header += [f"vworkspace/{c}" for c in contenders if c != "vworkspace"]
    rows = [header]
    for scenario, key, label, unit in FIGURES:
        found = collect(results, scenario, key)
        if not found:
            continue
        row = [label, *(cell(found.get(c, []), unit) for c in contenders)]
        if "vworkspace" in contenders:
            mine = found.get("vworkspace", [])
            row += [ratio(mine, found.get(c, [])) for c in contenders if c != "vworkspace"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)

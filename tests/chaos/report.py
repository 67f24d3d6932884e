"""The chaos tier's figures: one JSON line per scenario, and the table scripts/chaos-report.sh
prints from them.

Each scenario calls :func:`record` once, *before* it asserts, so a failing scenario still leaves
its figure. Lines go to the file named by ``VWORKSPACE_CHAOS_REPORT`` (when set) and always to
stdout (``pytest -s`` shows them). ``secrets`` lines (scenario f runs inside every other
scenario) are summed into one row.

``python -m tests.chaos.report FILE`` prints the table (Markdown, as in docs/operations.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPORT_ENV = "VWORKSPACE_CHAOS_REPORT"
SECRETS = "f. secrets stay secret"


def _emit(line: dict[str, Any]) -> None:
    text = json.dumps(line, sort_keys=True)
    print(f"chaos: {text}")
    target = os.environ.get(REPORT_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(text + "\n")


def record(
    *, scenario: str, load: str, faults: str, outcome: str, figure: str, passed: bool
) -> None:
    _emit(
        {
            "scenario": scenario,
            "load": load,
            "faults": faults,
            "outcome": outcome,
            "figure": figure,
            "passed": passed,
        }
    )


def record_secrets(
    *, within: str, log_bytes: int, events: int, helmreleases: int, instances: int, hits: int
) -> None:
    _emit(
        {
            "scenario": SECRETS,
            "within": within,
            "log_bytes": log_bytes,
            "events": events,
            "helmreleases": helmreleases,
            "instances": instances,
            "hits": hits,
            "passed": hits == 0,
        }
    )


def _secrets_row(lines: list[dict[str, Any]]) -> dict[str, Any]:
    hits = sum(int(line["hits"]) for line in lines)
    mib = sum(int(line["log_bytes"]) for line in lines) / (1024 * 1024)
    events = sum(int(line["events"]) for line in lines)
    hrs = sum(int(line["helmreleases"]) for line in lines)
    ais = sum(int(line.get("instances", 0)) for line in lines)
    within = ", ".join(sorted({str(line["within"])[:1] for line in lines}))
    return {
        "scenario": SECRETS,
        "load": f"planted in scenarios {within}",
        "faults": "a known agent token, a Secret value referenced by instances and a value "
        "sent encrypted to the cluster's key",
        "outcome": "found nowhere" if hits == 0 else f"found {hits} times",
        "figure": f"{mib:.1f} MiB of operator logs, {events} Events, {hrs} HelmRelease specs, "
        f"{ais} ApplicationInstance specs searched: {hits} hits",
        "passed": hits == 0,
    }


def table(lines: list[dict[str, Any]], *, expected: list[str] | None = None) -> str:
    rows = [line for line in lines if line["scenario"] != SECRETS]
    secrets = [line for line in lines if line["scenario"] == SECRETS]
    if secrets:
        rows.append(_secrets_row(secrets))
    seen = {row["scenario"] for row in rows}
    for missing in expected or []:
        if missing not in seen:
            rows.append(
                {
                    "scenario": missing,
                    "load": "",
                    "faults": "",
                    "outcome": "no figure: the test did not get as far as recording",
                    "figure": "",
                    "passed": False,
                }
            )
    rows.sort(key=lambda row: str(row["scenario"]))
    out = [
        "| scenario | load | faults injected | outcome | figure |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "pass" if row["passed"] else "FAIL"
        cells = [row["scenario"], row["load"], row["faults"], f"{verdict}: {row['outcome']}"]
        cells.append(row["figure"])
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


SCENARIOS = [
    "a. hostile answers",
    "b. control plane down",
    "c. SIGKILL under load",
    "d. API server restart and compaction",
    "e. fuzzed jobs",
    SECRETS,
    "g. leader killed",
]


def main(argv: list[str]) -> int:
    lines = []
    for text in Path(argv[0]).read_text(encoding="utf-8").splitlines():
        if text.strip():
            lines.append(json.loads(text))
    print(table(lines, expected=SCENARIOS))
    return 0 if lines and all(line["passed"] for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

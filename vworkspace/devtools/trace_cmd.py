"""`python -m vworkspace trace to-fixture TRACE --name NAME`: a trace becomes a replay fixture.

A trace (``run --trace-file``, vworkspace/kube/trace.py, docs/traces.md) is what one operator
process saw and did. A fixture (``tests/replay/NAME.ndjson``) is the same lines, trimmed and
normalized so that it is small, stable and replayable on the fake API
(vworkspace/testing/replay.py, tests/unit/test_replay_fixtures.py):

* only the last run of the file (after its last ``header`` line);
* with ``--namespace``, only the reconciles of objects in those namespaces (and cluster-scoped);
* only the events of our kinds and of the objects the kept reconciles read, fetched or wrote
  (a watch of Secrets or Leases the reconciles never looked at is noise), and of those only
  the states a reconcile could have seen (the last before each reconcile started, the versions
  the reconciles read, deletions) and the last state of each object; ``seq`` renumbered; a
  status write keeps only its body's ``status`` (all the API server takes from it);
* uids become ``uid-1``, ``uid-2``, ... wherever they appear whole (``uid`` fields, the
  Operation-uid label of a Backup) and resourceVersions their rank (``1``, ``2``, ...), in
  order of appearance and of value, so a re-recording diffs on what changed, not on etcd's
  counters;
* every timestamp is shifted by the same whole number of seconds so that the trace starts at
  the fake clock's start (``2026-01-01T00:16:40Z``, FakeClock's default); durations between
  them, which the reconcilers compute (grace periods), are unchanged;
* applied digests (``apps.vworkspace.io/applied-digest``, kube/applied.py) are recomputed
  after the uids they cover were renamed;
* strings of 1,000 characters or more in the recorded foreign objects (a helm-controller
  message that quotes a whole Deployment) are cut to their first 240 and a digest, wherever
  they occur, inside the operator's own messages too (:func:`_shorten`).

The recorded writes, statuses and outcomes are the fixture's expectations; the replay test's
``--update`` rewrites them from what the reconcilers do now.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.applied import DIGEST_ANNOTATION, with_digest
from vworkspace.kube.trace import status_only

OUR_RESOURCES = frozenset(
    {
        "applicationinstances.apps.vworkspace.io",
        "operations.ops.vworkspace.io",
        "clusters.ops.vworkspace.io",
    }
)
# FakeClock's epoch and default start (kube/clock.py): a fixture's time 0.
REPLAY_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
REPLAY_START = 1000.0
DEFAULT_DIR = Path("tests/replay")
LONG_STRING = 1000  # characters: longer strings from the world are cut (_shorten)
LONG_PREFIX = 240
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def read_trace(lines: Iterable[str]) -> list[JsonObj]:
    """The lines of the last run in a trace (a file may hold several processes' runs); an
    unfinished last line (the process was killed while writing it) is left out."""
    run: list[JsonObj] = []
    texts = [text for text in lines if text.strip()]
    for number, text in enumerate(texts, 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError as err:
            if number == len(texts) and not text.endswith("\n"):
                break  # the last line of a process killed while writing it
            raise ValueError(f"line {number}: not JSON ({err})") from None
        if not isinstance(line, dict) or "t" not in line:
            raise ValueError(f"line {number}: not a trace line")
        if line["t"] == "header":
            run = []
        run.append(line)
    if not run or run[0]["t"] != "header":
        raise ValueError("no header line: not a trace written by run --trace-file")
    return run


def _object_key(obj: JsonObj) -> str:
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name")
    return f"{ns}/{name}" if ns else str(name)


def _in_namespaces(key: str, namespaces: frozenset[str]) -> bool:
    return not namespaces or "/" not in key or key.split("/", 1)[0] in namespaces


def trim(run: list[JsonObj], *, namespaces: frozenset[str] = frozenset()) -> list[JsonObj]:
    """Keep the reconciles (in ``namespaces``) and the events that matter to them."""
    header, body = run[0], run[1:]
    reconciles = [
        line
        for line in body
        if line["t"] == "reconcile" and _in_namespaces(line["key"], namespaces)
    ]
    wanted: set[tuple[str, str]] = set()
    for rec in reconciles:
        wanted.update((r["resource"], r["key"]) for r in rec.get("reads", []))
        wanted.update((f["resource"], f["key"]) for f in rec.get("fetched", []))
        wanted.update((w["resource"], w["key"]) for w in rec.get("writes", []))
    relevant = []
    for line in body:
        if line["t"] != "event":
            continue
        key = _object_key(line["object"])
        ours = line["resource"] in OUR_RESOURCES and _in_namespaces(key, namespaces)
        if ours or (line["resource"], key) in wanted:
            relevant.append(line)
    needed = _needed(relevant, reconciles)
    kept: list[JsonObj] = []
    renumber: list[tuple[int, int]] = []  # (old seq, new seq)
    for line in relevant:
        if id(line) in needed:
            renumber.append((line["seq"], len(kept) + 1))
            kept.append({**line, "seq": len(kept) + 1})
    reconciles = [{**rec, "writes": [status_only(w) for w in rec["writes"]]} for rec in reconciles]
    out = [header]
    events = iter(kept)
    pending = next(events, None)
    for rec in sorted(reconciles, key=lambda r: r["seq"]):
        new_seq = sum(1 for old, _ in renumber if old <= rec["seq"])
        while pending is not None and pending["seq"] <= new_seq:
            out.append(pending)
            pending = next(events, None)
        out.append({**rec, "seq": new_seq})
    while pending is not None:
        out.append(pending)
        pending = next(events, None)
    return out


def _needed(events: list[JsonObj], reconciles: list[JsonObj]) -> set[int]:
    """The events a replay needs (their ``id``): each object's last state before each reconcile,
    the states the reconciles read, every deletion, and the last state of each object (how the
    run ended); a state superseded before any reconcile started never reached a decision."""
    starts = sorted(rec["seq"] for rec in reconciles)
    read = {
        (ref["resource"], ref["key"], ref.get(field, ""))
        for rec in reconciles
        for ref in rec.get("reads", [])
        for field in ("resourceVersion", "lastResourceVersion")
    }
    last: dict[tuple[str, str], JsonObj] = {}
    needed: set[int] = set()
    pending = iter(starts)
    boundary = next(pending, None)
    for event in events:
        while boundary is not None and event["seq"] > boundary:
            needed.update(id(e) for e in last.values())  # the world this reconcile started in
            boundary = next(pending, None)
        key = (event["resource"], _object_key(event["object"]))
        meta = event["object"].get("metadata") or {}
        if event["type"] == "DELETED" or (*key, str(meta.get("resourceVersion", ""))) in read:
            needed.add(id(event))
        last[key] = event
    needed.update(id(e) for e in last.values())  # how the run left each object
    return needed


def _walk(value: Any, visit: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, visit, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, visit, key) for v in value]
    return visit(key, value)


def _collect(value: Any, field: str, into: list[Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == field and isinstance(v, str):
                into.append(v)
            else:
                _collect(v, field, into)
    elif isinstance(value, list):
        for v in value:
            _collect(v, field, into)


def normalize(lines: list[JsonObj]) -> list[JsonObj]:
    """uids, resourceVersions and timestamps as the module docstring says."""
    uids: list[Any] = []
    versions: list[Any] = []
    _collect(lines, "uid", uids)
    _collect(lines, "resourceVersion", versions)
    _collect(lines, "lastResourceVersion", versions)
    uid_map: dict[str, str] = {}
    for uid in uids:
        uid_map.setdefault(uid, f"uid-{len(uid_map) + 1}")
    numeric = sorted({int(v) for v in versions if v.isdigit()})
    rv_map = {str(v): str(rank) for rank, v in enumerate(numeric, 1)}
    start = _parse_time(lines[0]["time"])
    target = REPLAY_EPOCH + datetime.timedelta(seconds=REPLAY_START)
    shift = datetime.timedelta(seconds=int((start - target).total_seconds()))

    def visit(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value in uid_map:  # a uid field, or a label or name that carries one
            return uid_map[value]
        if key in ("resourceVersion", "lastResourceVersion"):
            return rv_map.get(value, value)
        match = _TIME.match(value)
        if match:
            moved = datetime.datetime.strptime(match[1], _TIME_FORMAT) - shift
            return moved.strftime(_TIME_FORMAT) + (match[2] or "") + match[3]
        return value

    result: list[JsonObj] = _walk(lines, visit)
    return _shorten(_restamp_digests(result))


def _shorten(lines: list[JsonObj], limit: int = LONG_STRING) -> list[JsonObj]:
    """Long strings the world handed the operator (a helm-controller message quoting a whole
    Deployment runs to 6 KB, and the operator copies it into conditions, Events and reports)
    are cut to a prefix and a digest *wherever they occur*, inside longer strings too: a message
    the operator builds around one ("UpgradeFailed: <it>") then stays what the replay builds
    around the cut one, and the fixture stays small."""
    sources: set[str] = set()
    for line in lines:
        # The world's strings, not the operator's own objects: those hold the operator's
        # messages built around them, which must be cut where the source occurs.
        if line["t"] == "event" and line["resource"] not in OUR_RESOURCES:
            _collect_long(line["object"], limit, sources)
    if not sources:
        return lines
    cut = {text: _cut(text) for text in sorted(sources, key=len, reverse=True)}

    def visit(_: str, value: Any) -> Any:
        if not isinstance(value, str) or len(value) < limit:
            return value
        for text, short in cut.items():
            if text in value:
                value = value.replace(text, short)
                continue
            # Cut short by the operator (an Event's note is at most 1,024 characters, "..."
            # at the end): the tail that is a prefix of the source becomes the cut source, as
            # in the replay.
            start = value.find(text[:LONG_PREFIX])
            tail = value[start:].removesuffix("...")
            if start >= 0 and text.startswith(tail):
                value = value[:start] + short
        return value

    result: list[JsonObj] = _walk(lines, visit)
    return result


def _collect_long(value: Any, limit: int, into: set[str]) -> None:
    if isinstance(value, str) and len(value) >= limit:
        into.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_long(item, limit, into)
    elif isinstance(value, list):
        for item in value:
            _collect_long(item, limit, into)


def _cut(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{text[:LONG_PREFIX]}...[{len(text)} chars, sha256 {digest}]"


def _restamp_digests(lines: list[JsonObj]) -> list[JsonObj]:
    """Applied digests (kube/applied.py) hash what was applied, owner uids included: after the
    uids are renamed, each is recomputed from its write's body and replaced everywhere (the
    objects of later events carry it), so that a replay finds the children up to date exactly
    when the recorded operator did."""
    renamed: dict[str, str] = {}
    for line in lines:
        for write in line.get("writes", []) if line["t"] == "reconcile" else []:
            body = write.get("body")
            old = ((body or {}).get("metadata") or {}).get("annotations", {}).get(DIGEST_ANNOTATION)
            if isinstance(old, str):
                fresh = with_digest(body)["metadata"]["annotations"][DIGEST_ANNOTATION]
                renamed[old] = fresh
    if not renamed:
        return lines
    result: list[JsonObj] = _walk(
        lines, lambda _, v: renamed.get(v, v) if isinstance(v, str) else v
    )
    return result


def _parse_time(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def to_fixture(
    trace: Iterable[str], *, name: str, source: str, namespaces: frozenset[str] = frozenset()
) -> list[JsonObj]:
    """The fixture's lines from a trace's lines."""
    lines = normalize(trim(read_trace(trace), namespaces=namespaces))
    lines[0] = {**lines[0], "fixture": name, "source": source}
    return lines


def dump(lines: list[JsonObj]) -> str:
    return "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)


def add_parser(commands: Any, *, summary: str) -> None:
    trace = commands.add_parser(
        "trace", help=summary, description="Event traces (run --trace-file, docs/traces.md)."
    )
    sub = trace.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    conv = sub.add_parser(
        "to-fixture",
        help="turn a trace into a replay fixture (tests/replay/NAME.ndjson)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conv.add_argument("trace", type=Path, metavar="TRACE", help="the file run --trace-file wrote")
    conv.add_argument("--name", required=True, help="the fixture's name: [a-z0-9-]+")
    conv.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, help="(default: %(default)s)")
    conv.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="keep only the reconciles of objects in NS (repeatable; default: all)",
    )
    conv.add_argument("--source", default="", help="a line saying how the trace was recorded")
    trace.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.name):
        print(f"trace to-fixture: --name {args.name!r} must match [a-z0-9-]+", file=sys.stderr)
        return 2
    try:
        with args.trace.open(encoding="utf-8") as trace:
            lines = to_fixture(
                trace,
                name=args.name,
                source=args.source or str(args.trace),
                namespaces=frozenset(args.namespace),
            )
    except (OSError, ValueError) as err:
        print(f"trace to-fixture: {args.trace}: {err}", file=sys.stderr)
        return 1
    out = args.out_dir / f"{args.name}.ndjson"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump(lines), encoding="utf-8")
    reconciles = sum(1 for line in lines if line["t"] == "reconcile")
    print(f"{out}: {len(lines) - 1 - reconciles} events, {reconciles} reconciles")
    return 0

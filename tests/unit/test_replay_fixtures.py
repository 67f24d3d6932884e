"""Every fixture in tests/replay/ replayed through today's reconcilers (vworkspace/testing/replay.py).

A fixture is a trace the operator wrote against the real test environment (``run
--trace-file``), turned into a fixture by ``python -m vworkspace trace to-fixture``
(scripts/record-replay-fixtures.sh re-records them; docs/traces.md). A reconciler change that
alters what the operator writes, the status it commits or the requeue it asks for makes the
fixture's test fail with the reconcile and the field that differ. When the change is intended,
``VWORKSPACE_UPDATE_REPLAY=1 pytest tests/unit/test_replay_fixtures.py`` rewrites the
expectations (review the diff of tests/replay/ like code).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

from vworkspace.controllers.operation import OperationReconciler
from vworkspace.engines.base import Observation, State
from vworkspace.testing.replay import load, replay

FIXTURES = Path(__file__).resolve().parents[1] / "replay"
UPDATE = os.environ.get("VWORKSPACE_UPDATE_REPLAY", "") == "1"


def fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*.ndjson"))


def test_there_are_fixtures_of_an_install_a_failed_upgrade_and_a_backup() -> None:
    names = {path.stem for path in fixtures()}
    assert {"install-ready", "upgrade-failed", "backup-succeeded"} <= names, names
    for path in fixtures():
        assert path.stat().st_size < 200_000, f"{path} is over 200 KB: trim it"


@pytest.mark.parametrize("path", fixtures(), ids=lambda p: p.stem)
async def test_the_reconcilers_do_what_the_recording_did(path: Path) -> None:
    lines = load(path)
    assert sum(1 for line in lines if line["t"] == "reconcile") > 0, f"{path} holds no reconcile"
    mismatches = await replay(path, update=UPDATE)
    assert not mismatches, "\n".join(str(m) for m in mismatches)


async def test_a_reconciler_bug_makes_the_backup_fixture_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deliberate bug: the Operation reconciler records an engine's success as a failure.
    (If the reconciler's verdict step is renamed, adapt the one patched method here.)"""
    finish = OperationReconciler._finish

    def inverted(self: OperationReconciler, *args: Any, **kw: Any) -> Any:
        # Whatever the verdict step's signature: the engine's Observation it is given is turned
        # from success into failure; sync, returning what the original returns (a coroutine if
        # it is async).
        args = tuple(
            attrs.evolve(a, state=State.FAILED)
            if isinstance(a, Observation) and a.state == State.SUCCEEDED
            else a
            for a in args
        )
        return finish(self, *args, **kw)

    monkeypatch.setattr(OperationReconciler, "_finish", inverted)
    copy = tmp_path / "backup-succeeded.ndjson"
    shutil.copy(FIXTURES / "backup-succeeded.ndjson", copy)
    mismatches = await replay(copy)
    assert mismatches, "the replay did not notice a Succeeded Operation recorded as Failed"
    assert {m.controller for m in mismatches} == {"operation"}
    assert "status" in {m.field for m in mismatches}
    status = next(m for m in mismatches if m.field == "status")
    assert status.expected["phase"] == "Succeeded"
    assert status.actual["phase"] == "Failed"


async def test_update_rewrites_the_expectations_from_the_replay(tmp_path: Path) -> None:
    """A fixture whose expectation is out of date fails; ``update`` rewrites it from what the
    reconcilers do, after which it replays clean."""
    lines = load(FIXTURES / "install-ready.ndjson")
    stale = next(line for line in lines if line["t"] == "reconcile" and line["status"])
    stale["status"] = {**stale["status"], "observedGeneration": 99}
    copy = tmp_path / "install-ready.ndjson"
    copy.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (mismatch,) = await replay(copy)
    assert (mismatch.field, mismatch.expected["observedGeneration"]) == ("status", 99)
    assert await replay(copy, update=True) == [mismatch]
    assert await replay(copy) == []
    rewritten = next(line for line in load(copy) if line.get("id") == stale["id"])
    assert rewritten["status"]["observedGeneration"] == mismatch.actual["observedGeneration"]

"""Our kwok stages: a cache built from an older checkout is named, not run (kwok.stale_stages).
What the stages do to Pods is checked against kwok itself in tests/real/test_nodes.py and
tests/real/test_jobs.py."""

from __future__ import annotations

from pathlib import Path

from vworkspace.testing.kwok import CHECKOUT_STAGES, SHELL_EXIT_STAGE, stale_stages


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_stages_copied_by_the_build_are_current(tmp_path: Path) -> None:
    ours = tmp_path / "checkout"
    _write(ours / "pod-fail.yaml", "a")
    _write(ours / "pod-shell-exit.yaml", "b")
    cache = tmp_path / "cache"
    installed = [
        _write(cache / "kwok-pod-fast-pod-complete.yaml", "kwok's own"),
        _write(cache / "vworkspace-pod-fail.yaml", "a"),
        _write(cache / "vworkspace-pod-shell-exit.yaml", "b"),
    ]
    assert stale_stages(installed, ours) == []


def test_a_missing_or_changed_stage_is_named(tmp_path: Path) -> None:
    ours = tmp_path / "checkout"
    _write(ours / "pod-fail.yaml", "a")
    _write(ours / "pod-shell-exit.yaml", "b, newer")
    installed = [_write(tmp_path / "cache" / "vworkspace-pod-shell-exit.yaml", "b")]
    assert stale_stages(installed, ours) == ["pod-fail.yaml", "pod-shell-exit.yaml"]


def test_outside_a_checkout_nothing_is_compared(tmp_path: Path) -> None:
    assert stale_stages([], tmp_path / "no-checkout") == []


def test_the_shell_exit_stage_is_in_the_checkout() -> None:
    assert (CHECKOUT_STAGES / SHELL_EXIT_STAGE).is_file()

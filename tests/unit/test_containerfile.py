"""The Containerfile's invariants that matter, checked without building it (no container engine
is needed): a numeric non-root user, the entrypoint, and a lock file that pins every runtime
dependency of pyproject.toml to an exact, hash-checked version."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
LOCK = ROOT / "requirements" / "runtime.lock"
IGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Containerfile ends inside a continuation line"
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(CONTAINERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            env.update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args))
    return {k: v.strip('"') for k, v in env.items()}


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned requirement text, its --hash values)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if line.startswith("--hash="):
            assert current, f"a hash before any requirement: {raw!r}"
            pins[current][1].append(line.removeprefix("--hash="))
            continue
        assert not line.startswith("-"), f"unexpected option in the lock: {raw!r}"
        requirement = Requirement(line)
        current = canonicalize_name(requirement.name)
        assert current not in pins, f"{requirement.name} is locked twice"
        pins[current] = (line, [])
    return pins


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER, so it would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user.isdigit(), f"USER {users[-1]} is not numeric"
    assert int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    assert int(user) == 65532  # what manifests/ runs as (runAsUser)


def test_the_entrypoint_is_the_operator_cli_and_the_default_command_is_run() -> None:
    stage = final_stage()
    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    commands = [args for keyword, args in stage if keyword == "CMD"]
    # The exec (JSON) form, so that SIGTERM reaches Python and not a shell.
    assert json.loads(entrypoints[-1]) == ["python", "-m", "vworkspace"]
    assert json.loads(commands[-1]) == ["run"]


def test_the_runtime_environment() -> None:
    env = env_of(final_stage())
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONSAFEPATH"] == "1"


def test_both_stages_use_the_python_that_pyproject_requires() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    default = next(args for keyword, args in steps if keyword == "ARG" and "PYTHON_IMAGE" in args)
    image = default.split("=", 1)[1]
    match = re.fullmatch(r"python:(\d+\.\d+)-slim", image)
    assert match, image
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(match.group(1)) in SpecifierSet(requires)
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert len(stages) == 2
    assert all(s.startswith("${PYTHON_IMAGE}") for s in stages)


def test_dependencies_come_only_from_the_hash_checked_lock() -> None:
    text = " ".join(args for keyword, args in instructions(CONTAINERFILE.read_text()))
    assert "--require-hashes" in text
    assert "-r requirements/runtime.lock" in text
    installs = [
        args for keyword, args in final_stage() if keyword == "RUN" and "pip install" in args
    ]
    assert installs
    assert all("--no-index" in args for args in installs)


def test_every_lock_line_is_an_exact_pin_with_hashes() -> None:
    pins = lock_pins()
    assert len(pins) >= 10
    for name, (line, hashes) in pins.items():
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{line} is not pinned"
        assert specifiers[0].operator == "==", f"{line} is not pinned"
        assert "*" not in specifiers[0].version, f"{line} is not an exact version"
        assert not requirement.url, line
        assert not requirement.extras, line
        assert hashes, f"{name} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_covers_every_runtime_dependency_of_pyproject() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = lock_pins()
    missing, outside = [], []
    for text in dependencies:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            missing.append(requirement.name)
            continue
        version = Version(next(iter(Requirement(pins[name][0]).specifier)).version)
        if not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{pins[name][0]} does not satisfy {text}")
    fix = "regenerate requirements/runtime.lock with the pip-compile command in its header"
    assert not missing, f"not in the lock: {missing}; {fix}"
    assert not outside, f"{outside}; {fix}"


def test_the_lock_holds_no_test_or_dev_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    extras = {
        canonicalize_name(Requirement(d).name)
        for group in project["optional-dependencies"].values()
        for d in group
    }
    assert not (set(lock_pins()) & (extras - runtime))


@pytest.mark.parametrize("path", [".git", ".venv", ".tox", "tests", "e2e", "__pycache__"])
def test_the_build_context_leaves_out(path: str) -> None:
    # An allow-list: everything is ignored, then only what the build needs is let back in.
    rules = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = [r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")]
    assert not any(a == path or a.startswith(f"{path}/") for a in allowed)
    copies = " ".join(args for keyword, args in instructions(CONTAINERFILE.read_text()))
    for source in ("pyproject.toml", "README.md", "requirements/runtime.lock", "vworkspace"):
        assert source in allowed
        assert source in copies

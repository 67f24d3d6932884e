"""Where vworkspace.testing.crds looks for the upstream CRDs: the variable, else the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from vworkspace.testing.crds import (
    THIRD_PARTY_ENV,
    ThirdPartyCrdsError,
    ensure_third_party_crds,
    third_party_dir,
)


def test_the_variable_wins_over_the_cache(tmp_path: Path) -> None:
    env = {THIRD_PARTY_ENV: str(tmp_path), "VWORKSPACE_TESTENV_CACHE": "/elsewhere"}
    assert third_party_dir(env) == tmp_path
    assert ensure_third_party_crds(env) == tmp_path


def test_the_cache_is_next_to_the_binaries() -> None:
    assert third_party_dir({"VWORKSPACE_TESTENV_CACHE": "/c"}) == Path("/c/crds")
    assert third_party_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/vworkspace/testenv/crds")
    assert third_party_dir({"HOME": "/h"}) == Path("/h/.cache/vworkspace/testenv/crds")


def test_a_variable_naming_no_directory_is_an_error_that_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ThirdPartyCrdsError, match=f"not at {missing}"):
        ensure_third_party_crds({THIRD_PARTY_ENV: str(missing)})


def test_without_go_and_without_a_cache_the_error_says_how_to_get_them(tmp_path: Path) -> None:
    env = {"VWORKSPACE_TESTENV_CACHE": str(tmp_path), "PATH": str(tmp_path)}  # no go here
    with pytest.raises(ThirdPartyCrdsError, match=r"fetch-third-party-crds\.sh"):
        ensure_third_party_crds(env)

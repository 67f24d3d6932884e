"""Hostile names shared by the path-confinement tests (issue 24, F1), and an oracle for what a
valid name is, written apart from api/names.py from the Kubernetes rules themselves. Imports
nothing that is new with the fix, so the regression tests built on it also run (and fail) on the
code from before it."""

from __future__ import annotations

import re
from urllib.parse import unquote

from hypothesis import strategies as st

# The reproductions of issue 24.
HELMRELEASE_NS = (
    "team-a/../../../../../apis/helm.toolkit.fluxcd.io/v2/namespaces/prod/helmreleases/db#"
)
SEAWEED_NAME = "../../../seaweed.seaweedfs.com/v1/namespaces/storage/seaweeds/main"

LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

TRICKS = [
    "..",
    ".",
    "",
    "a/b",
    "a/../b",
    "%2e%2e",
    "%2F",
    "a#",
    "a?b=c",
    "x%00",
    "\uff41",  # a full-width look-alike of "a"
    "team-a/../prod",
    HELMRELEASE_NS,
    SEAWEED_NAME,
    "a" * 64,
    "a" * 300,
    "\\..\\",
    " ",
    "a\nb",
]
# Text of every kind: the tricks, valid names, and arbitrary unicode (slashes and dots included).
texts = st.one_of(
    st.sampled_from(TRICKS),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True),
    st.text(alphabet=st.sampled_from("a-./%#?\\ 2eF"), max_size=12),
    st.text(max_size=20),
)


def valid_namespace(value: str) -> bool:
    return len(value) <= 63 and LABEL.fullmatch(value) is not None


def valid_path_name(value: str) -> bool:
    return value not in ("", ".", "..") and "/" not in value and "%" not in value


def wire_segments(raw_path: str) -> list[str]:
    """The segments a server splits a raw path into, each decoded once (as Go's net/url)."""
    assert raw_path.startswith("/")
    return [unquote(segment) for segment in raw_path[1:].split("/")]

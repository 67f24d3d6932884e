"""A REST path as a tuple of segments, so that no name can change the path's shape (issue 24, F1).

Before this, paths were strings joined from names, and aiohttp's URL parser resolved ``..`` and
cut at ``#``/``?``: a namespace ``team-a/../../../apis/.../helmreleases/db#`` sent a DELETE to
another kind in another namespace. Now:

* a path is an :class:`ApiPath`: segments, each non-empty, never ``.`` or ``..``, never holding
  ``/`` (checked when the path is made, so a path that exists is well-formed);
* the transport writes each segment percent-encoded (``quote(segment, safe="")``: ``?``, ``#``,
  ``%``, spaces and non-ASCII all escaped) and hands the URL to aiohttp as already encoded, so
  neither aiohttp nor yarl re-normalises it.

The segment rule is deliberately about shape only; whether a segment is a valid *name* is
checked where names are known (kube/rest/resources.py with api/names.py). Refusing ``/`` rather than
escaping it matters: the API server decodes ``%2F`` back to ``/`` before it splits the path.
"""

from __future__ import annotations

from urllib.parse import quote

import attrs


def _segment_problem(segment: object) -> str | None:
    if not isinstance(segment, str) or not segment:
        return "must be a non-empty string"
    if segment in (".", ".."):
        return f"may not be {segment!r}"
    if "/" in segment:
        return "may not contain '/'"
    return None


def _check_segments(_: object, __: object, segments: tuple[str, ...]) -> None:
    if not isinstance(segments, tuple):
        raise TypeError(f"path segments must be a tuple, got {type(segments).__name__}")
    for index, segment in enumerate(segments):
        problem = _segment_problem(segment)
        if problem is not None:
            raise ValueError(f"path segment {index} {segment!r}: {problem}")


@attrs.frozen
class ApiPath:
    """A path on the API server, as segments; ``str()`` is the encoded form sent on the wire."""

    segments: tuple[str, ...] = attrs.field(validator=_check_segments)

    @classmethod
    def of(cls, *segments: str) -> ApiPath:
        return cls(segments)

    @classmethod
    def parse(cls, text: str) -> ApiPath:
        """A path written in code (``/apis/authentication.k8s.io/v1/tokenreviews``), never one
        that holds data: split at ``/``; empty, ``.`` and ``..`` segments are refused."""
        if not text.startswith("/"):
            raise ValueError(f"path {text!r} must start with '/'")
        return cls(tuple(text[1:].split("/")) if text != "/" else ())

    def child(self, *segments: str) -> ApiPath:
        return ApiPath((*self.segments, *segments))

    @property
    def encoded(self) -> str:
        """Every segment percent-encoded (RFC 3986 unreserved characters kept)."""
        return "/" + "/".join(quote(segment, safe="") for segment in self.segments)

    def __str__(self) -> str:
        return self.encoded

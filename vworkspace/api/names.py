"""Kubernetes object names, checked as the API server's apimachinery checks them (issue 24, F1).

A name or namespace that reaches a REST path decides which object a request touches, so every
one of them is checked here before a path is built (kube/rest/paths.py, kube/rest/resources.py):

* **namespaces** are DNS-1123 labels (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63
  characters), as ``ValidateNamespaceName`` requires: no ``/``, no ``.``, so no ``..``;
* **most object names** are DNS-1123 subdomains (labels joined by ``.``, at most 253
  characters), as ``NameIsDNSSubdomain`` requires; the applier checks a job's names this way;
* **any name in a path** must at least be a valid path segment (``IsValidPathSegmentName``: not
  ``.`` or ``..``, no ``/`` or ``%``). The client applies only this weaker rule to names, because
  it also reads names the operator did not choose (a Secret named in a spec): a name that merely
  does not exist is the API server's 404 to report, a name that would change the path's shape
  is refused here.

Each failure is an :class:`InvalidNameError` whose message names the field
(``metadata.namespace "team-a/../prod" is not a valid namespace name: ...``), so a job result or
a status condition can carry it as is. The messages follow apimachinery's wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# A value shown in an error is cut here: a 1 MiB name must not become a 1 MiB message.
_SHOWN_MAX = 80

LABEL_HINT = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
)
SUBDOMAIN_HINT = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)


class InvalidNameError(ValueError):
    """A name or namespace that is not the Kubernetes name it must be; ``field`` names where it
    came from (``metadata.namespace``, ``name``, ``spec.release.namespace``)."""

    def __init__(self, message: str, *, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value

    @classmethod
    def of(cls, *, field: str, value: object, what: str, problem: str) -> InvalidNameError:
        """``{field} "{value}" is not a valid {what}: {problem}``."""
        return cls(
            f"{field} {shown(value)} is not a valid {what}: {problem}", field=field, value=value
        )


def shown(value: object) -> str:
    """``value`` quoted for a message: JSON quoting (control characters escaped), cut short."""
    if not isinstance(value, str):
        return "missing" if value is None else f"({type(value).__name__})"
    text = json.dumps(value[:_SHOWN_MAX], ensure_ascii=False)
    return text if len(value) <= _SHOWN_MAX else f'{text[:-1]}..." ({len(value)} characters)'


def label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 label, or None if it is one (``IsDNS1123Label``)."""
    if len(value) > DNS1123_LABEL_MAX:
        return f"must be no more than {DNS1123_LABEL_MAX} characters"
    if not _LABEL_RE.fullmatch(value):
        return LABEL_HINT
    return None


def subdomain_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 subdomain, or None (``IsDNS1123Subdomain``)."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
    if not _SUBDOMAIN_RE.fullmatch(value):
        return SUBDOMAIN_HINT
    return None


def path_segment_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name in a REST path, or None (``IsValidPathSegmentName``)."""
    if value in (".", ".."):
        return f"may not be {value!r}"
    for bad in ("/", "%"):
        if bad in value:
            return f"may not contain {bad!r}"
    return None


def check_namespace(value: object, *, field: str) -> str:
    """``value`` if it is a valid namespace name (a DNS-1123 label), else InvalidNameError."""
    return _check(value, field=field, what="namespace name", problem=label_problem)


def check_label(value: object, *, field: str, what: str = "name") -> str:
    """``value`` if it is a DNS-1123 label (e.g. a Namespace's own name), else
    InvalidNameError."""
    return _check(value, field=field, what=what, problem=label_problem)


def check_subdomain(value: object, *, field: str, what: str = "name") -> str:
    """``value`` if it is a DNS-1123 subdomain (most object names), else InvalidNameError."""
    return _check(value, field=field, what=what, problem=subdomain_problem)


def check_path_segment(value: object, *, field: str, what: str = "name") -> str:
    """``value`` if it may stand as a name in a REST path, else InvalidNameError."""
    return _check(value, field=field, what=what, problem=path_segment_problem)


def is_namespace_name(value: object) -> bool:
    return isinstance(value, str) and label_problem(value) is None


def _check(value: object, *, field: str, what: str, problem: Callable[[str], str | None]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidNameError.of(
            field=field, value=value, what=what, problem="must be a non-empty string"
        )
    found = problem(value)
    if found is not None:
        raise InvalidNameError.of(field=field, value=value, what=what, problem=found)
    return value

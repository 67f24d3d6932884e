"""Waiting for a CRD to be Established tolerates the states a fresh CRD passes through."""

from __future__ import annotations

from typing import Any

import pytest

from vworkspace.testing.crds import _established


class Answers:
    """A RestClient stand-in that answers GET with the given object."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def get(self, path: str) -> dict[str, Any]:
        return self.obj


@pytest.mark.parametrize(
    "crd",
    [
        {},
        {"status": None},
        {"status": {"conditions": None}},  # seen in CI right after the create
        {"status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Established", "status": "False"}]}},
    ],
)
def test_not_yet_established(crd: dict[str, Any]) -> None:
    assert _established(Answers(crd), "widgets.example.com") is False  # type: ignore[arg-type]


def test_established() -> None:
    crd = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    assert _established(Answers(crd), "widgets.example.com") is True  # type: ignore[arg-type]

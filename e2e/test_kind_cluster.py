"""The kind cluster comes up and answers; the operator's in-cluster tests join it later."""

from __future__ import annotations

from typing import Any


def test_kind_cluster_is_ready(kind_cluster: Any) -> None:
    ready = kind_cluster.kubectl("get", "--raw", "/readyz")
    assert ready.strip() == "ok"

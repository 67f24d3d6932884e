"""The one alias for JSON as it comes off the wire.

Only code that truly handles arbitrary JSON uses it (the REST client, the informer's store, the
agent's job payloads, server-side apply bodies); reconcilers and engines read our own kinds
through the typed views of :mod:`vworkspace.api.view`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonObj: TypeAlias = dict[str, Any]

__all__ = ["JsonObj"]

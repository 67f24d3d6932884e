"""Decoding JSON from peers (the API server, the control plane, an exec plugin) without letting
an odd document raise something the caller does not catch.

:func:`json.loads` raises more than ``json.JSONDecodeError``: ``UnicodeDecodeError`` for bytes
that are not UTF-8, ``RecursionError`` for nesting too deep for the C decoder, and a plain
``ValueError`` for an integer longer than CPython's int max-str-digits limit (4,300 digits by
default, ``sys.get_int_max_str_digits()``). A handler written for ``JSONDecodeError`` misses the
last two, and one such answer ended the agent's poller (issue 24, F4). :func:`loads` turns all of
them into :class:`JsonError`, whose message says why in a few words and never quotes the
document, which may carry credentials.

The digit limit itself is kept, not raised: it is what stops a peer from making us spend
quadratic time converting a megabyte of digits. Go's encoding/json refuses such a number too
(it does not fit a float64).
"""

from __future__ import annotations

import json
import sys
from typing import Any


class JsonError(ValueError):
    """A document that is not JSON Python can decode; the message says why, without its text."""


def why_not_json(err: ValueError | RecursionError) -> str:
    """Why :func:`json.loads` refused a document, in a few words.

    A ValueError that is neither a ``JSONDecodeError`` nor a ``UnicodeDecodeError`` comes from
    the int digit limit; CPython's own message advises raising the limit, which a program must
    not do for a peer's answer, so it is replaced."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno} column {err.colno}"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 at byte {err.start}"
    return f"a number too long to decode (over {sys.get_int_max_str_digits()} digits)"


def loads(raw: bytes | str) -> Any:
    """:func:`json.loads`, with every decoding failure a :class:`JsonError` (a ValueError)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise JsonError(why_not_json(err)) from None

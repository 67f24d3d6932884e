"""Structured logs: JSON lines (default, for machines) or colourless console (for people).

Every log line carries ``level``, ``ts`` and ``logger``; controllers bind ``controller``,
``namespace``, ``name`` and ``reconcile_id`` per work item through contextvars, so every line a
reconcile writes, at any depth, names its object.

The Go operator logs through controller-runtime's zap; its ``--zap-*`` flags map here
(``python -m vworkspace run`` resolves them, see there for precedence):

* ``--zap-log-level``: zap's ``debug``/``info``/``error`` are ours; zap's integers > 0 are
  V-levels below debug, and Python has nothing finer than debug, so every one means ``debug``.
* ``--zap-time-encoding`` (:func:`format_ts`): the ``ts`` field as zap writes it, always in UTC.
  Without it ``ts`` stays ISO 8601 with microseconds (``2026-01-01T12:00:00.123456Z``).
* ``--zap-stacktrace-level`` (``stacktrace_level``): zap attaches the call stack to entries at or
  above that level. Here, at or above it an exception is rendered with its traceback and an entry
  without one gets the call stack (``stack``); below it an exception shrinks to one line
  (``exception: "TypeError: ..."``). Without the flag, exceptions always carry their traceback
  and no call stacks are added (the behaviour before the flag existed).

Trade-off: zap's sampling (production mode drops repeats beyond 100/s) is not reproduced; the
operator logs little enough that it never mattered.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
import types
from collections.abc import Mapping, MutableMapping
from typing import Any

import attrs
import structlog

LEVELS = ("debug", "info", "warning", "error", "critical")
# zap's time encoders (controller-runtime spells them like this; "nano" is accepted as an alias).
TIME_ENCODINGS = ("epoch", "millis", "nanos", "nano", "iso8601", "rfc3339", "rfc3339nano")
# controller-runtime's --zap-stacktrace-level values and the Python level each one means.
ZAP_STACKTRACE_LEVELS: Mapping[str, str] = types.MappingProxyType(
    {"info": "info", "error": "error", "panic": "critical"}
)
ZAP_LOG_LEVELS = ("debug", "info", "error")


@attrs.frozen
class LogConfig:
    fmt: str = "json"
    level: str = "info"
    time_encoding: str | None = None
    stacktrace_level: str | None = None


def zap_log_level(text: str) -> str:
    """controller-runtime's ``--zap-log-level`` value as one of :data:`LEVELS`."""
    lowered = text.strip().lower()
    if lowered in ZAP_LOG_LEVELS:
        return lowered
    try:
        verbosity = int(lowered)
    except ValueError:
        verbosity = 0
    if verbosity > 0:
        return "debug"
    raise ValueError(
        f"invalid log level {text!r}: use debug, info, error or an integer > 0 "
        "(zap's verbosity; every integer means debug here)"
    )


def format_ts(ns: int, encoding: str) -> float | int | str:
    """A UNIX time in nanoseconds as zap's ``encoding`` writes it (UTC for the text forms)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    if encoding == "epoch":
        return ns / 1e9
    if encoding == "millis":
        return ns / 1e6
    if encoding in ("nanos", "nano"):
        return ns
    base = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if encoding == "rfc3339":
        return f"{base}Z"
    if encoding == "iso8601":
        return f"{base}.{fraction // 1_000_000:03d}Z"
    if encoding == "rfc3339nano":
        digits = f"{fraction:09d}".rstrip("0")
        return f"{base}.{digits}Z" if digits else f"{base}Z"
    raise ValueError(f"unknown time encoding {encoding!r}")


EventDict = MutableMapping[str, Any]


def _zap_timestamper(encoding: str) -> structlog.typing.Processor:
    format_ts(0, encoding)  # refuse an unknown encoding now, not at the first log line

    def add_ts(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["ts"] = format_ts(time.time_ns(), encoding)
        return event_dict

    return add_ts


def _exception_summary(exc_info: object) -> str:
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    else:  # exc_info=True: the exception being handled (processors run inside the except)
        exc = sys.exc_info()[1]
    return f"{type(exc).__name__}: {exc}" if exc is not None else ""


def _stacktraces_from(level: str) -> structlog.typing.Processor:
    names = logging.getLevelNamesMapping()
    threshold = names[level.upper()]

    def apply(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        numeric = names.get(str(event_dict.get("level", "info")).upper(), logging.INFO)
        if numeric >= threshold:
            if not event_dict.get("exc_info"):
                event_dict["stack_info"] = True
        elif event_dict.get("exc_info"):
            event_dict["exception"] = _exception_summary(event_dict.pop("exc_info"))
        return event_dict

    return apply


def configure(
    *,
    fmt: str = "json",
    level: str = "info",
    time_encoding: str | None = None,
    stacktrace_level: str | None = None,
) -> None:
    """``time_encoding``: one of :data:`TIME_ENCODINGS` (None: ISO 8601, microseconds);
    ``stacktrace_level``: one of :data:`LEVELS` (None: tracebacks always, no call stacks)."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        (
            _zap_timestamper(time_encoding)
            if time_encoding
            else structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
        ),
    ]
    if stacktrace_level:
        shared.append(_stacktraces_from(stacktrace_level))
    shared.append(structlog.processors.StackInfoRenderer())
    tail: list[structlog.typing.Processor]
    if fmt == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=False)]
    else:
        tail = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (aiohttp, kubernetes-asyncio) go to stderr at WARNING.
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format="%(levelname)s %(name)s %(message)s",
    )

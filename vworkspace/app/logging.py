"""Structured logs: JSON lines (default, for machines) or colourless console (for people).

Every log line carries ``level``, ``ts`` and ``logger``; controllers bind ``controller``,
``namespace``, ``name`` and ``reconcile_id`` per work item through contextvars, so every line a
reconcile writes, at any depth, names its object.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(*, fmt: str = "json", level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.StackInfoRenderer(),
    ]
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

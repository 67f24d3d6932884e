"""The flags of `python -m vworkspace run`, one module per concern.

Each module adds its argument group(s) to the ``run`` parser (``add_flags``), builds its part of
:class:`~vworkspace.app.wiring.OperatorSettings` from the parsed arguments and the environment
(``settings_from``: a mapping of settings fields, validated, raising ValueError that names the
flag at fault) and, where it has any, names the flags given that have no effect in this
combination (``ignored``). app/run_cmd.py composes them in the order ``--help`` shows:
connection, endpoints (probes and metrics), leader election, engines, webhooks, tuning, agent,
egress (the control plane proxy, CA, client certificate and pins; also used by ``register``),
hardening (app/hardening_flags.py), logging.

Trade-off: the parts are plain mappings of settings fields, so one module never needs another's
types; a misspelt field fails at start (attrs refuses unknown keywords) and in the unit tests.
"""

from __future__ import annotations

import argparse

__all__ = ["go_bool"]


def go_bool(text: str) -> bool:
    """A boolean flag value as Go's ``strconv.ParseBool`` reads it."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")

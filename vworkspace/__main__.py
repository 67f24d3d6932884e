"""`python -m vworkspace`: the command-line entry point (see vworkspace.app.cli)."""

from vworkspace.app.cli import main

raise SystemExit(main())

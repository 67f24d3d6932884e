"""The application layer: command line, wiring and process lifecycle.

This is the only layer that reads flags and environment variables; everything below it is
given its settings and dependencies.
"""

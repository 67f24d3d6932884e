"""Validating admission webhooks for ApplicationInstance and Operation (operator-runtime.md §6)."""

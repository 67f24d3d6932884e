"""Validating admission webhooks for ApplicationInstance and Operation (docs/webhooks.md)."""

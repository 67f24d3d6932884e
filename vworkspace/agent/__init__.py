"""The Pull-mode agent: credentials, the control-plane client, the poller and the applier.

The operator dials out: it long-polls the control plane for jobs, applies each to its own API
server with server-side apply, and posts exactly one result per job. It never accepts an inbound
connection. Wire contract: docs/pull-mode.md, "Wire format".
"""

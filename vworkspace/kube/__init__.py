"""Kubernetes plumbing: client, informers, work queues, controllers, status, events, leases.

Each controller in ``vworkspace.controllers`` is only a ``reconcile(key) -> Result`` function;
everything that makes the loop robust (relists after 410, watchdogs, backoff, dedup, leader
election, graceful shutdown) lives here. Nothing here reads the environment.

Three rooms, importing one way (import-linter checks it): ``runtime`` (controllers, work queues,
leader election, supervision) on ``cache`` (informers, stores, predicates) on ``rest`` (client,
transport, connection config and auth, errors, resource paths). Beside them, the shared pieces
every room may use (``clock``, ``metrics``, ``backoff``), the writers of our own objects built
on ``rest`` (``objects``, ``applied``, ``events``), and the HTTPS serving helpers (``listener``,
``tls``).
"""

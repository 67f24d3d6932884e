"""Kubernetes plumbing: client, informers, work queues, controllers, status, events, leases.

Each controller in ``vworkspace.controllers`` is only a ``reconcile(key) -> Result`` function;
everything that makes the loop robust (relists after 410, watchdogs, backoff, dedup, leader
election, graceful shutdown) lives here. Nothing here reads the environment.
"""

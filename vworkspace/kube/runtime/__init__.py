"""The runtime room: what makes the reconcile loop robust. Controllers (a work queue of keys and
N workers around one ``reconcile(key) -> Result``), per-item rate limits and backoff, leader
election on a Lease, and the supervisor that restarts failed tasks. Built on ``cache`` and
``rest``.
"""

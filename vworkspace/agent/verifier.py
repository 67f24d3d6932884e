"""Deciding whether a job's signature lets it through, before anything else happens to it
(docs/pull-mode.md, "Signed jobs"; docs/operations.md, "Hardening").

The poller calls :meth:`JobVerifier.check` first: before the expiry check, the idempotency
lookup, the policy and the apply. A rejected job ends with a ``failed`` result naming the cause,
nothing is applied and its idempotency key is not recorded, so a correctly signed redelivery of
the same job can still succeed.

* ``require=True``: an unsigned job, a malformed or bad signature, an unknown key id, and a
  signed job whose ``expiresAt`` is missing or further ahead than ``max_age`` are rejected. The
  expiry bound limits how long a captured job can be replayed.
* ``require=False`` (the default, so existing control planes keep working): unsigned jobs pass,
  but a signature that is present is verified all the same and a bad one is rejected, never
  silently ignored. The expiry bound is not applied then: a hop that could exploit a far expiry
  could just as well strip the signature.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from vworkspace.agent import signing
from vworkspace.agent.signing import SignatureError
from vworkspace.agent.wire import Job
from vworkspace.kube.clock import Clock

if TYPE_CHECKING:  # cryptography is loaded only once a key is parsed (agent/signing.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_MAX_AGE = datetime.timedelta(hours=24)


class JobVerifier:
    def __init__(
        self,
        *,
        keys: Callable[[], Mapping[str, Ed25519PublicKey]],
        clock: Clock,
        require: bool = False,
        max_age: datetime.timedelta = DEFAULT_MAX_AGE,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self.require = require
        self.max_age = max_age

    def check(self, job: Job, *, cluster_id: str) -> None:
        """Return when the job may proceed; raise :class:`SignatureError` otherwise."""
        if not job.signed:
            if self.require:
                raise SignatureError(
                    "signature: the job is not signed and this cluster requires signed jobs "
                    "(--agent-require-signed-jobs)",
                    reason=signing.UNSIGNED,
                )
            return
        signing.verify(job.wire, cluster_id=cluster_id, keys=self._keys())
        if not self.require:
            return
        if job.expires_at is None:
            raise SignatureError(
                "signature: a signed job must carry expiresAt (--agent-require-signed-jobs)",
                reason=signing.NO_EXPIRY,
            )
        ahead = job.expires_at - self._clock.now()
        if ahead > self.max_age:
            raise SignatureError(
                f"signature: expiresAt is {_human(ahead)} ahead, more than "
                f"--agent-signed-job-max-age {_human(self.max_age)}",
                reason=signing.EXPIRY_TOO_FAR,
            )


def _human(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"

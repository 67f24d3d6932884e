"""Deciding whether a job's signature lets it through, before anything else happens to it
(docs/pull-mode.md, "Signed jobs"; docs/operations.md, "Hardening").

The poller calls :meth:`JobVerifier.check` first: before the expiry check, the idempotency
lookup, the policy and the apply. A rejected job ends with a ``failed`` result naming the cause,
nothing is applied and its idempotency key is not recorded, so a correctly signed redelivery of
the same job can still succeed.

* ``require=True``: an unsigned job, a malformed or bad signature, an unknown key id, a
  signed job whose ``expiresAt`` is missing or further ahead than ``max_age``, and a signed job
  (not yet expired) without an ``idempotencyKey`` are rejected. The expiry bound limits how long
  the agent must remember a job id to refuse its replay (agent/replay.py; the poller does that);
  the key is what stops a *redelivered* job, whose id the agent may not have recorded, from
  being applied twice, so it is no longer optional.
* ``require=False`` (the default, so existing control planes keep working): unsigned jobs pass,
  but a signature that is present is verified all the same and a bad one is rejected, never
  silently ignored. The expiry bound and the key requirement are not applied then: a hop that
  could exploit a far expiry could just as well strip the signature.

The keys come from an informer (agent/trustedkeys.py); :meth:`JobVerifier.wait_ready` returns
once it has listed them, and the poller waits for it before its first fetch: checked against the
empty cache of a process that just started, a correctly signed job would fail for good as
``unknown_key``.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from vworkspace.agent import signing
from vworkspace.agent.signing import SignatureError
from vworkspace.agent.wire import Job
from vworkspace.kube.clock import Clock

if TYPE_CHECKING:  # cryptography is loaded only once a key is parsed (agent/signing.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_MAX_AGE = datetime.timedelta(hours=24)


async def _no_wait() -> None:
    return None


class JobVerifier:
    def __init__(
        self,
        *,
        keys: Callable[[], Mapping[str, Ed25519PublicKey]],
        clock: Clock,
        require: bool = False,
        max_age: datetime.timedelta = DEFAULT_MAX_AGE,
        synced: Callable[[], bool] | None = None,
        wait_synced: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``synced`` / ``wait_synced``: whether, and when, ``keys`` reflects the trusted keys
        (the keys informer has listed them); both absent: a fixed set, ready at once."""
        self._keys = keys
        self._clock = clock
        self.require = require
        self.max_age = max_age
        self._synced = synced or (lambda: True)
        self._wait_synced = wait_synced or _no_wait

    @property
    def ready(self) -> bool:
        """Whether the trusted keys are known (a job checked now sees every trusted key)."""
        return self._synced()

    async def wait_ready(self) -> None:
        await self._wait_synced()

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
        if ahead > datetime.timedelta(0) and not job.idempotency_key:
            # An expired job stays the protocol's noop/expired (the poller says so); nothing of
            # it is applied, so it needs no key.
            raise SignatureError(
                "signature: a signed job must carry an idempotencyKey "
                "(--agent-require-signed-jobs)",
                reason=signing.NO_IDEMPOTENCY_KEY,
            )


def _human(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"

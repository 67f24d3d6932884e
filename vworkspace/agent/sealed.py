"""Payloads and values encrypted to the cluster's own key (docs/pull-mode.md, "Encrypted
payloads").

The format is **age** (https://age-encryption.org/v1) with X25519 recipients, ASCII-armored
(``-----BEGIN AGE ENCRYPTED FILE-----``), through ``pyrage`` (Python bindings of the Rust
``rage``). Not hand-made: age is what SOPS and Flux users already encrypt cluster secrets with,
the ``age``/``rage`` command-line tools let an operator produce or inspect ciphertext by hand,
and a file is self-delimiting and authenticated. RFC 9180 HPKE would have needed a framing of
our own (encapsulated key, info string, armour). The trade-off: one compiled dependency.

Two forms, both to the cluster's recipient (``age1...``):

* the whole payload: the job's ``encryptedPayload`` is an armored age file of the payload's
  JSON (:meth:`Unsealer.payload`);
* single values: any string leaf of an ApplicationInstance's ``spec.values.inline`` that is an
  armored age file decrypts to the UTF-8 text of that value (:meth:`Unsealer.values`).

Every failure is a :class:`SealedError` whose ``reason`` is a metric label and whose message
starts with ``encryption:``, names the field and says what to do. Messages never carry
plaintext or key material: a decrypted value is only ever returned.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
ENCRYPTED_PAYLOAD = "encryptedPayload"

# Rejection reasons (the ``reason`` label of vworkspace_agent_job_rejections_total).
NO_KEY = "encryption_no_key"
WRONG_KEY = "encryption_wrong_key"
MALFORMED = "encryption_malformed"


class SealedError(ValueError):
    """Encrypted material that cannot be used; nothing of the job is applied."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.frozen
class ClusterKey:
    """The cluster's age X25519 identity and its public recipient. The identity never appears
    in ``repr`` (and so in no log line). ``previous``: older identities still accepted for
    decryption (rotation: the new key first, the old ones after it until nothing is encrypted
    to them any more); the recipient is always the first's."""

    identity: Any = attrs.field(repr=False)  # pyrage.x25519.Identity (untyped extension)
    recipient: str
    previous: tuple[Any, ...] = attrs.field(default=(), repr=False)

    @property
    def identities(self) -> list[Any]:
        return [self.identity, *self.previous]

    @classmethod
    def generate(cls) -> ClusterKey:
        from pyrage import x25519

        identity = x25519.Identity.generate()
        return cls(identity=identity, recipient=str(identity.to_public()))

    @classmethod
    def parse(cls, text: str) -> ClusterKey:
        """``AGE-SECRET-KEY-1...`` lines, the current key first (comments and blank lines, as
        ``age-keygen`` writes them, are skipped); ValueError that does not echo the text."""
        from pyrage import IdentityError, x25519

        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            raise ValueError("no AGE-SECRET-KEY-1... line")
        identities = []
        for number, line in enumerate(lines, start=1):
            try:
                identities.append(x25519.Identity.from_str(line))
            except IdentityError:
                raise ValueError(
                    f"key line {number} is not an age X25519 identity (AGE-SECRET-KEY-1...)"
                ) from None
        first = identities[0]
        return cls(identity=first, recipient=str(first.to_public()), previous=tuple(identities[1:]))

    def secret_text(self) -> str:
        """The current identity as ``age-keygen`` writes it (for the Secret or a 0600 file
        only)."""
        return str(self.identity)


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is an armored age file (leading whitespace allowed, as YAML block
    scalars may leave it)."""
    return isinstance(value, str) and value.lstrip().startswith(ARMOR_BEGIN)


def encrypt(plaintext: bytes, recipient: str) -> str:
    """An armored age file of ``plaintext`` for ``recipient`` (the signer side: the mock,
    tests, ``keys``). ValueError for a recipient that is not ``age1...``."""
    import pyrage
    from pyrage import x25519

    try:
        public = x25519.Recipient.from_str(recipient.strip())
    except pyrage.RecipientError:
        raise ValueError(f"{recipient[:80]!r} is not an age X25519 recipient (age1...)") from None
    armored: bytes = pyrage.encrypt(plaintext, [public], armored=True)
    return armored.decode("ascii")


# How long an encrypted job waits for the key's informer to list the Secret after a start.
READY_TIMEOUT = 30.0


async def _no_wait() -> None:
    return None


class Unsealer:
    """Decrypts with the key the cluster has now (``key``: None while there is none);
    ``source`` names where that key lives, for the messages. ``wait_synced``: returns once
    ``key`` reflects the Secret (its informer has listed it)."""

    def __init__(
        self,
        *,
        key: Callable[[], ClusterKey | None],
        source: str,
        wait_synced: Callable[[], Awaitable[None]] = _no_wait,
    ) -> None:
        self._key = key
        self.source = source
        self._wait_synced = wait_synced

    async def ready(self) -> None:
        """Wait (bounded) until the key is known: checked against the empty cache of a process
        that just started, an encrypted job would fail for good as ``encryption_no_key``. Past
        the bound the job goes on and fails with that reason (an informer that cannot list the
        Secret must not hold a job forever)."""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self._wait_synced()
        except TimeoutError:
            return

    def _decrypt(self, armored: Any, field: str) -> bytes:
        import pyrage

        if not is_sealed(armored):
            raise SealedError(
                f"encryption: {field} is not an armored age file (it must start with "
                f"{ARMOR_BEGIN})",
                reason=MALFORMED,
            )
        key = self._key()
        if key is None:
            raise SealedError(
                f"encryption: {field} is encrypted but this cluster has no decryption key "
                f"(Secret {self.source}); create it with `python -m vworkspace keys generate "
                "--encryption` or let the agent register",
                reason=NO_KEY,
            )
        try:
            plain: bytes = pyrage.decrypt(str(armored).strip().encode("utf-8"), key.identities)
        except pyrage.DecryptError as err:
            if "No matching keys" in str(err):
                raise SealedError(
                    f"encryption: {field} is encrypted to another key (this cluster's recipient "
                    f"is {key.recipient}); encrypt it to that recipient",
                    reason=WRONG_KEY,
                ) from None
            raise SealedError(
                f"encryption: {field} is not a valid age file ({err}); nothing was applied",
                reason=MALFORMED,
            ) from None
        return plain

    def payload(self, armored: Any) -> Any:
        """The decrypted JSON payload of ``encryptedPayload``."""
        plain = self._decrypt(armored, ENCRYPTED_PAYLOAD)
        try:
            return json.loads(plain.decode("utf-8"))
        except UnicodeDecodeError:
            raise SealedError(
                f"encryption: {ENCRYPTED_PAYLOAD} does not decrypt to UTF-8 JSON", reason=MALFORMED
            ) from None
        except json.JSONDecodeError as err:
            # The position only, never the document (it is the plaintext).
            raise SealedError(
                f"encryption: {ENCRYPTED_PAYLOAD} does not decrypt to JSON (line {err.lineno} "
                f"column {err.colno})",
                reason=MALFORMED,
            ) from None

    def values(self, tree: Any, *, path: str) -> tuple[Any, list[str]]:
        """``tree`` with every sealed string leaf replaced by its plaintext, and the dotted
        paths of those leaves (empty: nothing was encrypted, ``tree`` is returned as is)."""
        found: list[str] = []
        return self._walk(tree, path, found), found

    def _walk(self, node: Any, path: str, found: list[str]) -> Any:
        if isinstance(node, dict):
            return {k: self._walk(v, f"{path}.{k}", found) for k, v in node.items()}
        if isinstance(node, list):
            return [self._walk(v, f"{path}[{i}]", found) for i, v in enumerate(node)]
        if not is_sealed(node):
            return node
        try:
            text = self._decrypt(node, path).decode("utf-8")
        except UnicodeDecodeError:
            raise SealedError(
                f"encryption: {path} does not decrypt to UTF-8 text", reason=MALFORMED
            ) from None
        found.append(path)
        return text


def has_sealed(node: Any) -> bool:
    """Whether any string leaf of ``node`` is an armored age file."""
    if isinstance(node, dict):
        return any(has_sealed(v) for v in node.values())
    if isinstance(node, list):
        return any(has_sealed(v) for v in node)
    return is_sealed(node)

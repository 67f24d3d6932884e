"""Replay protection for signed jobs: the ids of the jobs already answered, each remembered until
its ``expiresAt`` (docs/pull-mode.md, "Idempotency"; docs/operations.md, "Hardening").

A signature proves who wrote a job, not that it is new: a hop that recorded yesterday's signed
job could deliver it again and roll an object back for as long as the job has not expired. With
``--agent-require-signed-jobs`` the agent therefore remembers the id of every signed job it
answered, and answers a second delivery of that id ``noop`` / ``replayed`` without applying it.

**Where.** Next to the idempotency keys, in the same ConfigMap and the same group-committed
write (agent/idempotency.py), so a job's id becomes durable together with its key and before its
result is posted. The data key is ``applied-job-ids.json``, a JSON object ``{"<job id>": <expiry>}``
in the order recorded, the expiry being ``expiresAt`` as Unix seconds rounded up. The Go agent's
``applied-keys.json`` array is left as it was: a second key, not a new shape of the first.

**Forgetting.** An id is dropped on the first write after its job expired: from then on the
expiry check refuses the job (``noop`` / ``expired``) before its id is looked up, so keeping the
id longer protects nothing. Rounding the expiry *up* keeps an id at least as long as its job is
valid.

**Bound, and what happens at it.** Ids are bounded like the keys, by count (:data:`MAX_IDS`) and
by bytes (:data:`MAX_BYTES`; the keys' 768 KiB plus these 192 KiB stay under the API server's
1 MiB limit for a ConfigMap's data). Unlike a key, an unexpired id is never evicted: forgetting
it would silently reopen exactly the replay this closes. At the bound the agent **fails closed**:
a new signed job is refused before anything is applied (``failed``, ``replay protection: ...``,
rejection reason ``replay_capacity``) until enough remembered jobs expire, which takes at most
``--agent-signed-job-max-age``. The trade-off is availability for integrity: a control plane
that sends more than :data:`MAX_IDS` jobs per max-age window must use shorter expiries. A job id
longer than :data:`MAX_ID_BYTES` is refused the same way, so one id cannot take the budget of
hundreds.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping

DATA_KEY = "applied-job-ids.json"
MAX_IDS = 10_000
MAX_BYTES = 192 * 1024
MAX_ID_BYTES = 256

JobIds = dict[str, int]  # job id -> expiresAt, Unix seconds rounded up


def expiry_of(expires_at: datetime.datetime) -> int:
    """``expiresAt`` as whole Unix seconds, rounded up (never forget an id early)."""
    return math.ceil(expires_at.timestamp())


def entry_size(job_id: str, expiry: int) -> int:
    """Bytes ``"<id>": <expiry>, `` takes in the stored object, separator included."""
    return len(json.dumps(job_id)) + 2 + len(str(expiry)) + 2


def encoded_size(ids: Mapping[str, int]) -> int:
    """``len(encode(ids))``, without encoding: ``{}`` plus each entry, less the last separator."""
    if not ids:
        return 2
    return 2 + sum(entry_size(k, v) for k, v in ids.items()) - 2


def encode(ids: Mapping[str, int]) -> str:
    return json.dumps(dict(ids))


def decode(text: str) -> JobIds:
    """The stored ids; entries of the wrong shape are skipped, a value that is not JSON is no
    ids (as for the keys: the ConfigMap is the agent's own, and nothing else writes it)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        k: v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool) and k != ""
    }


def unexpired(ids: Mapping[str, int], *, now: float) -> JobIds:
    """The ids whose jobs can still be delivered (expiry after ``now``), in the same order."""
    return {k: v for k, v in ids.items() if v > now}


def id_problem(job_id: str) -> str:
    """Why ``job_id`` cannot be remembered ("" when it can)."""
    if len(json.dumps(job_id)) - 2 > MAX_ID_BYTES:
        return f"replay protection: the job id is longer than {MAX_ID_BYTES} bytes"
    return ""


def capacity_problem(
    ids: Mapping[str, int], job_id: str, expiry: int, *, max_ids: int, max_bytes: int
) -> str:
    """Why ``job_id`` cannot be added to the (unexpired) ``ids`` without passing a bound, ""
    when it can. The message says when room is made again."""
    if job_id in ids:
        return ""
    if len(ids) + 1 <= max_ids and encoded_size(ids) + entry_size(job_id, expiry) <= max_bytes:
        return ""
    soonest = min(ids.values(), default=expiry)
    when = datetime.datetime.fromtimestamp(soonest, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"replay protection: {len(ids)} unexpired job ids are remembered, the limit is "
        f"{max_ids} ids and {max_bytes} bytes; new signed jobs are refused until the first "
        f"expires at {when}"
    )

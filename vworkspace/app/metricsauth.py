"""Kubernetes authentication and authorization in front of ``/metrics`` (``--metrics-secure``).

The same contract as controller-runtime's ``filters.WithAuthenticationAndAuthorization``, so
the Go deployment's scrape configuration and RBAC work unchanged:

1. the scraper sends ``Authorization: Bearer <token>`` (a ServiceAccount token);
2. a ``TokenReview`` (``authentication.k8s.io/v1``) asks the API server who that is:
   401 when the token is missing or not authenticated;
3. a ``SubjectAccessReview`` (``authorization.k8s.io/v1``) asks whether that user, with its
   groups, uid and extra, may ``get`` the non-resource URL ``/metrics``: 403 when not allowed.

An API call that fails (timeout, 5xx, the operator lacking RBAC for the reviews) answers 500 and
is logged; it is never cached, so the next scrape asks again. This is controller-runtime's
behaviour too. The operator needs ``create`` on ``tokenreviews.authentication.k8s.io`` and
``subjectaccessreviews.authorization.k8s.io``.

Trade-offs:

* **Caching.** Prometheus scrapes every 15-30 s with the same token; two API calls per scrape
  would put the operator's monitoring on the API server's hot path. Both answers are cached:
  positive for ``allow_ttl`` (60 s), negative for ``deny_ttl`` (10 s). controller-runtime keeps
  tokens 1 min and allows 5 min; shorter here, so a revoked ClusterRoleBinding or token stops
  working within a minute. A new binding takes effect within ``deny_ttl``.
* **Bounded.** Each cache keeps at most ``max_entries`` (LRU). Someone spraying random tokens at
  the port can only evict entries (costing legitimate scrapers an extra review), never grow
  memory. Tokens are kept as SHA-256 digests, not as themselves.
* **No retries, explicit timeouts.** Every review has a ``timeout_s`` deadline (5 s, well below
  the usual 10 s scrape timeout); a failed scrape is retried by Prometheus at the next interval,
  so retrying here would only make the scrape slower. controller-runtime retries with backoff.
* **No request coalescing.** Two concurrent scrapes with an uncached token both ask the API
  server; scrapers are sequential per target, so that is rare and harmless.
* Audiences: the TokenReview names none, so the API server checks its own (the default audience
  of a ServiceAccount token), as controller-runtime does.

Tokens and review bodies are never logged; denials log the user name at debug level.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
import structlog

from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.paths import ApiPath

_log = structlog.get_logger("vworkspace.metricsauth")

TOKEN_REVIEWS = ApiPath.parse("/apis/authentication.k8s.io/v1/tokenreviews")
SUBJECT_ACCESS_REVIEWS = ApiPath.parse("/apis/authorization.k8s.io/v1/subjectaccessreviews")


class ReviewApi(Protocol):
    """What the filter needs from the Kubernetes client (``KubeClient.request`` fits)."""

    async def request(
        self, method: str, path: ApiPath, *, body: Any = None, timeout_s: float | None = None
    ) -> JsonObj: ...


@attrs.frozen
class Decision:
    """The filter's answer: ``status`` 200 lets the request through."""

    status: int
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOWED = Decision(200)


@attrs.frozen
class UserInfo:
    """An authenticated identity, hashable so it can key the authorization cache."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: JsonObj) -> UserInfo:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=tuple(
                sorted((str(k), tuple(str(v) for v in vs or ())) for k, vs in extra.items())
            ),
        )

    def to_review(self) -> JsonObj:
        spec: JsonObj = {"user": self.username, "groups": list(self.groups)}
        if self.uid:
            spec["uid"] = self.uid
        if self.extra:
            spec["extra"] = {key: list(values) for key, values in self.extra}
        return spec


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small LRU whose entries expire; each entry carries its own time to live."""

    def __init__(self, *, max_entries: int, clock: Clock) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[K, tuple[float, V]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, *, ttl: float) -> None:
        self._entries[key] = (self._clock.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


@attrs.frozen
class _Authenticated:
    user: UserInfo | None  # None: the API server did not authenticate the token


class MetricsAuthorizer:
    """Authenticates and authorizes one request to ``/metrics`` (see the module docstring)."""

    def __init__(
        self,
        *,
        api: ReviewApi,
        clock: Clock,
        timeout_s: float = 5.0,
        allow_ttl: float = 60.0,
        deny_ttl: float = 10.0,
        max_entries: int = 1024,
    ) -> None:
        self._api = api
        self._timeout_s = timeout_s
        self._allow_ttl = allow_ttl
        self._deny_ttl = deny_ttl
        self._tokens: TtlCache[str, _Authenticated] = TtlCache(max_entries=max_entries, clock=clock)
        self._access: TtlCache[tuple[UserInfo, str, str], Decision] = TtlCache(
            max_entries=max_entries, clock=clock
        )

    async def authorize(self, *, authorization: str | None, path: str, verb: str) -> Decision:
        """``authorization``: the request's ``Authorization`` header (or None)."""
        token = bearer_token(authorization)
        if token is None:
            return Decision(401, "Unauthorized")
        try:
            user = await self._authenticate(token)
        except (ApiError, TimeoutError, OSError) as err:
            _log.error("metrics authentication failed", error=str(err))
            return Decision(500, "Authentication failed")
        if user is None:
            return Decision(401, "Unauthorized")
        try:
            return await self._authorize(user, path=path, verb=verb)
        except (ApiError, TimeoutError, OSError) as err:
            _log.error("metrics authorization failed", user=user.username, error=str(err))
            return Decision(500, f"Authorization for user {user.username} failed")

    async def _authenticate(self, token: str) -> UserInfo | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached.user
        review = await self._api.request(
            "POST",
            TOKEN_REVIEWS,
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
            timeout_s=self._timeout_s,
        )
        status = review.get("status") or {}
        user = (
            UserInfo.from_review(status.get("user") or {}) if status.get("authenticated") else None
        )
        if user is None:
            _log.debug("metrics token not authenticated", error=status.get("error", ""))
        self._tokens.put(key, _Authenticated(user), ttl=self._allow_ttl if user else self._deny_ttl)
        return user

    async def _authorize(self, user: UserInfo, *, path: str, verb: str) -> Decision:
        key = (user, path, verb)
        cached = self._access.get(key)
        if cached is not None:
            return cached
        review = await self._api.request(
            "POST",
            SUBJECT_ACCESS_REVIEWS,
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    **user.to_review(),
                    "nonResourceAttributes": {"path": path, "verb": verb},
                },
            },
            timeout_s=self._timeout_s,
        )
        status: Mapping[str, Any] = review.get("status") or {}
        if status.get("allowed") and not status.get("denied"):
            self._access.put(key, ALLOWED, ttl=self._allow_ttl)
            return ALLOWED
        _log.debug(
            "metrics access denied",
            user=user.username,
            reason=status.get("reason", ""),
            error=status.get("evaluationError", ""),
        )
        decision = Decision(403, f"Authorization denied for user {user.username}")
        self._access.put(key, decision, ttl=self._deny_ttl)
        return decision


def bearer_token(header: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive, as the API server reads it)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token

"""The agent's Prometheus metrics (Go's names and semantics; docs/pull-mode.md, "Metrics")."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONNECTED, RECONNECTING, DISCONNECTED = 1, 0, -1


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.job_lag = Gauge(
            "vworkspace_operator_pull_job_lag_seconds",
            "Age of the oldest createdAt in the last fetched batch; 0 after a successful apply",
            registry=registry,
        )
        self.connectivity = Gauge(
            "vworkspace_operator_connectivity_state",
            "1 connected, 0 reconnecting, -1 disconnected",
            ["mode"],
            registry=registry,
        ).labels("pull")
        self.applied_jobs = Counter(
            "vworkspace_operator_applied_jobs",
            "Jobs whose result was succeeded and whose result POST was accepted",
            registry=registry,
        )
        self.buffer_occupancy = Gauge(
            "vworkspace_operator_event_buffer_occupancy",
            "Events waiting to be posted",
            registry=registry,
        )
        self.events_dropped = Counter(
            "vworkspace_operator_event_buffer_dropped",
            "Events dropped because the buffer was full (oldest first)",
            registry=registry,
        )
        self.protocol_errors = Counter(
            "vworkspace_agent_protocol_errors",
            "Control-plane answers the protocol does not allow, by endpoint and reason "
            "(status, content_type, invalid_json, shape, too_large, truncated)",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.rejections = Counter(
            "vworkspace_agent_job_rejections",
            "Jobs refused before anything was applied, by reason: unsigned, malformed, "
            "unknown_key, bad_signature, no_expiry, expiry_too_far, no_idempotency_key, "
            "replayed, replay_capacity, encryption_wrong_key, encryption_no_key, "
            "encryption_malformed, policy_<rule> (policy_metadata included)",
            ["reason"],
            registry=registry,
        )
        self.tls_pin_failures = Counter(
            "vworkspace_agent_tls_pin_failures",
            "TLS connections to the control plane refused because no key of the server's chain "
            "is pinned (--control-plane-pin-sha256); nothing was sent on them",
            registry=registry,
        )
        self.tls_material_errors = Counter(
            "vworkspace_agent_tls_material_errors",
            "Distinct problems with the control plane CA bundle or client certificate (unreadable, "
            "invalid, mismatched key, expired); no request is sent until they are fixed",
            registry=registry,
        )
        self.jobs = Counter(
            "vworkspace_agent_jobs",
            "Jobs processed by outcome",
            ["outcome"],
            registry=registry,
        )

    def watch_credential_age(
        self, registry: CollectorRegistry, created_at: Callable[[], datetime.datetime | None]
    ) -> None:
        registry.register(_CredentialAge(created_at))


class _CredentialAge(Collector):
    """``vworkspace_operator_credential_age_seconds``, computed at scrape (0 when unknown);
    restarts at 0 when a rotation rewrites the Secret (credentials.written_at)."""

    def __init__(self, created_at: Callable[[], datetime.datetime | None]) -> None:
        self._created_at = created_at

    def collect(self) -> Iterable[GaugeMetricFamily]:
        created = self._created_at()
        age = (datetime.datetime.now(datetime.UTC) - created).total_seconds() if created else 0.0
        yield GaugeMetricFamily(
            "vworkspace_operator_credential_age_seconds",
            "Seconds since the agent credentials were last written: registration or rotation "
            "(0 when unknown)",
            value=max(0.0, age),
        )

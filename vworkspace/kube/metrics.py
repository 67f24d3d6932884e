"""Prometheus metrics with controller-runtime's names, so existing dashboards work unchanged.

All metrics are created on a registry passed in (the process uses prometheus-client's default
registry, the one allowed singleton; tests pass their own). Per-queue and per-controller views
are small attrs objects holding the labelled children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# controller-runtime's reconcile-time buckets (0.005 s .. 60 s).
RECONCILE_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    3.5,
    4.0,
    4.5,
    5,
    6,
    7,
    8,
    9,
    10,
    15,
    20,
    25,
    30,
    40,
    50,
    60,
)
QUEUE_BUCKETS = tuple(10.0**e for e in range(-8, 4))


@attrs.frozen
class QueueMetrics:
    depth: Gauge
    adds: Counter
    retries: Counter
    queue_duration: Histogram


@attrs.frozen
class ControllerMetrics:
    reconcile_total: Callable[[str], Counter]
    errors: Counter
    terminal_errors: Counter
    timeouts: Counter
    reconcile_time: Histogram
    active_workers: Gauge
    max_concurrent: Gauge


class Metrics:
    """Every metric family of the controller runtime, registered once on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=registry,
        )
        self.terminal_errors = Counter(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=registry,
        )
        self.reconcile_timeouts = Counter(
            "controller_runtime_reconcile_timeouts",
            "Total number of reconciliation timeouts per controller",
            ["controller"],
            registry=registry,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=registry,
        )
        self.max_concurrent = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=registry
        )
        self.queue_adds = Counter(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=registry,
        )
        self.queue_retries = Counter(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=registry,
        )
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.leader = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, "
            "0 indicates backup, 1 indicates master.",
            ["name"],
            registry=registry,
        )
        self.informer_errors = Counter(
            "vworkspace_informer_watch_errors",
            "Watch and list errors per informer",
            ["resource", "kind"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "vworkspace_operator_task_restarts",
            "Restarts of a supervised long-running task (informer, controller, runnable) "
            "after it failed",
            ["task"],
            registry=registry,
        )
        self.task_up = Gauge(
            "vworkspace_operator_task_up",
            "1 while a supervised task runs, 0 while it waits to be restarted after a failure",
            ["task"],
            registry=registry,
        )
        self.informer_relists = Counter(
            "vworkspace_informer_relists",
            "Full relists per informer (initial, 410 Gone)",
            ["resource"],
            registry=registry,
        )

    def queue(self, name: str) -> QueueMetrics:
        return QueueMetrics(
            depth=self.queue_depth.labels(name),
            adds=self.queue_adds.labels(name),
            retries=self.queue_retries.labels(name),
            queue_duration=self.queue_duration.labels(name),
        )

    def controller(self, name: str) -> ControllerMetrics:
        return ControllerMetrics(
            reconcile_total=lambda result: self.reconcile_total.labels(name, result),
            errors=self.reconcile_errors.labels(name),
            terminal_errors=self.terminal_errors.labels(name),
            timeouts=self.reconcile_timeouts.labels(name),
            reconcile_time=self.reconcile_time.labels(name),
            active_workers=self.active_workers.labels(name),
            max_concurrent=self.max_concurrent.labels(name),
        )


class InformerAgeCollector(Collector):
    """``vworkspace_informer_last_event_age_seconds{resource}``: seconds since each informer last
    heard from its watch (an event or a bookmark), computed at scrape time. A value that keeps
    growing past a few minutes means a silent watch that the watchdog has not yet replaced."""

    def __init__(self, ages: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self._ages = ages

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vworkspace_informer_last_event_age_seconds",
            "Seconds since the informer's watch last delivered an event or bookmark",
            labels=["resource"],
        )
        for resource, age in self._ages():
            family.add_metric([resource], age)
        yield family

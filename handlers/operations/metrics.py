"""The Prometheus metrics of a worker and of a projector, each in a registry of its own
(never the global one, so tests and the in-process demo can run several services).

Label values are bounded: an agent label is a catalog name or `unknown` (task subjects
and payloads are hostile input), a dead letter's `kind` is an `ErrorKind` value.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentledger.domain.errors import ErrorKind
from agentledger.domain.monitoring.rules import AlertMessage

__all__ = ["RUN_DURATION_BUCKETS", "UNKNOWN_AGENT", "ProjectorMetrics", "WorkerMetrics"]

UNKNOWN_AGENT = "unknown"
"""The agent label of every name that is not in the catalog."""

RUN_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: local test models answer in milliseconds, real providers in seconds to minutes."""

_KINDS = frozenset(str(kind) for kind in ErrorKind)


class WorkerMetrics:
    """A worker's counters, run-duration histogram and in-flight gauge.

    Every method is a dict lookup and a counter update: cheap enough for the hot path.
    """

    def __init__(self, agents: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        names = (*sorted(set(agents) - {UNKNOWN_AGENT}), UNKNOWN_AGENT)
        r = self.registry
        received = Counter(
            "agentledger_tasks_received",
            "Task deliveries taken by this worker (redeliveries included).",
            ["agent"],
            registry=r,
        )
        completed = Counter(
            "agentledger_tasks_completed", "Runs that ended completed.", ["agent"], registry=r
        )
        failed = Counter(
            "agentledger_tasks_failed", "Runs that ended failed.", ["agent"], registry=r
        )
        rejected = Counter(
            "agentledger_tasks_rejected",
            "Task messages rejected (recorded as TaskRejected and terminated).",
            ["agent"],
            registry=r,
        )
        duration = Histogram(
            "agentledger_run_duration_seconds",
            "Time this worker spent running a task until its outcome (completed or failed).",
            ["agent"],
            buckets=RUN_DURATION_BUCKETS,
            registry=r,
        )
        # Children made once per known label value: the series exist (at 0) from the
        # start, and the hot path is one dict lookup.
        self._received = {a: received.labels(agent=a) for a in names}
        self._completed = {a: completed.labels(agent=a) for a in names}
        self._failed = {a: failed.labels(agent=a) for a in names}
        self._rejected = {a: rejected.labels(agent=a) for a in names}
        self._duration = {a: duration.labels(agent=a) for a in names}
        self.in_flight = Gauge(
            "agentledger_runs_in_flight", "Task deliveries being processed now.", registry=r
        )
        self.redeliveries = Counter(
            "agentledger_redeliveries",
            "Task deliveries with num_delivered > 1 (a nak, an AckWait expiry or a release).",
            registry=r,
        )
        self._dead_letters = Counter(
            "agentledger_dead_letters",
            "Task messages this worker kept in the dead-letter stream (nothing could be"
            " recorded on their last delivery), by error kind.",
            ["kind"],
            registry=r,
        )

    def agent_label(self, name: str | None) -> str:
        """`name` if the catalog has it, else `unknown`."""
        return name if name is not None and name in self._received else UNKNOWN_AGENT

    def task_received(self, agent: str | None, *, delivered: int) -> None:
        self._received[self.agent_label(agent)].inc()
        if delivered > 1:
            self.redeliveries.inc()

    def run_finished(self, agent: str | None, status: str, seconds: float | None) -> None:
        """A run's outcome was recorded, published and acked (`status` of `RunOutcome`).
        `seconds` is None when the worker gave up on it: no run time to observe."""
        label = self.agent_label(agent)
        if status == "completed":
            self._completed[label].inc()
        elif status == "failed":
            self._failed[label].inc()
        else:
            return
        if seconds is not None:
            self._duration[label].observe(seconds)

    def task_rejected(self, agent: str | None, kind: str) -> None:
        """A task message was recorded as rejected and terminated."""
        self._rejected[self.agent_label(agent)].inc()

    def dead_lettered(self, kind: str) -> None:
        """A task message went to the dead-letter stream."""
        self._dead_letters.labels(kind=kind if kind in _KINDS else "other").inc()


class ProjectorMetrics:
    """A projector's metrics: how far the views are behind the event log, the poison
    events skipped, and restarts of its parts.

    Label values are bounded: a `consumer` is a projection's name or `relay`, a
    `component` is `projector` or `relay`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.projection_lag = Gauge(
            "agentledger_projection_lag_events",
            "Notifications in the event log that the furthest-behind projection has not"
            " applied yet (measured when scraped).",
            registry=self.registry,
        )
        self._poison_events = Counter(
            "agentledger_poison_events",
            "Events a projection or the relay skipped as poison (listed in al_poison_log),"
            " by consumer.",
            ["consumer"],
            registry=self.registry,
        )
        self._alert_active = Gauge(
            "agentledger_alert_active",
            "1 while an alert rule's alert is raised for an agent, 0 once cleared.",
            ["rule", "agent", "metric"],
            registry=self.registry,
        )
        self._alert_value = Gauge(
            "agentledger_alert_value",
            "The value that last raised or cleared an alert rule's alert for an agent.",
            ["rule", "agent", "metric"],
            registry=self.registry,
        )
        self._restarts = Counter(
            "agentledger_projector_restarts",
            "Times the projector thread or the event relay ended unexpectedly and was"
            " restarted, by component.",
            ["component"],
            registry=self.registry,
        )

    def poison_event(self, consumer: str) -> None:
        """`consumer` (a projection, or the relay) skipped a poison event."""
        self._poison_events.labels(consumer=consumer).inc()

    def restarted(self, component: str) -> None:
        """`component` (`projector` or `relay`) ended unexpectedly and is restarted."""
        self._restarts.labels(component=component).inc()

    def alert_changed(self, message: AlertMessage) -> None:
        """An alert was raised or cleared (labels: the rule, the agent - a catalog name or
        `_unknown` - and the metric)."""
        labels = {"rule": message.rule, "agent": message.agent, "metric": message.metric}
        self._alert_active.labels(**labels).set(1 if message.state == "raised" else 0)
        if message.value is not None:
            self._alert_value.labels(**labels).set(message.value)

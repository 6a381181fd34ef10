"""NATS subject and stream names of the public contract, in one place.

Pure naming: the worker, the relay, the client and the contract document all derive their
subjects from these, so they cannot drift apart.
"""

from __future__ import annotations

__all__ = [
    "query_subject",
    "results_stream",
    "results_subject",
    "task_subject",
    "tasks_stream",
    "workers_consumer",
]


def task_subject(prefix: str, agent: str) -> str:
    """Where a `RunAgent` for `agent` is published."""
    return f"{prefix}.tasks.run.{agent}"


def results_subject(prefix: str, task_id: str) -> str:
    """Where a task's outcome is published (and kept, the last one per task)."""
    return f"{prefix}.results.{task_id}"


def query_subject(prefix: str, view: str) -> str:
    """The request-reply subject of a view's query responder."""
    return f"{prefix}.query.{view}"


def tasks_stream(prefix: str) -> str:
    """The JetStream stream holding `<prefix>.tasks.>`."""
    return f"{prefix.upper()}_TASKS"


def results_stream(prefix: str) -> str:
    """The JetStream stream keeping the last outcome of each task (`<prefix>.results.>`)."""
    return f"{prefix.upper()}_RESULTS"


def workers_consumer(prefix: str) -> str:
    """The durable pull consumer every worker of `prefix` shares."""
    return f"{prefix}-workers"

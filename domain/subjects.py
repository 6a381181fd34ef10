"""NATS subject and stream names of the public contract, in one place.

Pure naming: the worker, the relay, the client and the contract document all derive their
subjects from these, so they cannot drift apart.
"""

from __future__ import annotations

__all__ = [
    "REPLY_SUBJECT_MAX_CHARS",
    "alert_subject",
    "dead_stream",
    "dead_subject",
    "eval_subject",
    "eval_workers_consumer",
    "evaluation_progress_subject",
    "graph_cancel_subject",
    "graph_resume_subject",
    "graph_task_subject",
    "graph_workers_consumer",
    "query_subject",
    "reply_subject_problem",
    "results_stream",
    "results_subject",
    "route_subject",
    "route_workers_consumer",
    "stream_ack_subject",
    "stream_subject",
    "streams_stream",
    "task_stream_subjects",
    "task_subject",
    "tasks_stream",
    "workers_consumer",
    "workflow_cancel_subject",
]

REPLY_SUBJECT_MAX_CHARS = 256
"""Longest reply subject accepted from a task's header (NATS allows longer ones, but a
protocol line over the server's 4,096-byte limit would cost the worker its connection)."""


def task_subject(prefix: str, agent: str) -> str:
    """Where a `RunAgent` for `agent` is published."""
    return f"{prefix}.tasks.run.{agent}"


def graph_task_subject(prefix: str, graph: str) -> str:
    """Where a `RunGraph` for `graph` is published."""
    return f"{prefix}.tasks.graph.{graph}"


def graph_resume_subject(prefix: str) -> str:
    """Where a `ResumeGraph` is published."""
    return f"{prefix}.tasks.graph.resume"


def graph_cancel_subject(prefix: str) -> str:
    """Where a `CancelGraph` is published."""
    return f"{prefix}.tasks.graph.cancel"


def workflow_cancel_subject(prefix: str) -> str:
    """Where a workflow (a graph run that dispatches child tasks) is cancelled: a
    `CancelGraph` that also cancels the children it still waits for (as does one on
    `graph_cancel_subject`)."""
    return f"{prefix}.tasks.workflow.cancel"


def graph_child_subject(prefix: str) -> str:
    """Where a worker reports that a child task a graph run dispatched has ended."""
    return f"{prefix}.tasks.graph.child"


def route_subject(prefix: str) -> str:
    """Where a `RouteTask` is published."""
    return f"{prefix}.tasks.route"


def route_workers_consumer(prefix: str) -> str:
    """The durable pull consumer of route tasks every worker of `prefix` shares."""
    return f"{prefix}-route-workers"


def eval_subject(prefix: str, dataset: str) -> str:
    """Where a `RunEvaluation` of the catalog's dataset `dataset` is published."""
    return f"{prefix}.tasks.eval.{dataset}"


def eval_workers_consumer(prefix: str) -> str:
    """The durable pull consumer of evaluation tasks every worker of `prefix` shares."""
    return f"{prefix}-eval-workers"


def evaluation_progress_subject(prefix: str, task_id: str) -> str:
    """Where an evaluation's progress goes while it runs (core NATS, best effort)."""
    return f"{prefix}.evaluations.{task_id}.progress"


def results_subject(prefix: str, task_id: str) -> str:
    """Where a task's outcome is published (and kept, the last one per task)."""
    return f"{prefix}.results.{task_id}"


def query_subject(prefix: str, view: str) -> str:
    """The request-reply subject of a view's query responder."""
    return f"{prefix}.query.{view}"


def task_stream_subjects(prefix: str) -> list[str]:
    """The subjects the tasks stream holds: exactly those a worker consumes.

    A publish to any other `<prefix>.tasks...` subject (`ledger.tasks.run`,
    `ledger.tasks.run.a.b`) finds no stream and fails at once, instead of being stored
    where nothing ever answers it.
    """
    return [
        f"{prefix}.tasks.run.*",
        f"{prefix}.tasks.graph.*",
        route_subject(prefix),
        workflow_cancel_subject(prefix),
        f"{prefix}.tasks.eval.*",
    ]


def tasks_stream(prefix: str) -> str:
    """The JetStream stream holding `task_stream_subjects(prefix)`."""
    return f"{prefix.upper()}_TASKS"


def alert_subject(prefix: str, agent: str, metric: str) -> str:
    """Where an alert about an agent's metric is published when raised or cleared."""
    return f"{prefix}.alerts.{agent}.{metric}"


def stream_subject(prefix: str, task_id: str) -> str:
    """Where a streamed task's chunks go (`agentledger.domain.streaming.chunks`)."""
    return f"{prefix}.stream.{task_id}"


def stream_ack_subject(prefix: str, task_id: str) -> str:
    """Where a stream's subscriber acknowledges chunks (flow control)."""
    return f"{prefix}.stream.{task_id}.ack"


def streams_stream(prefix: str) -> str:
    """The JetStream stream keeping recent chunks (`<prefix>.stream.*`) for a subscriber
    that joins late or resumes after a reconnect."""
    return f"{prefix.upper()}_STREAMS"


def results_stream(prefix: str) -> str:
    """The JetStream stream keeping the last outcome of each task (`<prefix>.results.>`)."""
    return f"{prefix.upper()}_RESULTS"


def workers_consumer(prefix: str) -> str:
    """The durable pull consumer every worker of `prefix` shares."""
    return f"{prefix}-workers"


def graph_workers_consumer(prefix: str) -> str:
    """The durable pull consumer of graph tasks every worker of `prefix` shares."""
    return f"{prefix}-graph-workers"


def dead_stream(prefix: str) -> str:
    """The JetStream stream of task messages the workers gave up on."""
    return f"{prefix.upper()}_DEAD"


def dead_subject(prefix: str) -> str:
    """Where a dead letter is kept."""
    return f"{prefix}.dead.tasks"


def reply_subject_problem(prefix: str, subject: str) -> str | None:
    """Why `subject`, taken from a task's reply header, must not be published to; None
    when it may be.

    A reply subject is the client's own: 1 to `REPLY_SUBJECT_MAX_CHARS` printable ASCII
    characters, no whitespace, dot-separated non-empty tokens, no wildcards; never a NATS
    system subject (a `$`-prefixed first token: `$JS.`, `$SYS.`, `$KV.`, `$O.`, ...,
    in any case) and never one of ours (`<prefix>` or anything under `<prefix>.`: an
    outcome published there could overwrite another task's result or enqueue a task).
    `_INBOX.…` and any other application subject are fine.
    """
    if not subject:
        return "the reply subject is empty"
    if len(subject) > REPLY_SUBJECT_MAX_CHARS:
        return (
            f"the reply subject has {len(subject)} characters;"
            f" the limit is {REPLY_SUBJECT_MAX_CHARS}"
        )
    for position, char in enumerate(subject):
        if char.isspace():
            return f"the reply subject contains whitespace ({char!r} at position {position})"
        if not ("!" <= char <= "~"):
            return (
                f"the reply subject contains {char!r} at position {position};"
                " only printable ASCII characters are allowed"
            )
    if "*" in subject or ">" in subject:
        return "the reply subject contains a wildcard ('*' or '>'); it must name one subject"
    tokens = subject.split(".")
    if "" in tokens:
        return "the reply subject has an empty token (a leading, trailing or double dot)"
    if tokens[0].startswith("$"):
        return f"the reply subject is in the NATS system namespace {tokens[0]!r}"
    if tokens[0] == prefix:
        return f"the reply subject is one of agentledger's own subjects ({prefix}.…)"
    return None

"""The workflows view: graph runs that dispatched child agent tasks (`call_agents`), each
child task, and the messages of each workflow, rebuildable from the `GraphRun` events.

- `al_workflows`: one row per graph run that dispatched at least one child: its status
  (`waiting` while children it dispatched run, `running` again once a step has them
  all), how many children it dispatched, how many ended and how many of those did not
  complete, how many messages it exchanged, and its timing.
- `al_workflow_children`: one row per child task: its agent, the step that dispatched it,
  its request message, and its status (`dispatched` until its outcome is recorded, then
  the outcome's status) with the outcome's duration and output or error.
- `al_workflow_messages`: one row per message, as
  `agentledger.domain.orchestration.flow` derives them (a request per dispatched child,
  a response per recorded outcome), in the order they were recorded.

A graph run is a workflow once it dispatches; until then its start (task id, graph,
time) waits in `al_workflow_pending`, and is forgotten if the run ends without
dispatching. Outputs, errors and message contents are sealed like every view's content
(`Sealer`), and bounded as a message's content is (`flow.bounded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.graphs.run import GraphRun, GraphRunStatus
from agentledger.domain.orchestration.flow import (
    answer_message,
    caused_by,
    request_message,
    response_id,
)
from agentledger.domain.orchestration.messages import AgentMessage, MessageKind
from agentledger.projections.base import (
    PLAIN,
    Projection,
    Sealer,
    ViewCursor,
    check_page,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    optional_key,
    select_by_run_or_task,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = [
    "WorkflowChildView",
    "WorkflowMessageView",
    "WorkflowView",
    "WorkflowsProjection",
    "get_workflow",
    "list_workflows",
    "workflow_messages_of",
]

_COLUMNS = (
    "run_id",
    "task_id",
    "graph",
    "status",
    "children_dispatched",
    "children_finished",
    "children_failed",
    "message_count",
    "started_at",
    "finished_at",
    "duration_ms",
    "error_kind",
    "error_message",
    "version",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM al_workflows"
_CHILD_COLUMNS = (
    "run_id",
    "child_task_id",
    "task_id",
    "seq",
    "agent",
    "step_key",
    "node_id",
    "message_id",
    "response_id",
    "kind",
    "status",
    "dispatched_at",
    "finished_at",
    "duration_ms",
    "output",
    "error",
)
_MESSAGE_COLUMNS = (
    "correlation_id",
    "seq",
    "run_id",
    "message_id",
    "causation_id",
    "sender",
    "receiver",
    "kind",
    "content",
    "at",
)
_ENDED = ("completed", "failed")


def _workflow_table(name: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {name} (
            run_id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            graph TEXT NOT NULL,
            status TEXT NOT NULL,
            children_dispatched INTEGER NOT NULL,
            children_finished INTEGER NOT NULL,
            children_failed INTEGER NOT NULL,
            message_count INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms DOUBLE PRECISION,
            error_kind TEXT,
            error_message TEXT,
            version INTEGER NOT NULL
        )"""


class WorkflowChildView(BaseModel):
    """One child task of a workflow."""

    model_config = ConfigDict(frozen=True)

    child_task_id: str
    seq: int
    """Its place among the workflow's children, in dispatch order (from 1)."""
    agent: str
    step_key: str
    node_id: str
    """The step that dispatched it."""
    message_id: str
    """The request message it was dispatched for (its broadcast's, for a broadcast)."""
    response_id: str
    """The id its response has (once it has ended)."""
    kind: str
    """request, handoff or broadcast."""
    status: str
    """dispatched until its outcome is recorded; then completed, failed or rejected;
    cancelled if the workflow ended (failed or cancelled) while it was outstanding."""
    dispatched_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    """As its outcome says."""
    output: Any
    """Its output, once completed."""
    error: Any
    """Why it did not complete ({kind, message, ...})."""


class WorkflowView(BaseModel):
    """A graph run that dispatched child tasks."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    task_id: str
    """The workflow's task id: its messages' correlation id."""
    graph: str
    status: GraphRunStatus
    children_dispatched: int
    children_finished: int
    children_failed: int
    """Children whose outcome is not `completed` (failed or rejected)."""
    message_count: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    error_kind: str | None
    error_message: str | None
    version: int
    children: list[WorkflowChildView] = []


class WorkflowMessageView(BaseModel):
    """One message of a workflow, and its place in the workflow's order."""

    model_config = ConfigDict(frozen=True)

    correlation_id: str
    seq: int
    message_id: str
    causation_id: str | None
    sender: str
    receiver: str
    kind: MessageKind
    content: Any
    at: datetime

    def message(self) -> AgentMessage:
        return AgentMessage.model_validate(self.model_dump(exclude={"seq"}))


class WorkflowsProjection(Projection):
    """Folds `GraphRun` events into `al_workflows`, `al_workflow_children` and
    `al_workflow_messages` (and `al_workflow_pending`, graph runs not dispatching yet)."""

    name: ClassVar[str] = "workflows"
    version: ClassVar[int] = 2  # 2: children's response_id; broadcasts
    tables: ClassVar[tuple[str, ...]] = (
        "al_workflows",
        "al_workflow_pending",
        "al_workflow_children",
        "al_workflow_messages",
    )
    ddl: ClassVar[tuple[str, ...]] = (
        _workflow_table("al_workflows"),
        "CREATE INDEX IF NOT EXISTS al_workflows_started_idx ON al_workflows (started_at)",
        "CREATE INDEX IF NOT EXISTS al_workflows_graph_idx ON al_workflows (graph, started_at)",
        "CREATE INDEX IF NOT EXISTS al_workflows_task_idx ON al_workflows (task_id)",
        _workflow_table("al_workflow_pending"),
        """CREATE TABLE IF NOT EXISTS al_workflow_children (
            run_id TEXT NOT NULL,
            child_task_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            agent TEXT NOT NULL,
            step_key TEXT NOT NULL,
            node_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            response_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            dispatched_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms DOUBLE PRECISION,
            output TEXT,
            error TEXT,
            PRIMARY KEY (run_id, child_task_id)
        )""",
        """CREATE TABLE IF NOT EXISTS al_workflow_messages (
            correlation_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            causation_id TEXT,
            sender TEXT NOT NULL,
            receiver TEXT NOT NULL,
            kind TEXT NOT NULL,
            content TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (correlation_id, seq)
        )""",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        groups = group_by_aggregate(events, GraphRun.Event)
        if not groups:
            return
        pending = select_rows(cursor, "al_workflow_pending", _COLUMNS, groups)
        rows = {**pending, **select_rows(cursor, "al_workflows", _COLUMNS, groups)}
        finishing = [
            run_id
            for run_id, run_events in groups.items()
            if any(isinstance(e, GraphRun.ChildFinished | GraphRun.GraphFailed) for e in run_events)
        ]
        fold = _Fold(self.sealer, _select_children(cursor, finishing))
        for run_id, run_events in groups.items():
            row = rows.get(run_id)
            changed = False
            for event in run_events:
                if row is not None and row["version"] >= event.originator_version:
                    continue  # folded before (a re-applied event)
                row = fold.apply(row, run_id, event)
                changed = True
            if not changed or row is None:
                continue
            was_pending = run_id in pending
            values = tuple(row[c] for c in _COLUMNS)
            if row["children_dispatched"] > 0:
                cursor.execute(_UPSERT, values)
                if was_pending:
                    cursor.execute(_DELETE_PENDING, (run_id,))
            elif row["status"] in _ENDED:
                if was_pending:
                    cursor.execute(_DELETE_PENDING, (run_id,))
            else:
                cursor.execute(_PENDING_UPSERT, values)
        if fold.touched:
            cursor.executemany(
                _CHILD_UPSERT,
                [tuple(fold.children[k][c] for c in _CHILD_COLUMNS) for k in fold.touched],
            )
        if fold.messages:
            cursor.executemany(_MESSAGE_UPSERT, fold.messages)


_UPSERT = upsert_sql("al_workflows", _COLUMNS, ("run_id",))
_PENDING_UPSERT = upsert_sql("al_workflow_pending", _COLUMNS, ("run_id",))
_DELETE_PENDING = "DELETE FROM al_workflow_pending WHERE run_id = ?"
_CHILD_UPSERT = upsert_sql("al_workflow_children", _CHILD_COLUMNS, ("run_id", "child_task_id"))
_MESSAGE_UPSERT = upsert_sql("al_workflow_messages", _MESSAGE_COLUMNS, ("correlation_id", "seq"))


def _select_children(
    cursor: ViewCursor, run_ids: list[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The child rows of these runs, by (run id, child task id)."""
    children: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start : start + 500]
        cursor.execute(
            f"SELECT {', '.join(_CHILD_COLUMNS)} FROM al_workflow_children"
            f" WHERE run_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for found in cursor.fetchall():
            row = dict(zip(_CHILD_COLUMNS, found, strict=True))
            children[(row["run_id"], row["child_task_id"])] = row
    return children


class _Fold:
    """Folds one batch: the workflow rows one by one; the child rows and messages it
    touches kept here, to be written once at the end of the batch."""

    def __init__(self, sealer: Sealer, children: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.sealer = sealer
        self.children = children
        self.touched: dict[tuple[str, str], None] = {}
        """Child rows to write (an ordered set)."""
        self.messages: list[tuple[Any, ...]] = []

    def apply(self, row: dict[str, Any] | None, run_id: str, event: Any) -> dict[str, Any] | None:
        at = iso(event.timestamp)
        if isinstance(event, GraphRun.GraphStarted):
            return {
                "run_id": run_id,
                "task_id": view_key(event.task_id),
                "graph": view_key(event.graph),
                "status": "running",
                "children_dispatched": 0,
                "children_finished": 0,
                "children_failed": 0,
                "message_count": 0,
                "started_at": at,
                "finished_at": None,
                "duration_ms": None,
                "error_kind": None,
                "error_message": None,
                "version": event.originator_version,
            }
        if row is None:
            return None
        row = dict(row, version=event.originator_version)
        if isinstance(event, GraphRun.ChildrenDispatched):
            sent: set[str] = set()  # a broadcast's children share one message
            for child in event.children:
                row["children_dispatched"] += 1
                key = (run_id, view_key(child["task_id"]))
                self.children[key] = {
                    "run_id": run_id,
                    "child_task_id": key[1],
                    "task_id": row["task_id"],
                    "seq": row["children_dispatched"],
                    "agent": view_key(child["agent"]),
                    "step_key": view_key(event.key),
                    "node_id": view_key(event.node_id),
                    "message_id": view_key(caused_by(child)),
                    "response_id": view_key(response_id(child["message_id"])),
                    "kind": str(child.get("kind", MessageKind.REQUEST)),
                    "status": "dispatched",
                    "dispatched_at": at,
                    "finished_at": None,
                    "duration_ms": None,
                    "output": None,
                    "error": None,
                }
                self.touched[key] = None
                message = request_message(row["task_id"], row["graph"], child, event.timestamp)
                if message.message_id not in sent:
                    sent.add(message.message_id)
                    self._message(row, message)
            row["status"] = "waiting"
        elif isinstance(event, GraphRun.ChildFinished):
            key = (run_id, view_key(event.child_task_id))
            child_row = self.children.get(key)
            if child_row is not None:  # as `workflow_messages`: only a dispatched child
                outcome = event.outcome if isinstance(event.outcome, dict) else {}
                response = answer_message(
                    row["task_id"],
                    row["graph"],
                    child_row["agent"],
                    child_row["response_id"],
                    child_row["message_id"],
                    outcome,
                    event.timestamp,
                )
                status = str(outcome.get("status"))
                completed = status == "completed"
                content = response.content  # the output, or {"error": ...}; bounded
                if not completed and isinstance(content, dict) and "error" in content:
                    content = content["error"]
                duration = outcome.get("duration_ms")
                child_row.update(
                    status=status,
                    finished_at=at,
                    duration_ms=float(duration) if isinstance(duration, int | float) else None,
                    output=self._seal(content) if completed else None,
                    error=None if completed else self._seal(content),
                )
                self.touched[key] = None
                self._message(row, response)
                row["children_finished"] += 1
                row["children_failed"] += 0 if completed else 1
            waiting = row["children_finished"] < row["children_dispatched"]
            row["status"] = "waiting" if waiting else "running"
        elif isinstance(event, GraphRun.GraphPaused):
            row["status"] = "paused"
        elif isinstance(event, GraphRun.GraphResumed):
            row["status"] = "running"
        elif isinstance(event, GraphRun.GraphCompleted):
            row.update(status="completed", finished_at=at, duration_ms=event.duration_ms)
        elif isinstance(event, GraphRun.GraphFailed):
            row.update(
                status="failed",
                finished_at=at,
                duration_ms=event.duration_ms,
                error_kind=event.error_kind,
                error_message=event.message,
            )
            # Children it still waited for are cancelled with it (the runner cancels
            # their runs): no outcome will be recorded for them.
            for key, child_row in self.children.items():
                if key[0] == run_id and child_row["status"] == "dispatched":
                    child_row.update(status="cancelled", finished_at=at)
                    self.touched[key] = None
        return row

    def _seal(self, value: Any) -> str:
        return self.sealer.seal(dumps(value))

    def _message(self, row: dict[str, Any], message: AgentMessage) -> None:
        row["message_count"] += 1
        self.messages.append(
            (
                row["task_id"],
                row["message_count"],
                row["run_id"],
                message.message_id,
                message.causation_id,
                message.sender,
                message.receiver,
                message.kind.value,
                self._seal(message.content),
                iso(message.at),
            )
        )


def _workflow(row: tuple[Any, ...]) -> WorkflowView:
    return WorkflowView.model_validate(dict(zip(_COLUMNS, row, strict=True)))


def _child(row: tuple[Any, ...], sealer: Sealer) -> WorkflowChildView:
    data = dict(zip(_CHILD_COLUMNS, row, strict=True))
    for column in ("output", "error"):
        value = data[column]
        data[column] = None if value is None else loads(sealer.unseal(value))
    return WorkflowChildView.model_validate(data)


def get_workflow(
    cursor: ViewCursor,
    *,
    run_id: str | None = None,
    task_id: str | None = None,
    with_children: bool = True,
    sealer: Sealer = PLAIN,
) -> WorkflowView | None:
    """One workflow by run id or task id, with its child tasks in dispatch order."""
    found = select_by_run_or_task(
        cursor, _SELECT, run_id=run_id, task_id=task_id, newest="started_at", query="get_workflow"
    )
    if found is None:
        return None
    view = _workflow(found)
    if not with_children:
        return view
    cursor.execute(
        f"SELECT {', '.join(_CHILD_COLUMNS)} FROM al_workflow_children WHERE run_id = ?"
        " ORDER BY seq",
        (view.run_id,),
    )
    children = [_child(row, sealer) for row in cursor.fetchall()]
    return view.model_copy(update={"children": children})


def list_workflows(
    cursor: ViewCursor,
    *,
    graph: str | None = None,
    status: GraphRunStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[WorkflowView]:
    """Workflows matching the filters, newest first (without their children)."""
    rows = select_page(
        cursor,
        _SELECT,
        (("graph", optional_key(graph)), ("status", status)),
        order_by="started_at DESC, run_id DESC",
        limit=limit,
        offset=offset,
        query="list_workflows",
    )
    return [_workflow(row) for row in rows]


def workflow_messages_of(
    cursor: ViewCursor,
    correlation_id: str,
    *,
    limit: int = 200,
    offset: int = 0,
    sealer: Sealer = PLAIN,
) -> list[WorkflowMessageView]:
    """The messages of the workflow whose task id is `correlation_id`, in order."""
    check_page("workflow_messages_of", limit, offset)
    columns = [c for c in _MESSAGE_COLUMNS if c != "run_id"]
    cursor.execute(
        f"SELECT {', '.join(columns)} FROM al_workflow_messages WHERE correlation_id = ?"
        " ORDER BY seq LIMIT ? OFFSET ?",
        (view_key(correlation_id), limit, offset),
    )
    messages = []
    for row in cursor.fetchall():
        data = dict(zip(columns, row, strict=True))
        data["content"] = loads(sealer.unseal(data["content"]))
        messages.append(WorkflowMessageView.model_validate(data))
    return messages

"""Queries over NATS request-reply: `<prefix>.query.<view>` answers with typed JSON.

Views: `conversation` {session_id}, `run` {run_id | task_id}, `runs` {agent, status,
session_id, limit, offset}, `metrics` {agent, limit, offset}, `snapshots` {kind, limit,
offset}, `graph_run` {run_id | task_id}, `graph_runs` {graph, status, limit, offset},
`memory` {query, k, agent, session_id, since, until, role} (similarity search: a list of
hits, best first, each with its score, text, run, session, agent, role and time),
`route_decisions` {with_feedback, limit, offset} (newest first), `evaluations` {dataset,
status, limit, offset} (newest first), `evaluation` {evaluation_id | task_id} (with its
scored cases), `workflow` {run_id | task_id}
(a graph run that dispatched child tasks, with its children), `workflows` {graph, status,
limit, offset}, `workflow_messages` {correlation_id (the workflow's task id), limit,
offset} (in order), `alerts` {state (raised | cleared), agent, limit, offset} (the latest
changed first). Every list is paged: `limit` (default 50; 100 agents for metrics,
200 messages for workflow_messages; at most 1000) and `offset`. The reply is `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
An error of the query itself (unknown view, bad arguments, nothing found) is said as it
is; any other is logged with an id and answered `internal error (logged as <id>)`, so
nothing of the service's internals reaches a client. A reply larger than the server's
`max_payload` is answered with an error asking for fewer rows. The responder outlives
every failure to answer (a reply subject gone, a connection draining): it is logged. The
CLI's `query` command calls the same `answer()` directly against the view store.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from agentledger.domain.graphs.run import GraphRunStatus
from agentledger.infra.event_store import StoreUnavailable
from agentledger.infra.view_store import ViewStore
from agentledger.projections.conversations import get_conversation
from agentledger.projections.evaluation import get_evaluation, list_evaluations
from agentledger.projections.graphs.runs import get_graph_run, list_graph_runs
from agentledger.projections.metrics import agent_metrics
from agentledger.projections.monitoring import list_alerts
from agentledger.projections.orchestration import (
    get_workflow,
    list_workflows,
    workflow_messages_of,
)
from agentledger.projections.routing import list_route_decisions
from agentledger.projections.runs import get_run, list_runs
from agentledger.projections.snapshots import list_snapshots

if TYPE_CHECKING:
    from agentledger.handlers.memory.reader import MemoryReader

__all__ = ["VIEWS", "QueryError", "QueryService", "answer"]

log = structlog.get_logger("agentledger.queries")

_HEADERS_ROOM = 512
"""Bytes of `max_payload` kept for a reply's headers."""


class QueryError(Exception):
    """A query named an unknown view, had bad arguments, or found nothing."""


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationQuery(_Query):
    session_id: str


class _ByIdQuery(_Query):
    """One record by run id, or the newest of a task id."""

    run_id: str | None = None
    task_id: str | None = None


class RunQuery(_ByIdQuery):
    pass


class RunsQuery(_Query):
    agent: str | None = None
    status: Literal["running", "completed", "failed", "rejected", "paused"] | None = None
    session_id: str | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class MetricsQuery(_Query):
    agent: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class SnapshotsQuery(_Query):
    kind: Literal["run", "session"] | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class GraphRunQuery(_ByIdQuery):
    pass


class GraphRunsQuery(_Query):
    graph: str | None = None
    status: GraphRunStatus | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class WorkflowQuery(_ByIdQuery):
    pass


class WorkflowsQuery(_Query):
    graph: str | None = None
    status: GraphRunStatus | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class WorkflowMessagesQuery(_Query):
    correlation_id: str
    limit: int = Field(default=200, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class RouteDecisionsQuery(_Query):
    with_feedback: bool = False
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class AlertsQuery(_Query):
    state: Literal["raised", "cleared"] | None = None
    agent: str | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class EvaluationsQuery(_Query):
    dataset: str | None = None
    status: Literal["running", "finished"] | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class EvaluationQuery(_Query):
    evaluation_id: str | None = None
    task_id: str | None = None


class MemoryQuery(_Query):
    query: str = Field(min_length=1, max_length=8000)
    k: int = Field(default=5, ge=1, le=100)
    agent: str | None = None
    session_id: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    role: Literal["user", "assistant"] | None = None


VIEWS: dict[str, type[_Query]] = {
    "conversation": ConversationQuery,
    "run": RunQuery,
    "runs": RunsQuery,
    "metrics": MetricsQuery,
    "snapshots": SnapshotsQuery,
    "graph_run": GraphRunQuery,
    "graph_runs": GraphRunsQuery,
    "workflow": WorkflowQuery,
    "workflows": WorkflowsQuery,
    "workflow_messages": WorkflowMessagesQuery,
    "memory": MemoryQuery,
    "route_decisions": RouteDecisionsQuery,
    "evaluations": EvaluationsQuery,
    "evaluation": EvaluationQuery,
    "alerts": AlertsQuery,
}

_BY_ID: dict[type[_ByIdQuery], tuple[str, Callable[..., Any]]] = {
    RunQuery: ("run", get_run),
    GraphRunQuery: ("graph run", get_graph_run),
    WorkflowQuery: ("workflow", get_workflow),
}
"""What each by-id query is called in its "not found" error, and the view function."""


def answer(
    views: ViewStore,
    view: str,
    arguments: dict[str, Any],
    memory: MemoryReader | None = None,
) -> Any:
    """Run one query against the view store; returns JSON-compatible data. `memory`
    answers the `memory` view (None: this responder keeps no memory view)."""
    try:
        query_type = VIEWS[view]
    except KeyError:
        raise QueryError(f"unknown view {view!r}; views: {', '.join(VIEWS)}") from None
    try:
        query = query_type.model_validate(arguments)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "arguments"
        raise QueryError(f"bad arguments for {view}: {where}: {first['msg']}") from None
    if isinstance(query, MemoryQuery):
        if memory is None:
            raise QueryError("the memory view is off here (AGENTLEDGER_MEMORY_ENABLED=false)")
        if not query.query.strip():
            raise QueryError("bad arguments for memory: query: must hold some text")
        try:
            hits = memory.search_similar(
                query.query,
                query.k,
                agent=query.agent,
                session=query.session_id,
                since=query.since,
                until=query.until,
                role=query.role,
            )
        except ValueError as e:  # bad input, or a view made by another embedder
            raise QueryError(f"memory: {e}") from None
        return to_jsonable_python(hits)
    with views.read() as cursor:
        result: Any
        if isinstance(query, ConversationQuery):
            result = get_conversation(cursor, query.session_id, views.sealer)
            if result is None:
                raise QueryError(f"no conversation {query.session_id!r}")
        elif isinstance(query, _ByIdQuery):
            noun, get = _BY_ID[type(query)]
            if not (query.run_id or query.task_id):
                raise QueryError(f"{view} needs run_id or task_id")
            result = get(cursor, run_id=query.run_id, task_id=query.task_id, sealer=views.sealer)
            if result is None:
                raise QueryError(f"no {noun} {query.run_id or query.task_id!r}")
        elif isinstance(query, RunsQuery):
            result = list_runs(
                cursor,
                agent=query.agent,
                status=query.status,
                session_id=query.session_id,
                limit=query.limit,
                offset=query.offset,
                sealer=views.sealer,
            )
        elif isinstance(query, MetricsQuery):
            result = agent_metrics(
                cursor, agent=query.agent, limit=query.limit, offset=query.offset
            )
        elif isinstance(query, WorkflowsQuery):
            result = list_workflows(
                cursor,
                graph=query.graph,
                status=query.status,
                limit=query.limit,
                offset=query.offset,
            )
        elif isinstance(query, WorkflowMessagesQuery):
            result = workflow_messages_of(
                cursor,
                query.correlation_id,
                limit=query.limit,
                offset=query.offset,
                sealer=views.sealer,
            )
        elif isinstance(query, RouteDecisionsQuery):
            result = list_route_decisions(
                cursor,
                with_feedback=query.with_feedback,
                limit=query.limit,
                offset=query.offset,
                sealer=views.sealer,
            )
        elif isinstance(query, AlertsQuery):
            result = list_alerts(
                cursor,
                state=query.state,
                agent=query.agent,
                limit=query.limit,
                offset=query.offset,
            )
        elif isinstance(query, EvaluationsQuery):
            result = list_evaluations(
                cursor,
                dataset=query.dataset,
                status=query.status,
                limit=query.limit,
                offset=query.offset,
            )
        elif isinstance(query, EvaluationQuery):
            if not (query.evaluation_id or query.task_id):
                raise QueryError("evaluation needs evaluation_id or task_id")
            result = get_evaluation(
                cursor,
                evaluation_id=query.evaluation_id,
                task_id=query.task_id,
                sealer=views.sealer,
            )
            if result is None:
                raise QueryError(f"no evaluation {query.evaluation_id or query.task_id!r}")
        elif isinstance(query, GraphRunsQuery):
            result = list_graph_runs(
                cursor,
                graph=query.graph,
                status=query.status,
                limit=query.limit,
                offset=query.offset,
                sealer=views.sealer,
            )
        else:
            assert isinstance(query, SnapshotsQuery)
            result = list_snapshots(cursor, kind=query.kind, limit=query.limit, offset=query.offset)
    return to_jsonable_python(result)


class QueryService:
    """Answers `<prefix>.query.*` requests (queue group: any number of responders)."""

    def __init__(
        self, *, views: ViewStore, nc: Client, prefix: str, memory: MemoryReader | None = None
    ) -> None:
        self._views = views
        self.memory = memory
        """Answers the `memory` view (set once the memory projector runs)."""
        self._nc = nc
        self._prefix = prefix
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(
            f"{self._prefix}.query.*", queue="agentledger-query", cb=self._on_request
        )
        # The server has the subscription once the flush returns: a client on another
        # connection that asks right after `start` finds a responder (no NoResponders race).
        await self._nc.flush()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_request(self, msg: Msg) -> None:
        view = msg.subject.rsplit(".", 1)[-1][:100]
        try:
            payload = await self._reply(view, msg.data)
            if len(payload) > self._nc.max_payload - _HEADERS_ROOM:
                log.warning("query reply too large", view=view, bytes=len(payload))
                payload = json.dumps(
                    {
                        "ok": False,
                        "error": f"the reply is {len(payload)} bytes, more than NATS max_payload"
                        f" ({self._nc.max_payload}) allows; ask for fewer rows (limit)",
                    }
                ).encode()
            if msg.reply:
                await msg.respond(payload)
        except Exception as e:  # never let one request end the responder
            log.warning("could not answer a query", view=view, error=repr(e))

    async def _reply(self, view: str, data: bytes) -> bytes:
        """The reply to one request, encoded: its data, or an error a client may read."""
        try:
            arguments = json.loads(data) if data else {}
            if not isinstance(arguments, dict):
                raise QueryError("query arguments must be a JSON object")
            result = await asyncio.to_thread(answer, self._views, view, arguments, self.memory)
            return json.dumps({"ok": True, "data": result}).encode()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            error = f"query is not valid JSON: {e}"
        except QueryError as e:
            error = str(e)
        except Exception as e:
            error_id = uuid.uuid4().hex[:12]
            log.exception("query failed", view=view, error_id=error_id)
            if isinstance(e, StoreUnavailable):
                error = f"views unavailable; try again (logged as {error_id})"
            else:
                error = f"internal error (logged as {error_id})"
        return json.dumps({"ok": False, "error": error}).encode()

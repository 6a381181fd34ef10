"""What the dashboard reads on request, besides its live board: a page of runs, a run's
event timeline, a replay, a graph run with its Mermaid diagrams, alerts, evaluations.

Every function here blocks (store and view reads, the catalog's imports, a replay):
the app calls them off the event loop. Their input is checked before they are called
(ids by `ID_PATTERN`, filters by the query models of `agentledger.handlers.queries`), and
what they return is plain JSON-ready data, with the recorded text as it was: the page
shows it as text, never as markup.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.orchestration.diagram import sequence_diagram
from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.domain.run import AgentRun
from agentledger.domain.timeline import event_record
from agentledger.handlers.cli_support import CliError, resolve
from agentledger.handlers.queries import QueryError, answer
from agentledger.handlers.render import event_summary
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore

__all__ = ["MAX_EVENT_BYTES", "MAX_TIMELINE_EVENTS", "DashboardReads", "NotFound", "Unavailable"]

MAX_TIMELINE_EVENTS = 2000
"""A timeline shows at most this many events (the first ones)."""
MAX_EVENT_BYTES = 64 * 1024
"""An event's data larger than this as JSON is left out of the timeline (its summary
stays; `agentledger events ID --json` prints it whole)."""


class NotFound(LookupError):
    """Nothing with that id."""


class Unavailable(Exception):
    """What is asked needs something missing here (the catalog, the evaluations view)."""


@dataclass(kw_only=True)
class DashboardReads:
    settings: Settings
    store: EventStore
    views: ViewStore
    _catalog: Any = field(default=None, init=False)
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def catalog(self) -> Any:
        """The catalog, loaded on first use (replays and graph diagrams need its code;
        the live board does not)."""
        with self._catalog_lock:
            if self._catalog is None:
                from agentledger.handlers.bootstrap import load_catalog

                try:
                    self._catalog = load_catalog(self.settings)
                except Exception as e:
                    raise Unavailable(f"the catalog could not be loaded: {e}") from None
            return self._catalog

    def query(self, view: str, arguments: dict[str, Any]) -> Any:
        """A view query (`QueryError` for bad arguments or nothing found)."""
        return answer(self.views, view, arguments)

    def timeline(self, identifier: str) -> dict[str, Any]:
        """The events of a run (agent or graph), a rejected task or a session, each with
        the one-line summary `agentledger events` shows, and the run's view row."""
        try:
            aggregate_id, events = resolve(self.store, identifier)
        except CliError:
            raise NotFound(f"no events for {identifier!r}") from None
        records = [event_record(e) for e in events[:MAX_TIMELINE_EVENTS]]
        kind = records[0].aggregate_type
        shown = []
        for record in records:
            data: Any = record.data
            size = len(json.dumps(data, default=str))
            if size > MAX_EVENT_BYTES:
                data = None
            shown.append(
                {
                    "version": record.version,
                    "name": record.name,
                    "aggregate_type": record.aggregate_type,
                    "timestamp": record.timestamp,
                    "summary": event_summary(record),
                    "data": data,
                    "data_bytes": size,
                }
            )
        row = None
        view = {"AgentRun": "run", "GraphRun": "graph_run"}.get(kind)
        if view is not None:
            try:
                row = answer(self.views, view, {"run_id": str(aggregate_id)})
            except QueryError:
                row = None  # not folded yet
        return {
            "id": str(aggregate_id),
            "kind": kind,
            "events": shown,
            "truncated": len(events) > MAX_TIMELINE_EVENTS,
            "view": row,
            "replayable": kind in ("AgentRun", "GraphRun"),
        }

    def replay(self, identifier: str) -> dict[str, Any]:
        """Replay a recorded agent or graph run with the catalog's current code (as
        `agentledger replay` does: recorded model responses and tool results, no model
        call, no tool effect); the report: `identical` or the first divergence. Runs
        in the calling thread, with an event loop of its own."""
        from agentledger.handlers.graphs.replay import recorded_graph_run, replay_graph_run
        from agentledger.handlers.replay import recorded_run, replay_recorded

        try:
            aggregate_id, events = resolve(self.store, identifier)
        except CliError:
            raise NotFound(f"no run {identifier!r}") from None
        catalog = self.catalog()
        if isinstance(events[0], AgentRun.RunRequested):
            recorded = recorded_run(self.store, aggregate_id)
            report = asyncio.run(replay_recorded(recorded, catalog))
        elif isinstance(events[0], GraphRun.GraphStarted):
            graph_run = recorded_graph_run(self.store, aggregate_id)
            report = asyncio.run(replay_graph_run(graph_run, catalog))  # type: ignore[assignment]
        else:
            raise NotFound(f"{identifier!r} is not an agent or graph run: nothing to replay")
        result: dict[str, Any] = report.as_dict()
        return result

    def graph(self, identifier: str) -> dict[str, Any]:
        """A graph run (the graph_runs view's row, with its steps), the graph drawn as a
        Mermaid state diagram with the nodes it visited marked, and, for a workflow, its
        messages as a Mermaid sequence diagram."""
        from agentledger.handlers.graphs.cli import visited_mermaid

        try:
            UUID(identifier)
            key = "run_id"
        except ValueError:
            key = "task_id"
        try:
            view = answer(self.views, "graph_run", {key: identifier})
        except QueryError:
            raise NotFound(f"no graph run {identifier!r}") from None
        diagram: str | None = None
        problem: str | None = None
        try:
            entry = self.catalog().graphs.get(view["graph"])
            if entry is None:
                problem = f"graph {view['graph']!r} is not in the catalog"
            else:
                diagram = visited_mermaid(entry.graph.render(title=view["graph"]), view["path"])
        except Unavailable as e:
            problem = str(e)
        events = self.store.events(UUID(view["run_id"]))
        if not events:
            events = self.store.events(graph_run_id_for(view["task_id"]))
        messages = workflow_messages(events)
        sequence = None
        if any(isinstance(e, GraphRun.ChildrenDispatched) for e in events):
            sequence = sequence_diagram(messages, title=f"{view['task_id']} ({view['graph']})")
        return {
            "view": view,
            "mermaid": diagram,
            "mermaid_problem": problem,
            "sequence": sequence,
            "messages": len(messages),
        }

    def evaluations(self) -> dict[str, Any]:
        """The latest evaluations (the evaluations view), each with its report's URL."""
        rows = answer(self.views, "evaluations", {"limit": 20})
        for row in rows:
            row.pop("summary", None)
            row["report_url"] = f"/evaluations/{row['evaluation_id']}/report.html"
        return {"rows": rows}

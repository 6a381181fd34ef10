"""Replay of graph runs: re-execute a recorded run with the graph's current code, offline.

The graph is driven by the same `GraphExecutor` the workers use, in replay mode: every
step is served from its recorded result (no step body runs, so no side effect and no
model call), while the graph's own logic - decision predicates, edge transforms, join
reducers, the order of steps - runs again on the recorded values. The replay is
`identical` when it walks the recorded path to the recorded output, and otherwise names
the first divergence: a decision that now takes another branch, a step the recording
does not have (a changed graph), a recorded step the replay never reaches, or another
output.

The agent runs of the run's agent steps are replayed too, as agent runs are
(`agentledger.handlers.replay`): their recorded model responses and tool results are
served, so a changed agent shows as a divergence of its step's run.

Where the recording stops early - the run is paused, still running, cancelled, past its
deadline, or failed in a step - the replay checks the graph up to there and says so in
the report's note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import TypeAdapter

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.run import GraphHistory, GraphRun, graph_run_of
from agentledger.domain.history_file import HistoryDocument, decode_aggregate
from agentledger.domain.ids import run_id_for
from agentledger.handlers.graphs.executor import GraphDiverged, GraphExecutor, StepLimitExceeded
from agentledger.handlers.graphs.runner import agent_step_task_id
from agentledger.handlers.replay import (
    RecordedRun,
    ReplayReport,
    recorded_run,
    recorded_runs,
    replay_recorded,
)
from agentledger.infra.event_store import EventStore

if TYPE_CHECKING:
    from agentledger.handlers.catalog import Catalog

__all__ = [
    "GraphDivergence",
    "GraphNotInCatalog",
    "GraphReplayReport",
    "NotAGraphRun",
    "RecordedGraphRun",
    "recorded_graph_run",
    "recorded_graph_runs",
    "replay_graph_run",
]

_ENVIRONMENT_ENDINGS = frozenset({str(ErrorKind.CANCELLED), str(ErrorKind.DEADLINE_EXCEEDED)})
"""Failure kinds that stop a run from outside its code: the recording ends there."""


class NotAGraphRun(LookupError):
    """The id names no graph run."""


class GraphNotInCatalog(LookupError):
    """The recorded run's graph is not in the catalog (replay needs its code)."""


@dataclass(frozen=True, kw_only=True)
class RecordedGraphRun:
    """A recorded graph run and the agent runs of its agent steps."""

    events: tuple[Any, ...]
    agent_runs: tuple[RecordedRun, ...] = ()

    @property
    def started(self) -> GraphRun.GraphStarted:
        first = self.events[0]
        assert isinstance(first, GraphRun.GraphStarted)
        return first


@dataclass(frozen=True, kw_only=True)
class GraphDivergence:
    """Where a graph replay first left the recording."""

    node_id: str
    key: str
    """The task key of the step, decision or join (its causal path)."""
    message: str
    index: int | None = None
    """The recorded event it contradicts (its version), when there is one."""

    def summary(self) -> str:
        at = f" (event {self.index})" if self.index is not None else ""
        return f"diverged at {self.node_id}{at}: {self.message}"


ReplayVerdict = Literal["identical", "diverged"]


@dataclass(frozen=True, kw_only=True)
class GraphReplayReport:
    run_id: str
    task_id: str
    graph: str
    verdict: ReplayVerdict
    recorded_steps: int
    served_steps: int
    divergence: GraphDivergence | None = None
    note: str | None = None
    agent_steps: tuple[ReplayReport, ...] = field(default=())
    """Replays of the agent runs of the run's agent steps."""

    @property
    def identical(self) -> bool:
        return self.verdict == "identical"

    def as_dict(self) -> dict[str, Any]:
        d = self.divergence
        return {
            "kind": "graph",
            "run_id": self.run_id,
            "task_id": self.task_id,
            "graph": self.graph,
            "verdict": self.verdict,
            "recorded_steps": self.recorded_steps,
            "served_steps": self.served_steps,
            "divergence": None
            if d is None
            else {"node": d.node_id, "key": d.key, "index": d.index, "summary": d.summary()},
            "note": self.note,
            "agent_steps": [r.as_dict() for r in self.agent_steps],
        }


def _agent_runs(store: EventStore, events: Sequence[Any]) -> list[RecordedRun]:
    """The recorded agent runs of a graph run's steps (a step that ran `agent_step`)."""
    task_id = events[0].task_id
    keys = dict.fromkeys(e.key for e in events if isinstance(e, GraphRun.StepStarted))
    found = []
    for key in keys:
        run_id = run_id_for(agent_step_task_id(task_id, key))
        if store.events(run_id, lte=1):
            found.append(recorded_run(store, run_id))
    return found


def recorded_graph_run(store: EventStore, run_id: UUID) -> RecordedGraphRun:
    """A graph run and its agent steps' runs, read from a store."""
    events = store.events(run_id)
    if not events or not isinstance(events[0], GraphRun.GraphStarted):
        raise NotAGraphRun(f"no graph run {run_id} in the event store")
    return RecordedGraphRun(events=tuple(events), agent_runs=tuple(_agent_runs(store, events)))


def recorded_graph_runs(document: HistoryDocument) -> list[RecordedGraphRun]:
    """Every graph run of a history document, with the agent runs of its steps."""
    graphs = [
        decode_aggregate(a) for a in document.aggregates if a.aggregate_type == GraphRun.__name__
    ]
    agent_runs = recorded_runs(document)
    result = []
    for events in graphs:
        task_id = events[0].task_id
        mine = tuple(r for r in agent_runs if r.requested.metadata.get("graph_task_id") == task_id)
        result.append(RecordedGraphRun(events=tuple(events), agent_runs=mine))
    return result


def _stop_points(events: Sequence[Any]) -> dict[str, str]:
    """Task keys where the recording stops, with why: a step started and never finished
    (in flight, or failed), a pause without its input."""
    finished = {e.key for e in events if isinstance(e, GraphRun.StepFinished)}
    stops: dict[str, str] = {}
    for e in events:
        if isinstance(e, GraphRun.StepStarted) and e.key not in finished:
            stops[e.key] = "the step had not finished"
        elif isinstance(e, GraphRun.StepFailed):
            stops[e.key] = f"the step failed ({e.error})"
        elif isinstance(e, GraphRun.GraphPaused):
            stops[e.key] = "the run paused here for input"
        elif isinstance(e, GraphRun.GraphResumed):
            stops.pop(e.key, None)
    return stops


async def _noop_save() -> None:  # replay never records: every step is served
    raise AssertionError("a replay recorded an event")


async def replay_graph_run(recorded: RecordedGraphRun, catalog: Catalog) -> GraphReplayReport:
    """Replay one recorded graph run with the catalog's graph (see the module docstring)."""
    events = list(recorded.events)
    started = recorded.started
    entry = catalog.graphs.get(started.graph)
    if entry is None:
        known = ", ".join(sorted(catalog.graphs)) or "none"
        raise GraphNotInCatalog(
            f"graph {started.graph!r} of run {started.task_id!r} is not in the catalog"
            f" (it has: {known}); replay needs the graph's code"
        )
    graph = entry.graph
    run = graph_run_of(events)
    assert run is not None
    history = GraphHistory.fold(events)
    terminal = (
        events[-1]
        if isinstance(events[-1], GraphRun.GraphCompleted | GraphRun.GraphFailed)
        else None
    )
    executor = GraphExecutor(graph, run, history, save=_noop_save, replay=True)
    divergence: GraphDivergence | None = None
    note: str | None = None
    branch_versions = {
        e.key: e.originator_version for e in events if isinstance(e, GraphRun.BranchTaken)
    }
    try:
        inputs = TypeAdapter(graph.input_type).validate_python(started.inputs)
        output = await executor.execute(inputs)
    except GraphDiverged as d:
        stops = _stop_points(events)
        failed = terminal if isinstance(terminal, GraphRun.GraphFailed) else None
        ended_outside = failed is not None and failed.error_kind in _ENVIRONMENT_ENDINGS
        if d.reason == "unrecorded_step" and d.key in stops:
            note = f"the recording stops at {d.node_id}: {stops[d.key]}"
        elif d.reason.startswith("unrecorded") and (terminal is None or ended_outside):
            status = "had not finished" if failed is None else f"ended: {failed.error_kind}"
            note = f"the recording ends before {d.node_id} (the run {status})"
        else:
            divergence = GraphDivergence(
                node_id=d.node_id, key=d.key, message=d.message, index=branch_versions.get(d.key)
            )
    except StepLimitExceeded as e:
        if isinstance(terminal, GraphRun.GraphFailed) and terminal.error_kind == str(
            ErrorKind.STEP_LIMIT_EXCEEDED
        ):
            note = f"the run failed at its step bound, as recorded ({e})"
        else:
            divergence = GraphDivergence(
                node_id="(run)", key="", message=f"the replay hit the step bound: {e}"
            )
    except Exception as e:  # the graph's own logic raised on recorded values
        divergence = GraphDivergence(
            node_id="(run)", key="", message=f"the replay raised {type(e).__name__}: {e}"
        )
    else:
        divergence = _compare_ending(executor, history, terminal, output)
    agent_steps = tuple([await replay_recorded(r, catalog) for r in recorded.agent_runs])
    diverged = divergence is not None or not all(r.identical for r in agent_steps)
    return GraphReplayReport(
        run_id=str(started.originator_id),
        task_id=started.task_id,
        graph=started.graph,
        verdict="diverged" if diverged else "identical",
        recorded_steps=len(history.steps),
        served_steps=len(executor.served_keys),
        divergence=divergence,
        note=note,
        agent_steps=agent_steps,
    )


def _compare_ending(
    executor: GraphExecutor, history: GraphHistory, terminal: Any, output: Any
) -> GraphDivergence | None:
    """The replay reached the graph's end: the recording must end there, the same way."""
    served = set(executor.served_keys)
    missed = [s for k, s in history.steps.items() if k not in served]
    if missed:
        first = min(missed, key=lambda s: s.version)
        return GraphDivergence(
            node_id=first.node_id,
            key=first.key,
            message="the recorded step was not reached: the replay took another path",
            index=first.version,
        )
    if not isinstance(terminal, GraphRun.GraphCompleted):
        ending = "no ending" if terminal is None else f"failed ({terminal.error_kind})"
        return GraphDivergence(
            node_id="(end)", key="", message=f"the replay completed; the recording has {ending}"
        )
    dumped = executor.dump_output(output)
    if dumped != terminal.output:
        return GraphDivergence(
            node_id="(end)",
            key="",
            message=f"output {dumped!r}; the record has {terminal.output!r}",
            index=terminal.originator_version,
        )
    return None

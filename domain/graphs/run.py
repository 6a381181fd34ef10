"""The graph-run aggregate: one durable run of a pydantic-graph workflow.

Every step that finishes is a checkpoint: `StepFinished` holds the step's output and the
graph state after it. A re-execution serves recorded steps instead of running them, so
only unrecorded steps run live. Steps are identified by a *task key*: a digest of the
step's causal path through the graph (parent step, node id, fork branch index), which
is the same on every re-execution, whatever order parallel branches finish in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.errors import InvalidTransition
from agentledger.domain.ids import graph_run_id_for

__all__ = [
    "GraphHistory",
    "GraphRun",
    "GraphRunStatus",
    "RecordedStep",
    "copy_graph_steps",
    "graph_run_of",
]

GraphRunStatus = Literal["running", "paused", "waiting", "completed", "failed"]
"""`waiting`: a step dispatched child tasks (`call_agents`) and waits for their
outcomes; the run holds no worker while it waits."""

JSON = Any
"""A JSON-compatible value."""


class GraphRun(Aggregate):
    """One run of a named graph for one task."""

    TOPIC = "agentledger.GraphRun"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.GraphRun.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.GraphRun.Created"

    class GraphStarted(Created):
        """A graph task was accepted (or a run was forked from another's checkpoint)."""

        TOPIC = "agentledger.GraphRun.GraphStarted"
        class_version = 1
        task_id: str
        graph: str
        inputs: JSON
        state: JSON
        """The initial state (None: the graph's state type's default); for a fork, the
        state at the fork point (the parent's, or the one the fork was given)."""
        metadata: dict[str, str]
        max_steps: int
        deadline: str | None
        parent_run_id: str | None
        """For a fork: the run it branched from."""
        fork_at: int | None
        """For a fork: the parent's version after which it branched; its own recorded
        steps are copies of the parent's up to there."""

    class StepStarted(Event):
        """A step began to run live (not served from the record)."""

        TOPIC = "agentledger.GraphRun.StepStarted"
        class_version = 1
        key: str
        node_id: str

    class StepFinished(Event):
        """A step returned: its output, and the graph state after it (a checkpoint)."""

        TOPIC = "agentledger.GraphRun.StepFinished"
        class_version = 1
        key: str
        node_id: str
        output: JSON
        state: JSON
        duration_ms: float

    class StepFailed(Event):
        """A step raised."""

        TOPIC = "agentledger.GraphRun.StepFailed"
        class_version = 1
        key: str
        node_id: str
        error: str

    class BranchTaken(Event):
        """A decision chose a branch (its index among the decision's branches)."""

        TOPIC = "agentledger.GraphRun.BranchTaken"
        class_version = 1
        key: str
        node_id: str
        branch: int
        destination: str

    class JoinCompleted(Event):
        """A join reduced its branches' results (recorded: arrival order varies)."""

        TOPIC = "agentledger.GraphRun.JoinCompleted"
        class_version = 1
        key: str
        node_id: str
        value: JSON

    class GraphPaused(Event):
        """A step waits for human input; the run resumes on a `ResumeGraph` message."""

        TOPIC = "agentledger.GraphRun.GraphPaused"
        class_version = 1
        key: str
        node_id: str
        prompt: JSON

    class GraphResumed(Event):
        """Human input arrived for the paused step (`resume_id` dedups resumes)."""

        TOPIC = "agentledger.GraphRun.GraphResumed"
        class_version = 1
        key: str
        input: JSON
        resume_id: str

    class ChildrenDispatched(Event):
        """A step dispatched child agent tasks over NATS; the run waits for them.

        v2 added `reply_to`: v1 events are upcast with None."""

        TOPIC = "agentledger.GraphRun.ChildrenDispatched"
        class_version = 2
        key: str
        node_id: str
        children: list[dict[str, Any]]
        """Each: task_id, agent, prompt, message_id (the request's); optionally kind
        (`handoff`), session_id, fail_fast (true) and deadline (ISO 8601)."""
        reply_to: str | None
        """The (checked) reply subject of the delivery that dispatched: where the run's
        outcome is also answered when it ends, since that delivery ended waiting."""

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reply_to"] = None

    class ChildFinished(Event):
        """A dispatched child's outcome arrived (once per child)."""

        TOPIC = "agentledger.GraphRun.ChildFinished"
        class_version = 1
        key: str
        child_task_id: str
        outcome: JSON

    class GraphCompleted(Event):
        TOPIC = "agentledger.GraphRun.GraphCompleted"
        class_version = 1
        output: JSON
        duration_ms: float

    class GraphFailed(Event):
        TOPIC = "agentledger.GraphRun.GraphFailed"
        class_version = 1
        error_kind: str
        message: str
        duration_ms: float

    @staticmethod
    def create_id(task_id: str) -> UUID:
        return graph_run_id_for(task_id)

    @event(GraphStarted)
    def __init__(
        self,
        task_id: str,
        graph: str,
        inputs: JSON,
        state: JSON,
        metadata: dict[str, str],
        max_steps: int,
        deadline: str | None,
        parent_run_id: str | None = None,
        fork_at: int | None = None,
    ) -> None:
        self.task_id = task_id
        self.graph = graph
        self.max_steps = max_steps
        self.deadline = deadline
        self.parent_run_id = parent_run_id
        self.status: GraphRunStatus = "running"
        self.steps = 0
        self.paused_key: str | None = None
        self.paused_node: str | None = None
        self.paused_prompt: JSON = None
        self.duration_ms: float | None = None
        self.resume_ids: set[str] = set()
        self.waiting_on: dict[str, set[str]] = {}
        """Step key -> child task ids dispatched and not finished yet."""
        self.children: dict[str, str] = {}
        """Child task id -> the key of the step that dispatched it."""
        self.reply_to: str | None = None
        """Where the outcome is answered besides the results subject once the run ends:
        the reply subject of the delivery that first dispatched children."""
        self.fail_fast: set[str] = set()
        """Keys of the steps whose dispatch stops waiting at the first failed child."""
        self.output: JSON = None
        self.error_kind: str | None = None
        self.error_message: str | None = None

    def _require(self, what: str, *statuses: GraphRunStatus) -> None:
        if self.status not in statuses:
            raise InvalidTransition(what, self.status)

    def start_step(self, key: str, node_id: str) -> None:
        self._require("start a step", "running")
        self._trigger_step_started(key=key, node_id=node_id)

    @event(StepStarted)
    def _trigger_step_started(self, key: str, node_id: str) -> None:
        self.steps += 1

    def finish_step(
        self, key: str, node_id: str, output: JSON, state: JSON, duration_ms: float
    ) -> None:
        self._require("finish a step", "running")
        self._trigger_step_finished(
            key=key, node_id=node_id, output=output, state=state, duration_ms=duration_ms
        )

    @event(StepFinished)
    def _trigger_step_finished(
        self, key: str, node_id: str, output: JSON, state: JSON, duration_ms: float
    ) -> None:
        pass

    def fail_step(self, key: str, node_id: str, error: str) -> None:
        self._require("fail a step", "running")
        self._trigger_step_failed(key=key, node_id=node_id, error=error)

    @event(StepFailed)
    def _trigger_step_failed(self, key: str, node_id: str, error: str) -> None:
        pass

    def take_branch(self, key: str, node_id: str, branch: int, destination: str) -> None:
        self._require("take a branch", "running")
        self._trigger_branch(key=key, node_id=node_id, branch=branch, destination=destination)

    @event(BranchTaken)
    def _trigger_branch(self, key: str, node_id: str, branch: int, destination: str) -> None:
        pass

    def complete_join(self, key: str, node_id: str, value: JSON) -> None:
        self._require("complete a join", "running")
        self._trigger_join(key=key, node_id=node_id, value=value)

    @event(JoinCompleted)
    def _trigger_join(self, key: str, node_id: str, value: JSON) -> None:
        pass

    def pause(self, key: str, node_id: str, prompt: JSON) -> None:
        self._require("pause", "running")
        self._trigger_paused(key=key, node_id=node_id, prompt=prompt)

    @event(GraphPaused)
    def _trigger_paused(self, key: str, node_id: str, prompt: JSON) -> None:
        self.status = "paused"
        self.paused_key = key
        self.paused_node = node_id
        self.paused_prompt = prompt

    def resume(self, input: JSON, resume_id: str) -> bool:
        """Record the input for the paused step; False if this resume was applied before."""
        if resume_id in self.resume_ids:
            return False
        self._require("resume", "paused")
        assert self.paused_key is not None
        self._trigger_resumed(key=self.paused_key, input=input, resume_id=resume_id)
        return True

    @event(GraphResumed)
    def _trigger_resumed(self, key: str, input: JSON, resume_id: str) -> None:
        self.status = "running"
        self.paused_key = None
        self.paused_node = None
        self.paused_prompt = None
        self.resume_ids.add(resume_id)

    def dispatch_children(
        self,
        key: str,
        node_id: str,
        children: list[dict[str, Any]],
        reply_to: str | None = None,
    ) -> None:
        self._require("dispatch children", "running")
        self._trigger_dispatched(key=key, node_id=node_id, children=children, reply_to=reply_to)

    @event(ChildrenDispatched)
    def _trigger_dispatched(
        self, key: str, node_id: str, children: list[dict[str, Any]], reply_to: str | None
    ) -> None:
        self.status = "waiting"
        if self.reply_to is None:
            self.reply_to = reply_to
        self.waiting_on[key] = {c["task_id"] for c in children}
        if any(c.get("fail_fast") for c in children):
            self.fail_fast.add(key)
        for child in children:
            self.children[child["task_id"]] = key

    def finish_child(self, child_task_id: str, outcome: JSON) -> bool:
        """Record a dispatched child's outcome; False if it is not a child still awaited
        (unknown, or recorded before). The run runs again once a step has them all."""
        key = self.children.get(child_task_id)
        if key is None or child_task_id not in self.waiting_on.get(key, set()):
            return False
        self._require("record a child's outcome", "waiting")
        self._trigger_child_finished(key=key, child_task_id=child_task_id, outcome=outcome)
        return True

    @event(ChildFinished)
    def _trigger_child_finished(self, key: str, child_task_id: str, outcome: JSON) -> None:
        waiting = self.waiting_on.get(key, set())
        waiting.discard(child_task_id)
        failed = not (isinstance(outcome, dict) and outcome.get("status") == "completed")
        if not waiting or (failed and key in self.fail_fast):
            # Fail-fast: the first failure ends the wait; the rest are not awaited.
            self.waiting_on.pop(key, None)
        if not self.waiting_on:
            self.status = "running"

    def complete(self, output: JSON, duration_ms: float) -> None:
        self._require("complete the run", "running")
        self._trigger_completed(output=output, duration_ms=duration_ms)

    @event(GraphCompleted)
    def _trigger_completed(self, output: JSON, duration_ms: float) -> None:
        self.status = "completed"
        self.output = output
        self.duration_ms = duration_ms

    def fail(self, error_kind: str, message: str, duration_ms: float) -> None:
        """End the run as failed (also from `paused` or `waiting`: a cancellation or a
        deadline)."""
        self._require("fail the run", "running", "paused", "waiting")
        self._trigger_failed(error_kind=error_kind, message=message, duration_ms=duration_ms)

    @event(GraphFailed)
    def _trigger_failed(self, error_kind: str, message: str, duration_ms: float) -> None:
        self.status = "failed"
        self.error_kind = error_kind
        self.error_message = message
        self.duration_ms = duration_ms
        self.paused_key = self.paused_node = self.paused_prompt = None
        self.waiting_on = {}


@dataclass(frozen=True)
class RecordedStep:
    key: str
    node_id: str
    output: JSON
    state: JSON
    version: int


@dataclass(kw_only=True)
class GraphHistory:
    """What a graph run has recorded, folded from its events (for re-execution and replay)."""

    steps: dict[str, RecordedStep] = field(default_factory=dict)
    """Finished steps by task key: served, never run again."""
    branches: dict[str, int] = field(default_factory=dict)
    joins: dict[str, JSON] = field(default_factory=dict)
    inputs: dict[str, JSON] = field(default_factory=dict)
    """Human input by the key of the step that waited for it."""
    dispatched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Child tasks by the key of the step that dispatched them."""
    child_outcomes: dict[str, JSON] = field(default_factory=dict)
    """Child outcomes (RunOutcome as JSON) by child task id."""
    state: JSON = None
    """The state after the last finished step (the initial state if none)."""
    path: list[str] = field(default_factory=list)
    """Node ids of finished steps, in the order they finished."""
    started: GraphRun.GraphStarted | None = None
    started_versions: dict[str, int] = field(default_factory=dict)
    """The version of each step's last `StepStarted`, by key."""

    def state_before(self, key: str) -> JSON:
        """The graph state the last execution of step `key` started from: the state
        after the step that finished last before it started (the initial state if
        none did)."""
        started = self.started_versions.get(key)
        before = [s for s in self.steps.values() if started is None or s.version < started]
        if not before:
            return None if self.started is None else self.started.state
        return max(before, key=lambda s: s.version).state

    @classmethod
    def fold(cls, events: Iterable[object]) -> GraphHistory:
        history = cls()
        copied_up_to = 0  # a fork's copies of its parent's steps keep the fork's state
        for e in events:
            if isinstance(e, GraphRun.GraphStarted):
                history.started = e
                history.state = e.state
                copied_up_to = e.fork_at or 0
            elif isinstance(e, GraphRun.StepFinished):
                history.steps[e.key] = RecordedStep(
                    e.key, e.node_id, e.output, e.state, e.originator_version
                )
                if e.originator_version > copied_up_to:
                    history.state = e.state
                history.path.append(e.node_id)
            elif isinstance(e, GraphRun.StepStarted):
                history.started_versions[e.key] = e.originator_version
            elif isinstance(e, GraphRun.BranchTaken):
                history.branches[e.key] = e.branch
            elif isinstance(e, GraphRun.JoinCompleted):
                history.joins[e.key] = e.value
            elif isinstance(e, GraphRun.GraphResumed):
                history.inputs[e.key] = e.input
            elif isinstance(e, GraphRun.ChildrenDispatched):
                history.dispatched[e.key] = list(e.children)
            elif isinstance(e, GraphRun.ChildFinished):
                history.child_outcomes[e.child_task_id] = e.outcome
        return history


def graph_run_of(events: Iterable[object]) -> GraphRun | None:
    """The run folded from its events, in order (None without any)."""
    run: Any = None
    for e in events:
        run = e.mutate(run)  # type: ignore[attr-defined]
    return run if isinstance(run, GraphRun) else None


def copy_graph_steps(run: GraphRun, events: Iterable[object]) -> None:
    """Re-trigger another run's recorded steps, branches, joins, pauses and inputs on
    `run`, in order: how a fork starts from its parent's checkpoint."""
    for e in events:
        if isinstance(e, GraphRun.StepStarted):
            run.start_step(e.key, e.node_id)
        elif isinstance(e, GraphRun.StepFinished):
            run.finish_step(e.key, e.node_id, e.output, e.state, e.duration_ms)
        elif isinstance(e, GraphRun.StepFailed):
            run.fail_step(e.key, e.node_id, e.error)
        elif isinstance(e, GraphRun.BranchTaken):
            run.take_branch(e.key, e.node_id, e.branch, e.destination)
        elif isinstance(e, GraphRun.JoinCompleted):
            run.complete_join(e.key, e.node_id, e.value)
        elif isinstance(e, GraphRun.GraphPaused):
            run.pause(e.key, e.node_id, e.prompt)
        elif isinstance(e, GraphRun.GraphResumed):
            run.resume(e.input, e.resume_id)
        elif isinstance(e, GraphRun.ChildrenDispatched):
            run.dispatch_children(e.key, e.node_id, e.children)  # a fork answers its own client
        elif isinstance(e, GraphRun.ChildFinished):
            run.finish_child(e.child_task_id, e.outcome)

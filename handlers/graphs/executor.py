"""Durable execution of pydantic-graph (2.x `GraphBuilder`) graphs: record and serve.

The executor drives `Graph.iter` on a copy of the user's graph whose step functions are
wrapped. A step whose completion is recorded (`StepFinished` under its task key) returns
its recorded output without running; any other step runs live, and its output and the
graph state after it are recorded and saved before the graph moves on (a checkpoint per
step). A re-execution after a crash therefore runs only the steps that had not finished.

Task keys. A step gets no identity from pydantic-graph that survives a re-execution
(its task ids are counters handed out in completion order). The executor gives every
task a *causal* key instead: its parent task's key, plus `[i]` for the i-th branch of a
fork (the element index of a map, the branch index of a broadcast), plus its node id. A
join's continuation is keyed by the fork run it closes. The same graph on the same
recorded outputs yields the same keys, whatever order parallel branches finish in.
Recorded join values (`JoinCompleted`) are served too, since a reducer's result can
depend on arrival order.

This needs two private hooks of pydantic-graph 2.62 (`_GraphIterator._run_task` and
`_handle_non_fork_edges`), installed per run on the run's own iterator object; the
pinned version is tested (tests/unit/test_graph_executor.py resumes at every checkpoint
of a graph with a decision, a broadcast fork, a map fork and joins).

Determinism rules for graph authors (as for Temporal workflows):
- Put every side effect, clock read, random number and I/O inside a step. Steps run at
  least once: a step that was running when the worker died runs again.
- Decision predicates, edge transforms and join reducers run again on every
  re-execution: keep them pure functions of their inputs.
- A step should change the graph state only after its last `await` (parallel steps
  share one state object; a checkpoint holds the state when a step finished).
- Give steps concrete return annotations: outputs are stored as JSON and validated back
  with the annotation (`Any` comes back as plain JSON). A float output or state field
  that is infinite or NaN fails the step (JSON cannot hold it); inside `Any`, dicts and
  models, pydantic stores such a float as null.
- Changing a graph's structure (node ids, branches) under runs in flight makes them
  diverge; replay reports the first divergence.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic_graph import Decision, EndMarker, Graph, Join, Step, StepContext
from pydantic_graph.basenode import End
from pydantic_graph.graph_builder import (  # private: pinned and tested
    GraphTask,
    JoinItem,
    _GraphIterator,
    _GraphTaskAsyncIterable,
)
from pydantic_graph.node import Fork
from pydantic_graph.paths import DestinationMarker
from pydantic_graph.step import NodeStep

from agentledger.domain.errors import first_problem
from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.infra.event_store import RunSuperseded, StoreUnavailable

__all__ = [
    "ChildTaskFailed",
    "GraphDiverged",
    "GraphExecutor",
    "GraphPausedForInput",
    "GraphWaitingForChildren",
    "StepLimitExceeded",
    "UnstorableValue",
    "agent_step",
    "call_agents",
    "current_task_id",
    "wait_for_input",
]

ROOT_KEY = "__start__"
MAX_KEY_CHARS = 200


class GraphPausedForInput(Exception):
    """Raised inside a step by `wait_for_input` when no input is recorded for it."""

    def __init__(self, key: str, node_id: str, prompt: Any) -> None:
        super().__init__(f"step {node_id} waits for input")
        self.key, self.node_id, self.prompt = key, node_id, prompt


class GraphWaitingForChildren(Exception):
    """Raised inside a step by `call_agents` while its child tasks have not all ended:
    `new` children are to be recorded and dispatched; otherwise they were before."""

    def __init__(self, key: str, node_id: str, children: list[dict[str, Any]], new: bool) -> None:
        super().__init__(f"step {node_id} waits for {len(children)} child tasks")
        self.key, self.node_id, self.children, self.new = key, node_id, children, new


class StepLimitExceeded(Exception):
    """The run reached its step bound (a cycle that does not end)."""


class GraphDiverged(Exception):
    """A re-execution left the recorded path (replay, or a graph changed under a run)."""

    def __init__(self, key: str, node_id: str, message: str, reason: DivergenceReason) -> None:
        super().__init__(f"{node_id}: {message}")
        self.key, self.node_id, self.message, self.reason = key, node_id, message, reason


DivergenceReason = Literal[
    "unrecorded_step", "branch", "unrecorded_branch", "unrecorded_join", "step_output"
]
"""Why a re-execution left the record: a step, a decision or a join without a record (a
new path, or where the recording stops), a decision taking another branch, or a step
re-executed in a replay (one that dispatched child tasks) returning something else."""


@dataclass
class _Current:
    executor: GraphExecutor
    key: str
    node_id: str


_CURRENT: ContextVar[_Current | None] = ContextVar("agentledger_graph_step", default=None)

AgentStepRunner = Callable[[str, str, str, str], Awaitable[Any]]
"""(agent name, prompt, graph task id, step key) -> the agent run's output."""


def _current(helper: str) -> _Current:
    current = _CURRENT.get()
    if current is None:
        raise RuntimeError(f"{helper}() can only be called inside a step of a durable graph")
    return current


async def wait_for_input(prompt: Any, input_type: Any = Any) -> Any:
    """Inside a step: the human input recorded for this step, or pause the run.

    An input that does not validate as `input_type` pauses the run again, with the
    prompt and what was wrong (`{"prompt": ..., "invalid_input": ...}`).

    Pausing ends the delivery with the run `paused`; a `ResumeGraph` message records the
    input, and the step runs again from its start and gets it. Code before this call
    runs again on resume: call it first, or keep that code idempotent."""
    current = _current("wait_for_input")
    recorded = current.executor.history.inputs
    if current.key not in recorded:
        raise GraphPausedForInput(current.key, current.node_id, prompt)
    try:
        return TypeAdapter(input_type).validate_python(recorded[current.key])
    except ValidationError as e:  # wait again, saying what was wrong with the last input
        raise GraphPausedForInput(
            current.key,
            current.node_id,
            {"prompt": prompt, "invalid_input": first_problem(e, "input")},
        ) from None


async def agent_step(agent: str, prompt: str) -> Any:
    """Inside a step: run catalog agent `agent` as a recorded agent run, linked to this
    graph run (its task id is derived from the graph's task id and the step's key), and
    return its output.

    A worker killed inside it resumes that agent run where it stopped: recorded model
    responses and tool results are served, not requested again."""
    current = _current("agent_step")
    executor = current.executor
    if executor.agent_runner is None:
        raise RuntimeError("this graph executor has no agent runner")
    return await executor.agent_runner(agent, prompt, executor.task_id, current.key)


def current_task_id() -> str:
    """Inside a step: the graph run's task id (the workflow's correlation id)."""
    return _current("current_task_id").executor.task_id


def _child_task_id(graph_task_id: str, index: int) -> str:
    """Unguessable (a child's outcome is accepted only for a recorded child id)."""
    return f"{graph_task_id[:120]}:child-{index}-{uuid.uuid4().hex[:16]}"


class ChildTaskFailed(Exception):
    """A `call_agents(..., fail_fast=True)` child did not complete: the step fails."""

    def __init__(self, failures: list[RunOutcome], agents: list[str]) -> None:
        parts = []
        for outcome, agent in zip(failures, agents, strict=True):
            error = outcome.error
            why = f"{error.kind}: {error.message}" if error else outcome.status
            parts.append(f"{agent} ({outcome.task_id}): {why}")
        super().__init__(f"{len(failures)} child task(s) failed: " + "; ".join(parts))
        self.failures = failures


async def call_agents(
    calls: Sequence[tuple[str, str]],
    *,
    session_id: str | None = None,
    kind: Literal["request", "handoff", "broadcast"] = "request",
    fail_fast: bool = False,
    timeout_s: float | None = None,
) -> list[RunOutcome]:
    """Inside a step: run each `(agent, prompt)` as a child task over NATS, in parallel,
    on any worker, and return their outcomes in order (completed or not: the step
    decides what a failed child means).

    - `session_id`: the children run in that conversation (a handoff passes the
      conversation, with its history, to the next agent this way);
    - `kind`: what the request messages are (`handoff` for a transfer; `broadcast`: one
      message to `all`, the same prompt to every child, each child answering it);
    - `fail_fast`: the first child that does not complete fails the step at once
      (`ChildTaskFailed`, listing the failures); the children still running are
      cancelled. Without it the step gets every outcome (best effort);
    - `timeout_s`: each child must finish within this long of the dispatch (its task's
      deadline): one that does not ends `failed` with `deadline_exceeded`.

    The first execution records the dispatch (`ChildrenDispatched`: each child's task
    id, agent, prompt, request message id and these options), publishes the child
    tasks and ends the delivery with the run `waiting`: the run holds no worker slot
    while its children run. Each child's outcome is recorded as it arrives
    (`ChildFinished`); when the last one is in (or, fail-fast, a failure), the run goes
    on and this step runs again from its start, now getting the recorded outcomes.
    Code before this call runs again then: call it first, or keep that code
    idempotent. Replay serves the recorded outcomes."""
    current = _current("call_agents")
    executor = current.executor
    recorded = executor.history.dispatched.get(current.key)
    if recorded is None:
        if executor.replay:
            raise GraphDiverged(
                current.key, current.node_id, "the dispatch is not recorded", "unrecorded_step"
            )
        if not calls:
            return []
        deadline = None
        if timeout_s is not None:
            if not (math.isfinite(timeout_s) and timeout_s > 0):
                raise ValueError(f"timeout_s must be a positive number of seconds: {timeout_s}")
            deadline = (datetime.now(UTC) + timedelta(seconds=timeout_s)).isoformat()
        children = []
        broadcast_id = f"bc-{uuid.uuid4().hex[:20]}" if kind == "broadcast" else None
        if broadcast_id is not None and len({str(p) for _, p in calls}) > 1:
            raise ValueError("a broadcast sends one prompt to every agent")
        for i, (agent, prompt) in enumerate(calls):
            task_id = _child_task_id(executor.task_id, i)
            # A child that could not be a task fails the step now, before any dispatch.
            RunAgent.model_validate(
                {
                    "task_id": task_id,
                    "agent": str(agent),
                    "prompt": str(prompt),
                    "session_id": session_id,
                    "deadline": deadline,
                }
            )
            child: dict[str, Any] = {
                "task_id": task_id,
                "agent": str(agent),
                "prompt": str(prompt),
                "message_id": f"req-{uuid.uuid4().hex[:20]}",
            }
            if kind != "request":
                child["kind"] = kind
            if broadcast_id is not None:
                child["broadcast_id"] = broadcast_id
            if session_id is not None:
                child["session_id"] = session_id
            if fail_fast:
                child["fail_fast"] = True
            if deadline is not None:
                child["deadline"] = deadline
            children.append(child)
        raise GraphWaitingForChildren(current.key, current.node_id, children, new=True)
    wanted = [(str(a), str(p)) for a, p in calls]
    if wanted != [(c["agent"], c["prompt"]) for c in recorded]:
        raise GraphDiverged(
            current.key,
            current.node_id,
            "the step asks other agents or prompts than it dispatched",
            "unrecorded_step",
        )
    found = {
        c["task_id"]: RunOutcome.model_validate(o)
        for c in recorded
        if (o := executor.history.child_outcomes.get(c["task_id"])) is not None
    }
    failed = [
        c for c in recorded if c["task_id"] in found and found[c["task_id"]].status != "completed"
    ]
    if failed and any(c.get("fail_fast") for c in recorded):
        raise ChildTaskFailed([found[c["task_id"]] for c in failed], [c["agent"] for c in failed])
    if len(found) < len(recorded):
        if executor.replay:
            raise GraphDiverged(
                current.key, current.node_id, "a child's outcome is not recorded", "unrecorded_step"
            )
        raise GraphWaitingForChildren(current.key, current.node_id, recorded, new=False)
    return [found[c["task_id"]] for c in recorded]


def _step_key(path: str, node_id: str) -> str:
    """The stored key: the causal path itself, or for long paths (cycles) the node id and
    a digest of the path."""
    if len(path) <= MAX_KEY_CHARS:
        return path
    return f"{node_id}~{hashlib.sha256(path.encode()).hexdigest()[:32]}"


class UnstorableValue(ValueError):
    """A step's output or the graph state holds a value JSON cannot hold."""


def _storable(value: Any, what: str, where: str = "") -> Any:
    """`value` (dumped in JSON mode) if JSON can hold it; infinities and NaN cannot (they
    would be stored as text no JSON reader accepts, or served back as null)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnstorableValue(f"the step's {what}{where} is {value}, which JSON cannot hold")
    if isinstance(value, dict):
        for k, v in value.items():
            _storable(v, what, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _storable(v, what, f"{where}[{i}]")
    return value


def _destination(decision: Any, branch: int) -> str:
    """The node id branch `branch` of a decision leads to ("?" if it has no such branch)."""
    if not 0 <= branch < len(decision.branches):
        return "?"
    path = decision.branches[branch].path
    return str([m for m in path.items if isinstance(m, DestinationMarker)][-1].destination_id)


def _return_adapter(fn: Any) -> TypeAdapter[Any]:
    try:
        hint = get_type_hints(fn).get("return", Any)
        return TypeAdapter(hint)
    except Exception:
        return TypeAdapter(Any)


class _NodeOutput:
    """A `BaseNode` step's output is the next node (or `End`): stored as class + data."""

    def __init__(self, graph: Graph) -> None:
        self._classes = {
            n.node_type.__name__: n.node_type
            for n in graph.nodes.values()
            if isinstance(n, NodeStep)
        }

    def dump_python(self, out: Any, mode: str = "json") -> Any:
        if isinstance(out, End):
            return {"node": "__end__", "data": TypeAdapter(Any).dump_python(out.data, mode="json")}
        data = TypeAdapter(type(out)).dump_python(out, mode="json")
        return {"node": type(out).__name__, "data": data}

    def validate_python(self, value: Any) -> Any:
        if value["node"] == "__end__":
            return End(value["data"])
        return TypeAdapter(self._classes[value["node"]]).validate_python(value["data"])


class _DurableIterator(_GraphIterator):
    """Gives every task its causal key (installed on one run's iterator object)."""

    _executor: GraphExecutor
    _paths: dict[str, str]
    _fork_paths: dict[str, str]

    def _register(self, parent: str, node: Any, tasks: Any) -> None:
        for i, task in enumerate(tasks):
            if isinstance(node, Fork):
                item = task.fork_stack[-1]
                self._fork_paths.setdefault(item.node_run_id, parent)
                self._paths[task.task_id] = f"{parent}[{item.thread_index}]/{task.node_id}"
            else:
                suffix = f"#{i}" if len(tasks) > 1 else ""
                self._paths[task.task_id] = f"{parent}/{task.node_id}{suffix}"

    async def _run_task(self, task: GraphTask) -> Any:
        path = self._paths.get(task.task_id)
        if path is None:
            path = ROOT_KEY if task.node_id == ROOT_KEY else f"injected/{task.node_id}"
            if task.node_id == ROOT_KEY:
                self._fork_paths[task.fork_stack[0].node_run_id] = ROOT_KEY
        node = self.graph.nodes[task.node_id]
        token = _CURRENT.set(_Current(self._executor, path, task.node_id))
        try:
            result = await super()._run_task(task)
        finally:
            _CURRENT.reset(token)
        if isinstance(result, _GraphTaskAsyncIterable):
            inner = result.iterable

            async def keyed() -> AsyncIterator[Any]:
                async for batch in inner:
                    self._register(path, node, batch)
                    yield batch

            result.iterable = keyed()
        elif not isinstance(result, JoinItem | EndMarker):
            self._register(path, node, result)
            if isinstance(node, Decision):
                self._executor._branch_taken(path, node, result)
        return result

    def _handle_non_fork_edges(self, node: Any, inputs: Any, fork_stack: Any) -> Any:
        if isinstance(node, Join):  # a join's fork run has completed
            parent_fork = self.graph.get_parent_fork(node.id).fork_id
            run_id = next(x.node_run_id for x in reversed(fork_stack) if x.fork_id == parent_fork)
            path = f"{self._fork_paths[run_id]}/{node.id}"
            inputs = self._executor._join_completed(path, node, inputs)
            tasks = super()._handle_non_fork_edges(node, inputs, fork_stack)
            self._register(path, node, tasks)
            return tasks
        return super()._handle_non_fork_edges(node, inputs, fork_stack)


Save = Callable[[], Awaitable[Any]]


class GraphExecutor:
    """Runs one graph run to its end, a pause, or an error, recording on `run`.

    `save` persists the run's pending events (the worker's store save). With
    `replay=True` nothing may run live: a step without a record raises `GraphDiverged`,
    as does a branch other than the recorded one."""

    def __init__(
        self,
        graph: Graph,
        run: GraphRun,
        history: GraphHistory,
        *,
        save: Save,
        agent_runner: AgentStepRunner | None = None,
        replay: bool = False,
        deadline: datetime | None = None,
        guard: Callable[[], None] | None = None,
    ) -> None:
        """`guard` is called before each live step starts (a run lease's check: what it
        raises stops the run with nothing recorded for that step)."""
        self.graph = graph
        self.run = run
        self.history = history
        self.task_id = run.task_id
        self.agent_runner = agent_runner
        self.replay = replay
        self.deadline = deadline
        self._save = save
        self._guard = guard
        self._state_adapter: TypeAdapter[Any] = TypeAdapter(graph.state_type)
        self._durable = self._wrap(graph)
        self._keys_seen: set[str] = set()
        self.live: list[str] = []
        """Node ids of the steps this execution ran live, in start order."""
        self.served: list[str] = []
        self.served_keys: list[str] = []
        """Task keys of the steps served from the record, in order."""

    # -- public --------------------------------------------------------------------

    def initial_state(self) -> Any:
        return self._state_from(self.history.state)

    def _state_from(self, recorded: Any) -> Any:
        """A state object from its recorded JSON (None: the state type's default)."""
        if recorded is not None:
            return self._state_adapter.validate_python(recorded)
        state_type = self.graph.state_type
        if state_type is None or state_type is type(None):
            return None
        factory: Any = state_type
        return factory()

    async def execute(self, inputs: Any, deps: Any = None) -> Any:
        """Drive the graph to its end and return its output (a pause raises
        `GraphPausedForInput`; the caller records it)."""
        state = self.initial_state()
        async with self._durable.iter(state=state, deps=deps, inputs=inputs) as graph_run:
            iterator: Any = graph_run._iterator_instance
            iterator.__class__ = _DurableIterator  # this run only, before its first step
            iterator._executor, iterator._paths, iterator._fork_paths = self, {}, {}
            async for _ in graph_run:
                pass
            return graph_run.output

    def dump_output(self, output: Any) -> Any:
        return TypeAdapter(self.graph.output_type).dump_python(output, mode="json")

    # -- hooks ---------------------------------------------------------------------

    def _wrap(self, graph: Graph) -> Graph:
        nodes: dict[Any, Any] = {}
        for node_id, node in graph.nodes.items():
            if not isinstance(node, Step):
                nodes[node_id] = node
                continue
            original = node.call
            adapter: Any = _NodeOutput(graph) if isinstance(node, NodeStep) else None
            if adapter is None:
                adapter = _return_adapter(original)

            async def call(
                ctx: Any, _call: Any = original, _node: Any = node, _ad: Any = adapter
            ) -> Any:
                current = _CURRENT.get()
                if current is None or current.executor is not self:
                    return await _call(ctx)
                return await self._step(current.key, _node, _call, _ad, ctx)

            wrapped = copy.copy(node)
            wrapped._call = call
            nodes[node_id] = wrapped
        return dataclasses.replace(graph, nodes=nodes)

    async def _step(self, path: str, node: Any, call: Any, adapter: Any, ctx: Any) -> Any:
        key = _step_key(path, node.id)
        if key not in self._keys_seen:
            self._keys_seen.add(key)
            if len(self._keys_seen) > self.run.max_steps:
                raise StepLimitExceeded(
                    f"the run reached its bound of {self.run.max_steps} steps at {node.id}"
                )
        recorded = self.history.steps.get(key)
        if recorded is not None:
            if self.replay and key in self.history.dispatched and isinstance(ctx, StepContext):
                await self._re_execute(key, node, call, adapter, ctx, recorded.output)
            self.served.append(node.id)
            self.served_keys.append(key)
            return adapter.validate_python(recorded.output)
        if self.replay:
            raise GraphDiverged(
                key, node.id, "the step has no recorded result (a new path)", "unrecorded_step"
            )
        if self.deadline is not None and datetime.now(UTC) >= self.deadline:
            raise TimeoutError(f"the run's deadline passed before step {node.id}")
        if self._guard is not None:
            self._guard()
        self.live.append(node.id)
        self.run.start_step(key, node.id)
        await self._save()
        started = time.perf_counter()
        token = _CURRENT.set(_Current(self, key, node.id))
        try:
            output = await call(ctx)
        except (GraphPausedForInput, GraphWaitingForChildren, StoreUnavailable, RunSuperseded):
            raise  # not the step's failure: it is left for a resume (or the new driver)
        except Exception as e:
            self.run.fail_step(key, node.id, f"{type(e).__name__}: {e}")
            await self._save()
            raise
        finally:
            _CURRENT.reset(token)
        # The checkpoint is taken at once (no await between the step's return and it).
        try:
            dumped = _storable(adapter.dump_python(output, mode="json"), "output")
            state = _storable(self._state_adapter.dump_python(ctx.state, mode="json"), "state")
        except Exception as e:  # a value JSON cannot hold: the step fails, saying why
            self.run.fail_step(key, node.id, f"{type(e).__name__}: {e}")
            await self._save()
            raise
        self.run.finish_step(
            key,
            node.id,
            output=dumped,
            state=state,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        await self._save()
        return output

    async def _re_execute(
        self, key: str, node: Any, call: Any, adapter: Any, ctx: Any, recorded: Any
    ) -> None:
        """Replay of a step that dispatched child tasks: run its body again on a copy of
        the state it started from, with `call_agents` serving the recorded outcomes (no
        child runs, no model call), and check it returns what it returned then. Its
        output is then served as recorded, like any step's."""
        state = self._state_from(self.history.state_before(key))
        again = StepContext(state=state, deps=ctx.deps, inputs=ctx.inputs)
        token = _CURRENT.set(_Current(self, key, node.id))
        try:
            output = await call(again)
        except GraphDiverged:
            raise
        except Exception as e:
            raise GraphDiverged(
                key,
                node.id,
                f"re-executed on its recorded child outcomes, the step raised"
                f" {type(e).__name__}: {e}",
                "step_output",
            ) from None
        finally:
            _CURRENT.reset(token)
        dumped = adapter.dump_python(output, mode="json")
        if dumped != recorded:
            raise GraphDiverged(
                key,
                node.id,
                f"re-executed on its recorded child outcomes, the step returns {dumped!r};"
                f" the record has {recorded!r}",
                "step_output",
            )

    def _branch_taken(self, path: str, decision: Any, tasks: Any) -> None:
        destination = tasks[0].node_id if tasks else ""
        branch = next(
            (i for i in range(len(decision.branches)) if _destination(decision, i) == destination),
            -1,
        )
        key = _step_key(path, decision.id)
        recorded = self.history.branches.get(key)
        if recorded is not None:
            if recorded != branch:
                raise GraphDiverged(
                    key,
                    decision.id,
                    f"took branch {branch} (to {_destination(decision, branch)}); the record"
                    f" has branch {recorded} (to {_destination(decision, recorded)})",
                    "branch",
                )
            return
        if self.replay:
            raise GraphDiverged(
                key, decision.id, "the decision has no recorded branch", "unrecorded_branch"
            )
        self.run.take_branch(key, decision.id, branch, str(destination))
        self.history.branches[key] = branch

    def _join_completed(self, path: str, join: Any, value: Any) -> Any:
        key = _step_key(path, join.id)
        adapter = _return_adapter(join.reducer)
        if key in self.history.joins:
            return adapter.validate_python(self.history.joins[key])
        if self.replay:
            raise GraphDiverged(key, join.id, "the join has no recorded value", "unrecorded_join")
        dumped = adapter.dump_python(value, mode="json")
        self.run.complete_join(key, join.id, dumped)
        self.history.joins[key] = dumped
        return value

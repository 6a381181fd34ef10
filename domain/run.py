"""The agent-run aggregate: one task's run, every agent action a past-tense event.

The aggregate keeps only small state (status, counters, output). The transcript is in
the events themselves; `RunHistory.fold` rebuilds it for recovery and replay, and the
projections keep it for queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.errors import InvalidTransition
from agentledger.domain.ids import run_id_for
from agentledger.domain.tasks import RunAgent, UsageLimitsSpec

__all__ = ["AgentRun", "RunHistory", "RunStatus", "copy_steps", "task_of"]

RunStatus = Literal["running", "completed", "failed", "paused"]

JSON = Any
"""A JSON-compatible value (dict, list, str, number, bool, None)."""


class AgentRun(Aggregate):
    """One run of a named agent for one task."""

    TOPIC = "agentledger.AgentRun"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.AgentRun.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.AgentRun.Created"

    class RunRequested(Created):
        """A task was accepted and its run created (or a run was forked from another).

        v2 added the fork fields; v1 events are upcast with them all None.
        """

        TOPIC = "agentledger.AgentRun.RunRequested"
        class_version = 2
        task_id: str
        agent: str
        prompt: str
        session_id: str | None
        metadata: dict[str, str]
        usage_limits: dict[str, int | None]
        deadline: str | None
        history_version: int
        parent_run_id: str | None
        """For a fork: the run it branched from (None for a run from a task)."""
        fork_at: int | None
        """For a fork: the parent's event index (version) after which it branched; its
        own events 2..fork_at are copies of the parent's."""
        fork_prompt: str | None
        """For a fork: a user prompt sent after the copied history (None: continue)."""

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["parent_run_id"] = None
            state["fork_at"] = None
            state["fork_prompt"] = None

    class MemoryRecalled(Event):
        """Past turns found in the memory view for the prompt, before the first model
        request (an agent with `recall` in the catalog): the hits with their scores and
        the embedder, recorded so resume, fork and replay use them without the view."""

        TOPIC = "agentledger.AgentRun.MemoryRecalled"
        class_version = 1
        query: str
        embedder: str
        hits: list[JSON]
        error: str | None

    class ModelRequestSent(Event):
        """A request (user prompt, tool returns, retry prompt) went to the model."""

        TOPIC = "agentledger.AgentRun.ModelRequestSent"
        class_version = 1
        step: int
        message: JSON

    class ModelResponseReceived(Event):
        """The model answered; the message holds its parts, the usage its tokens."""

        TOPIC = "agentledger.AgentRun.ModelResponseReceived"
        class_version = 1
        step: int
        message: JSON
        model_name: str | None
        input_tokens: int
        output_tokens: int

    class ToolCallStarted(Event):
        """A tool call asked for by the model is about to run."""

        TOPIC = "agentledger.AgentRun.ToolCallStarted"
        class_version = 1
        tool_call_id: str
        tool_name: str
        args: JSON

    class ToolCallFinished(Event):
        """A tool call returned; its result is the tool-effect ledger entry."""

        TOPIC = "agentledger.AgentRun.ToolCallFinished"
        class_version = 1
        tool_call_id: str
        tool_name: str
        result: JSON

    class ToolCallFailed(Event):
        """A tool call raised; `retry` says the model was asked to try again."""

        TOPIC = "agentledger.AgentRun.ToolCallFailed"
        class_version = 1
        tool_call_id: str
        tool_name: str
        error: str
        retry: bool

    class ToolDecisionMade(Event):
        """A tool middleware decided something about a call (`agentledger.domain.tools`):
        served it from the cache, held it for the rate limit, retried it, timed it out,
        or refused it with the circuit open. Saved with the call's outcome; replay serves
        the call's recorded decisions with its recorded outcome."""

        TOPIC = "agentledger.AgentRun.ToolDecisionMade"
        class_version = 1
        tool_call_id: str
        tool_name: str
        decision: str
        detail: JSON
        waited_ms: float
        """Time the decision cost the call (a rate-limit wait, a retry's back-off, the
        time until a timeout): how it went, not what the agent decided."""

    class RunPaused(Event):
        """The run stopped to wait for a person: a side-effecting tool call was found
        unfinished after a crash and its policy is `pause`."""

        TOPIC = "agentledger.AgentRun.RunPaused"
        class_version = 1
        tool_call_id: str
        tool_name: str
        reason: str

    class ToolCallResolved(Event):
        """A person decided what a paused run's unfinished tool call does: `retry` it,
        `fail` it (with `value` as the error), or take `value` as its `result`."""

        TOPIC = "agentledger.AgentRun.ToolCallResolved"
        class_version = 1
        tool_call_id: str
        tool_name: str
        resolution: str
        value: JSON
        by: str

    class RunCompleted(Event):
        """The agent produced its output."""

        TOPIC = "agentledger.AgentRun.RunCompleted"
        class_version = 1
        output: JSON
        requests: int
        input_tokens: int
        output_tokens: int
        tool_calls: int
        cost_usd: float | None
        duration_ms: float

    class RunFailed(Event):
        """The run ended without output."""

        TOPIC = "agentledger.AgentRun.RunFailed"
        class_version = 1
        error_kind: str
        message: str
        retryable: bool
        duration_ms: float

    @staticmethod
    def create_id(task_id: str) -> UUID:
        return run_id_for(task_id)

    @event(RunRequested)
    def __init__(
        self,
        task_id: str,
        agent: str,
        prompt: str,
        session_id: str | None,
        metadata: dict[str, str],
        usage_limits: dict[str, int | None],
        deadline: str | None,
        history_version: int,
        parent_run_id: str | None = None,
        fork_at: int | None = None,
        fork_prompt: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.parent_run_id = parent_run_id
        self.fork_at = fork_at
        self.fork_prompt = fork_prompt
        self.agent = agent
        self.session_id = session_id
        self.history_version = history_version
        self.status: RunStatus = "running"
        self.steps = 0
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.output: JSON = None
        self.cost_usd: float | None = None
        self.duration_ms: float | None = None
        self.error_kind: str | None = None
        self.error_message: str | None = None
        self.retryable = False
        self.recalled: list[JSON] | None = None
        """The hits of `MemoryRecalled` (None: nothing was recalled for this run)."""
        self.paused_for: dict[str, str] | None = None
        """While paused: the tool call it waits on (`tool_call_id`, `tool_name`, `reason`)."""

    def _require_running(self, what: str) -> None:
        if self.status != "running":
            raise InvalidTransition(what, self.status)

    def record_recall(self, query: str, embedder: str, hits: list[JSON], error: str | None) -> None:
        self._require_running("record a recall")
        if self.recalled is not None or self.steps:
            raise InvalidTransition("record a recall after the run has started", self.status)
        self._trigger_recalled(query=query, embedder=embedder, hits=hits, error=error)

    @event(MemoryRecalled)
    def _trigger_recalled(
        self, query: str, embedder: str, hits: list[JSON], error: str | None
    ) -> None:
        self.recalled = list(hits)

    def send_model_request(self, message: JSON) -> None:
        self._require_running("send a model request")
        self._trigger_request(step=self.steps + 1, message=message)

    @event(ModelRequestSent)
    def _trigger_request(self, step: int, message: JSON) -> None:
        self.steps = step

    def receive_model_response(
        self, message: JSON, model_name: str | None, input_tokens: int, output_tokens: int
    ) -> None:
        self._require_running("record a model response")
        self._trigger_response(
            step=self.steps,
            message=message,
            model_name=model_name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    @event(ModelResponseReceived)
    def _trigger_response(
        self,
        step: int,
        message: JSON,
        model_name: str | None,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        self.requests += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def start_tool_call(self, tool_call_id: str, tool_name: str, args: JSON) -> None:
        self._require_running("start a tool call")
        self._trigger_tool_started(tool_call_id=tool_call_id, tool_name=tool_name, args=args)

    @event(ToolCallStarted)
    def _trigger_tool_started(self, tool_call_id: str, tool_name: str, args: JSON) -> None:
        self.tool_calls += 1

    def finish_tool_call(self, tool_call_id: str, tool_name: str, result: JSON) -> None:
        self._require_running("finish a tool call")
        self._trigger_tool_finished(tool_call_id=tool_call_id, tool_name=tool_name, result=result)

    @event(ToolCallFinished)
    def _trigger_tool_finished(self, tool_call_id: str, tool_name: str, result: JSON) -> None:
        pass

    def fail_tool_call(self, tool_call_id: str, tool_name: str, error: str, retry: bool) -> None:
        self._require_running("fail a tool call")
        self._trigger_tool_failed(
            tool_call_id=tool_call_id, tool_name=tool_name, error=error, retry=retry
        )

    @event(ToolCallFailed)
    def _trigger_tool_failed(
        self, tool_call_id: str, tool_name: str, error: str, retry: bool
    ) -> None:
        pass

    def record_tool_decision(
        self, tool_call_id: str, tool_name: str, decision: str, detail: JSON, waited_ms: float
    ) -> None:
        self._require_running("record a tool decision")
        self._trigger_tool_decision(
            tool_call_id=tool_call_id,
            tool_name=tool_name,
            decision=decision,
            detail=detail,
            waited_ms=waited_ms,
        )

    @event(ToolDecisionMade)
    def _trigger_tool_decision(
        self, tool_call_id: str, tool_name: str, decision: str, detail: JSON, waited_ms: float
    ) -> None:
        pass

    def pause(self, tool_call_id: str, tool_name: str, reason: str) -> None:
        self._require_running("pause the run")
        self._trigger_paused(tool_call_id=tool_call_id, tool_name=tool_name, reason=reason)

    @event(RunPaused)
    def _trigger_paused(self, tool_call_id: str, tool_name: str, reason: str) -> None:
        self.status = "paused"
        self.paused_for = {"tool_call_id": tool_call_id, "tool_name": tool_name, "reason": reason}

    def resolve_tool_call(self, resolution: str, value: JSON, by: str) -> None:
        if self.status != "paused" or self.paused_for is None:
            raise InvalidTransition("resolve a tool call", self.status)
        self._trigger_resolved(
            tool_call_id=self.paused_for["tool_call_id"],
            tool_name=self.paused_for["tool_name"],
            resolution=resolution,
            value=value,
            by=by,
        )

    @event(ToolCallResolved)
    def _trigger_resolved(
        self, tool_call_id: str, tool_name: str, resolution: str, value: JSON, by: str
    ) -> None:
        self.status = "running"
        self.paused_for = None

    def complete(self, output: JSON, cost_usd: float | None, duration_ms: float) -> None:
        self._require_running("complete the run")
        self._trigger_completed(
            output=output,
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            tool_calls=self.tool_calls,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
        )

    @event(RunCompleted)
    def _trigger_completed(
        self,
        output: JSON,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        tool_calls: int,
        cost_usd: float | None,
        duration_ms: float,
    ) -> None:
        self.status = "completed"
        self.output = output
        self.cost_usd = cost_usd
        self.duration_ms = duration_ms

    def fail(self, error_kind: str, message: str, retryable: bool, duration_ms: float) -> None:
        """End the run as failed (a paused run too: cancelled while it waits)."""
        if self.status != "paused":
            self._require_running("fail the run")
        self._trigger_failed(
            error_kind=error_kind, message=message, retryable=retryable, duration_ms=duration_ms
        )

    @event(RunFailed)
    def _trigger_failed(
        self, error_kind: str, message: str, retryable: bool, duration_ms: float
    ) -> None:
        self.status = "failed"
        self.paused_for = None
        self.error_kind = error_kind
        self.error_message = message
        self.retryable = retryable
        self.duration_ms = duration_ms


@dataclass(kw_only=True)
class RunHistory:
    """What a run has recorded so far, folded from its events (for recovery and replay)."""

    messages: list[JSON] = field(default_factory=list)
    """The run's own messages (requests and responses) in order, as pydantic-ai JSON."""
    tool_results: dict[str, JSON] = field(default_factory=dict)
    """Recorded tool results by tool_call_id: these calls are never executed again."""
    tool_failures: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """Recorded tool failures by tool_call_id, as (error, retry): a recorded outcome too,
    served again instead of running the tool again."""
    started_tool_calls: set[str] = field(default_factory=set)
    """Tool calls recorded as started (finished or not): not recorded as started twice."""
    requests_after_fork: int = 0
    """Requests recorded after the fork point (all of them for a run that is no fork)."""
    recalled: list[JSON] | None = None
    """The hits the run recalled before its first request (None: no recall recorded)."""
    unknown_after_crash: set[str] = field(default_factory=set)
    """Side-effecting calls already recorded as unknown after a crash."""
    resolutions: dict[str, tuple[str, JSON]] = field(default_factory=dict)
    """A person's resolution of an unfinished call, by tool_call_id: (resolution, value)."""

    @classmethod
    def fold(cls, events: Iterable[object]) -> RunHistory:
        history = cls()
        fork_at = 0
        for domain_event in events:
            if isinstance(domain_event, AgentRun.RunRequested):
                fork_at = domain_event.fork_at or 0
            elif isinstance(
                domain_event, AgentRun.ModelRequestSent | AgentRun.ModelResponseReceived
            ):
                history.messages.append(domain_event.message)
                own = domain_event.originator_version > fork_at
                if own and isinstance(domain_event, AgentRun.ModelRequestSent):
                    history.requests_after_fork += 1
            elif isinstance(domain_event, AgentRun.MemoryRecalled):
                history.recalled = list(domain_event.hits)
            elif isinstance(domain_event, AgentRun.ToolCallStarted):
                history.started_tool_calls.add(domain_event.tool_call_id)
            elif isinstance(domain_event, AgentRun.ToolCallFinished):
                history.tool_results[domain_event.tool_call_id] = domain_event.result
            elif isinstance(domain_event, AgentRun.ToolCallFailed):
                history.tool_failures[domain_event.tool_call_id] = (
                    domain_event.error,
                    domain_event.retry,
                )
            elif isinstance(domain_event, AgentRun.ToolDecisionMade):
                if domain_event.decision == "unknown_after_crash":
                    history.unknown_after_crash.add(domain_event.tool_call_id)
            elif isinstance(domain_event, AgentRun.ToolCallResolved):
                history.resolutions[domain_event.tool_call_id] = (
                    domain_event.resolution,
                    domain_event.value,
                )
        return history

    def prompt_to_send(self, prompt: str, fork_prompt: str | None) -> str | None:
        """The user prompt the next agent step must send, or None to continue from the
        recorded messages: a new run sends its prompt; a fork with a prompt of its own
        sends that after the copied history, once."""
        if not self.messages:
            return prompt
        if fork_prompt is not None and self.requests_after_fork == 0:
            return fork_prompt
        return None


def copy_steps(run: AgentRun, events: Iterable[object]) -> None:
    """Re-trigger another run's step events (requests, responses, tool calls) on `run`,
    in order: how a fork starts from its parent's recorded state."""
    for e in events:
        if isinstance(e, AgentRun.MemoryRecalled):
            run.record_recall(e.query, e.embedder, e.hits, e.error)
        elif isinstance(e, AgentRun.ModelRequestSent):
            run.send_model_request(e.message)
        elif isinstance(e, AgentRun.ModelResponseReceived):
            run.receive_model_response(e.message, e.model_name, e.input_tokens, e.output_tokens)
        elif isinstance(e, AgentRun.ToolCallStarted):
            run.start_tool_call(e.tool_call_id, e.tool_name, e.args)
        elif isinstance(e, AgentRun.ToolCallFinished):
            run.finish_tool_call(e.tool_call_id, e.tool_name, e.result)
        elif isinstance(e, AgentRun.ToolCallFailed):
            run.fail_tool_call(e.tool_call_id, e.tool_name, e.error, e.retry)
        elif isinstance(e, AgentRun.ToolDecisionMade):
            run.record_tool_decision(e.tool_call_id, e.tool_name, e.decision, e.detail, e.waited_ms)


def task_of(requested: AgentRun.RunRequested) -> RunAgent:
    """The task a run was created for, as it was accepted."""
    limits = UsageLimitsSpec(**requested.usage_limits) if requested.usage_limits else None
    return RunAgent(
        task_id=requested.task_id,
        agent=requested.agent,
        prompt=requested.prompt,
        session_id=requested.session_id,
        metadata=dict(requested.metadata),
        usage_limits=limits,
        deadline=datetime.fromisoformat(requested.deadline) if requested.deadline else None,
    )

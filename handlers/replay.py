"""Replay: re-execute a recorded run with the agent's current code, offline.

The run goes through the very `AgentRunner` the workers use, against a throwaway
in-memory store, with the recorded model responses served in order by `ReplayModel`,
the recorded tool results served by `RecordedToolEffects`, and what the run recalled from
the memory view served by `RecordedRecall` (no model call, no tool effect, no network,
no memory view). The events it records are then compared with the recorded ones
(`agentledger.domain.divergence`): `identical`, or the first divergence.

Where a recording stops early - the run is still in progress, or its environment
ended it (`deadline_exceeded`, `transient_exhausted`: a clock or an outage, not the
agent's code) - replay checks the agent up to where the recording stops and says so in
the report's note; it does not pretend to re-enact the outage.

With `run_tools=True` the tools run for real instead (for tools without side effects),
so a change in what a tool returns shows up as a divergence too.

Each tool call's recorded middleware decisions (a cache hit, a retry) and a composite
tool's recorded sub-calls are recorded again with its recorded outcome. A pause for a
side-effecting call and the person's resolution of it (`RunPaused`, `ToolCallResolved`)
are left out of the comparison: they are the environment, like an outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from pydantic_ai import RunContext
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from agentledger.domain.conversation import Conversation
from agentledger.domain.divergence import Divergence, first_divergence
from agentledger.domain.history_file import HistoryDocument, HistoryFileError, decode_aggregate
from agentledger.domain.ids import session_aggregate_id_for
from agentledger.domain.run import AgentRun, task_of
from agentledger.domain.tasks import RunAgent
from agentledger.domain.timeline import event_record
from agentledger.handlers.catalog import Catalog, CatalogEntry, UnknownAgent
from agentledger.handlers.memory.recall import RecordedRecall
from agentledger.handlers.recording import (
    NOT_RECORDED,
    Execute,
    ToolCallError,
    current_tool_call,
    messages_from_json,
    record_tool_decision,
    recorded_outcome,
)
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore

__all__ = [
    "ENVIRONMENT_FAILURES",
    "NotARun",
    "RecordedRun",
    "RecordedToolEffects",
    "ReplayModel",
    "ReplayReport",
    "RunNotFound",
    "recorded_run",
    "recorded_runs",
    "replay_history",
    "replay_recorded",
    "replay_run",
    "run_events",
]

_CUT_OFF_WAIT_S = 10.0
"""How long a replayed call that never ended in the recording waits to be cancelled."""

ENVIRONMENT_FAILURES = frozenset({"deadline_exceeded", "transient_exhausted"})
"""Failure kinds that come from the run's environment (clock, outages), not its code."""

ReplayVerdict = Literal["identical", "diverged"]


class RunNotFound(LookupError):
    """No run with this id (or task id) in the store."""

    def __init__(self, identifier: str) -> None:
        super().__init__(f"no run {identifier!r} in the event store")


class NotARun(LookupError):
    """The id names an aggregate that is not an agent run (a session, a rejection)."""


class ReplayStop(BaseException):
    """The recording ends here: stop the replay (never caught by agent code, hence a
    BaseException)."""


@dataclass(frozen=True, kw_only=True)
class RecordedRun:
    """A recorded run and the session history it started from."""

    events: tuple[Any, ...]
    """The run's own events, in order."""
    session_events: tuple[Any, ...] = ()
    """Its session's events up to the version the run saw (empty without a session)."""
    agent_ref: str | None = None
    """`module:attribute` of the agent when it was recorded (used when the catalog lacks
    the agent's name)."""

    @property
    def requested(self) -> AgentRun.RunRequested:
        first = self.events[0]
        assert isinstance(first, AgentRun.RunRequested)
        return first

    @property
    def run_id(self) -> UUID:
        return UUID(str(self.requested.originator_id))

    @property
    def terminal(self) -> AgentRun.RunCompleted | AgentRun.RunFailed | None:
        last = self.events[-1]
        return last if isinstance(last, AgentRun.RunCompleted | AgentRun.RunFailed) else None

    @property
    def complete(self) -> bool:
        """Whether the recording holds everything the agent did (it ended, and not by a
        failure of its environment)."""
        terminal = self.terminal
        if terminal is None:
            return False
        return not (
            isinstance(terminal, AgentRun.RunFailed) and terminal.error_kind in ENVIRONMENT_FAILURES
        )

    def task(self) -> RunAgent:
        """The task as it was accepted."""
        return task_of(self.requested)


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    """What a replay found."""

    run_id: str
    task_id: str
    agent: str
    verdict: ReplayVerdict
    recorded_events: int
    replayed_events: int
    divergence: Divergence | None = None
    note: str | None = None
    """Why the comparison stopped where it did (a recording that ends early)."""
    replayed: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    """The replay's own events (what the current code recorded): `eval replay` scores
    the replayed output from them."""

    @property
    def identical(self) -> bool:
        return self.verdict == "identical"

    def as_dict(self) -> dict[str, Any]:
        divergence = None
        if self.divergence is not None:
            d = self.divergence
            divergence = {
                "index": d.index,
                "summary": d.summary(),
                "expected": d.expected.as_dict() if d.expected else None,
                "actual": d.actual.as_dict() if d.actual else None,
                "diff": list(d.diff),
            }
        return {
            "run_id": self.run_id,
            "task_id": self.task_id,
            "agent": self.agent,
            "verdict": self.verdict,
            "recorded_events": self.recorded_events,
            "replayed_events": self.replayed_events,
            "divergence": divergence,
            "note": self.note,
        }


class ReplayModel(Model):
    """Answers with the recorded responses, in order; asked for one more than was
    recorded, it stops the replay (recording incomplete) or fails like a model that
    misbehaves (recording complete: the agent now asks for more than it did)."""

    def __init__(self, responses: Sequence[Any], *, complete: bool, name: str) -> None:
        super().__init__()
        self._responses = list(responses)
        self._complete = complete
        self._name = name
        self.served = 0

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        if self.served >= len(self._responses):
            if not self._complete:
                raise ReplayStop("the recording has no more model responses")
            raise UnexpectedModelBehavior(
                f"replay: the agent asked for model response {self.served + 1}; the recording"
                f" has {len(self._responses)}"
            )
        (response,) = messages_from_json([self._responses[self.served]])
        self.served += 1
        assert isinstance(response, ModelResponse)
        return response

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def system(self) -> str:
        return "agentledger-replay"


@dataclass(kw_only=True)
class RecordedToolEffects:
    """Serves recorded tool outcomes by `tool_call_id` instead of running the tools, each
    with the middleware decisions recorded for it (a cache hit, a retry, a timeout), so
    the replay reads the same whatever the cache or the rate limiter hold today."""

    results: dict[str, Any]
    failures: dict[str, tuple[str, bool]]
    """tool_call_id -> (error, retry) of recorded failures."""
    complete: bool
    run_tools: bool = False
    started: frozenset[str] = frozenset()
    """Calls recorded as started: one with no outcome in a complete recording was still
    running when a sibling call failed and the run ended."""
    decisions: dict[str, list[AgentRun.ToolDecisionMade]] = dataclasses.field(default_factory=dict)
    """The recorded middleware decisions of each call, in order."""
    sub_calls: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    """The recorded sub-call events of each composite call (`<id>#<n>`), in order."""

    @classmethod
    def of(cls, events: Sequence[Any], *, complete: bool, run_tools: bool) -> RecordedToolEffects:
        results: dict[str, Any] = {}
        failures: dict[str, tuple[str, bool]] = {}
        started: set[str] = set()
        decisions: dict[str, list[AgentRun.ToolDecisionMade]] = {}
        sub_calls: dict[str, list[Any]] = {}
        for e in events:
            parent, is_sub, _ = str(getattr(e, "tool_call_id", "")).partition("#")
            if is_sub and isinstance(
                e, AgentRun.ToolCallStarted | AgentRun.ToolCallFinished | AgentRun.ToolCallFailed
            ):
                sub_calls.setdefault(parent, []).append(e)
                continue
            if isinstance(e, AgentRun.ToolDecisionMade):
                decisions.setdefault(e.tool_call_id, []).append(e)
            elif isinstance(e, AgentRun.ToolCallStarted):
                started.add(e.tool_call_id)
            elif isinstance(e, AgentRun.ToolCallFinished):
                results[e.tool_call_id] = e.result
            elif isinstance(e, AgentRun.ToolCallFailed):
                failures[e.tool_call_id] = (e.error, e.retry)
        return cls(
            results=results,
            failures=failures,
            complete=complete,
            run_tools=run_tools,
            started=frozenset(started),
            decisions=decisions,
            sub_calls=sub_calls,
        )

    async def __call__(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], execute: Execute
    ) -> Any:
        call_id = ctx.tool_call_id or ""
        if self.run_tools:
            return await execute()
        for d in self.decisions.get(call_id, ()):
            await record_tool_decision(d.decision, d.detail, d.waited_ms)
        await _replay_sub_calls(self.sub_calls.get(call_id, ()))
        served = recorded_outcome(self.results, self.failures, call_id)
        if served is not NOT_RECORDED:
            return served
        if not self.complete:
            raise ReplayStop(f"the recording has no outcome for tool call {call_id}")
        if call_id in self.started:
            # It was cut off when a sibling call failed: wait to be cut off the same way.
            await asyncio.sleep(_CUT_OFF_WAIT_S)
        raise ToolCallError(f"replay: no recorded outcome for tool call {call_id} ({name})")


async def _replay_sub_calls(events: Sequence[Any]) -> None:
    """Record a composite call's recorded sub-calls again, as they were."""
    scope = current_tool_call()
    if not events or scope is None or scope.recorder is None:
        return
    recorder = scope.recorder
    for e in events:
        if isinstance(e, AgentRun.ToolCallStarted):
            await recorder.start_tool(e.tool_call_id, e.tool_name, e.args)
        elif isinstance(e, AgentRun.ToolCallFinished):
            await recorder.finish_tool(e.tool_call_id, e.tool_name, e.result)
        else:
            await recorder.fail_tool(e.tool_call_id, e.tool_name, e.error, e.retry)


class _Silent:
    """A logger that says nothing: a replay's runner logs would read like live runs."""

    def bind(self, **_: Any) -> _Silent:
        return self

    def _nothing(self, *_: Any, **__: Any) -> None:
        return None

    info = warning = error = exception = debug = _nothing


def _entry(catalog: Catalog, recorded: RecordedRun, model: Model) -> CatalogEntry:
    name = recorded.requested.agent
    entry = catalog.entries.get(name)
    if entry is None:
        if recorded.agent_ref is None:
            raise UnknownAgent(name, catalog.names())
        entry = CatalogEntry(name=name, ref=recorded.agent_ref)
    return dataclasses.replace(entry, model=model)


async def replay_recorded(
    recorded: RecordedRun, catalog: Catalog, *, run_tools: bool = False
) -> ReplayReport:
    """Replay one recorded run and compare; never calls a model, never runs a tool
    (unless `run_tools`)."""
    requested = recorded.requested
    fork_at = requested.fork_at or 0
    given = [e for e in recorded.events if e.originator_version <= fork_at]
    responses = [
        e.message
        for e in recorded.events
        if isinstance(e, AgentRun.ModelResponseReceived) and e.originator_version > fork_at
    ]
    model = ReplayModel(
        responses,
        complete=recorded.complete,
        name=next(
            (
                e.model_name
                for e in recorded.events
                if isinstance(e, AgentRun.ModelResponseReceived) and e.model_name
            ),
            "replay",
        ),
    )
    entry = _entry(catalog, recorded, model)
    memory = EventStore.in_memory()
    if recorded.session_events:
        memory.save(*recorded.session_events)
    if given:
        memory.save(*given)
    store = AsyncEventStore(memory, threads=0, retry_s=0)
    runner = AgentRunner(
        store=store,
        catalog=dataclasses.replace(catalog, entries={entry.name: entry}),
        clock=lambda: requested.timestamp,
        tool_effects=RecordedToolEffects.of(
            recorded.events, complete=recorded.complete, run_tools=run_tools
        ),
        logger=_Silent(),
        recaller=RecordedRecall.of(list(recorded.events)),
    )
    stopped = False
    try:
        await runner.run(recorded.task(), final_attempt=True, first_delivery=not given)
    except ReplayStop:
        stopped = True
    finally:
        store.close()
    replayed_events = tuple(memory.events(recorded.run_id))
    replayed = [event_record(e) for e in replayed_events]
    # A pause and a person's resolution of it are the run's environment (a crash, a
    # decision), not its code: the replay meets the resolved call's recorded outcome.
    expected = [
        event_record(e)
        for e in recorded.events
        if not isinstance(e, AgentRun.RunPaused | AgentRun.ToolCallResolved)
    ]
    divergence = first_divergence(expected, replayed)
    note = None
    if divergence is not None and stopped and recorded.terminal is not None:
        # The recording ends with its environment's failure; compare up to there.
        divergence = first_divergence(expected[:-1], replayed)
    if divergence is not None and recorded.terminal is None:
        # Still in progress: the replay may go further than the recording did.
        divergence = first_divergence(expected, replayed[: len(expected)])
    if not recorded.complete:
        terminal = recorded.terminal
        if terminal is None:
            note = "the run is still in progress: compared up to its last recorded event"
        elif divergence is None and stopped:
            assert isinstance(terminal, AgentRun.RunFailed)
            note = (
                f"the recording ends in {terminal.error_kind} (its environment, not the agent):"
                " replayed up to that point"
            )
    return ReplayReport(
        run_id=str(recorded.run_id),
        task_id=requested.task_id,
        agent=requested.agent,
        verdict="identical" if divergence is None else "diverged",
        recorded_events=len(expected),
        replayed_events=len(replayed),
        divergence=divergence,
        note=note,
        replayed=replayed_events,
    )


def run_events(store: EventStore, run_id: UUID) -> list[Any]:
    """A run's events from a store; `RunNotFound` / `NotARun` when it has none."""
    events = store.events(run_id)
    if not events:
        raise RunNotFound(str(run_id))
    if not isinstance(events[0], AgentRun.RunRequested):
        raise NotARun(f"{run_id} is a {type(events[0]).__qualname__.split('.')[0]}, not a run")
    return events


def recorded_run(store: EventStore, run_id: UUID, agent_ref: str | None = None) -> RecordedRun:
    """A run and its session context, read from a store."""
    events = run_events(store, run_id)
    requested = events[0]
    session: list[Any] = []
    if requested.session_id is not None and requested.history_version > 0:
        session = store.events(
            session_aggregate_id_for(requested.session_id), lte=requested.history_version
        )
    return RecordedRun(events=tuple(events), session_events=tuple(session), agent_ref=agent_ref)


def recorded_runs(document: HistoryDocument) -> list[RecordedRun]:
    """Every run in a history document with its session context, oldest first."""
    sessions: dict[UUID, list[Any]] = {}
    runs: list[list[Any]] = []
    for aggregate in document.aggregates:
        events = decode_aggregate(aggregate)
        if aggregate.aggregate_type == "AgentRun":
            runs.append(events)
        elif aggregate.aggregate_type == "Conversation":
            sessions[UUID(aggregate.aggregate_id)] = events
    result = []
    for events in runs:
        requested = events[0]
        if not isinstance(requested, AgentRun.RunRequested):
            raise HistoryFileError(
                f"run {events[0].originator_id} does not start with RunRequested"
            )
        context: list[Any] = []
        if requested.session_id is not None and requested.history_version > 0:
            conversation = sessions.get(session_aggregate_id_for(requested.session_id), [])
            context = [e for e in conversation if e.originator_version <= requested.history_version]
            if len(context) < requested.history_version:
                raise HistoryFileError(
                    f"run {requested.task_id} saw version {requested.history_version} of session"
                    f" {requested.session_id}, but the file holds {len(context)} of its events"
                )
            assert all(isinstance(e, Conversation.Event) for e in context)
        result.append(
            RecordedRun(
                events=tuple(events),
                session_events=tuple(context),
                agent_ref=document.agents.get(requested.agent),
            )
        )
    result.sort(key=lambda r: r.requested.timestamp)
    return result


async def replay_run(
    store: EventStore, run_id: UUID, catalog: Catalog, *, run_tools: bool = False
) -> ReplayReport:
    """Replay a run of the store (see the module docstring)."""
    return await replay_recorded(recorded_run(store, run_id), catalog, run_tools=run_tools)


async def replay_history(
    document: HistoryDocument, catalog: Catalog, *, run_tools: bool = False
) -> list[ReplayReport]:
    """Replay every run of an exported history, without any store."""
    return [
        await replay_recorded(recorded, catalog, run_tools=run_tools)
        for recorded in recorded_runs(document)
    ]

"""The agent runner: one task in, one recorded run and its outcome out.

`AgentRunner.run` is idempotent per task id. A new task creates its run aggregate; a
completed one returns its stored outcome; one left in progress by a dead worker resumes
from its recorded messages (recorded model responses are not requested again, recorded
tool results are served from the ledger). After each agent step the step's events are
saved in one `save()`; the final events and the session's turn are saved atomically.

Given a tracer provider, agents run under pydantic-ai's own instrumentation: one
`invoke_agent <agent>` span per delivery that drives the run, with a `chat <model>` span
per model request sent and an `execute_tool <tool>` span per tool call. A resumed run
shows only what this delivery did: recorded model responses are not requested again, so
they have no `chat` span; a tool call whose result is recorded still has its span (the
call goes through pydantic-ai's tool execution) but the result comes from the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic_ai import Agent
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelRequestTimeout,
    ModelServerError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.run import AgentRun as PydanticAgentRun
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_core import to_jsonable_python

from agentledger.domain.conversation import Conversation, conversation_messages
from agentledger.domain.errors import ErrorKind
from agentledger.domain.ids import run_id_for, session_aggregate_id_for
from agentledger.domain.memory.recall import MemoryHit, RecallSpec, recall_instructions
from agentledger.domain.run import AgentRun, RunHistory
from agentledger.domain.tasks import (
    OutcomeStatus,
    PausedFor,
    RunAgent,
    RunError,
    RunOutcome,
    Usage,
)
from agentledger.handlers.catalog import Catalog, CatalogEntry
from agentledger.handlers.orchestration.context import task_context
from agentledger.handlers.recording import (
    RunPauseRequested,
    StepRecorder,
    ToolCallError,
    ToolEffects,
    append_messages,
    messages_from_json,
    messages_to_json,
    wrap_toolsets,
)
from agentledger.handlers.streaming.nodes import can_stream, stream_node
from agentledger.handlers.streaming.publisher import StreamPublisher
from agentledger.handlers.tools.middleware import ToolMiddleware
from agentledger.infra.event_store import (
    AsyncEventStore,
    ConcurrencyConflict,
    RunSuperseded,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from agentledger.handlers.memory.recall import Recaller

__all__ = ["AgentRunner", "RunSuperseded", "TransientRunError", "outcome_of"]

log = structlog.get_logger("agentledger.runner")

_TRANSIENT_MODEL_ERRORS = (
    ModelRateLimitError,
    ModelUnavailableError,
    ModelServerError,
    ModelConnectionError,
    ModelRequestTimeout,
)

SESSION_RETRIES = 100


def _ends_in_answer(messages: list[ModelMessage]) -> bool:
    last = messages[-1]
    return isinstance(last, ModelResponse) and not any(
        isinstance(part, ToolCallPart) for part in last.parts
    )


class TransientRunError(Exception):
    """The run could not progress for a reason that may pass (model or database outage).
    The run stays in progress; the task should be redelivered later."""


def outcome_of(run: AgentRun) -> RunOutcome:
    """The outcome recorded in a finished (or paused) run."""
    usage = Usage(
        requests=run.requests,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        tool_calls=run.tool_calls,
    )
    error = None
    if run.status == "failed":
        error = RunError(
            kind=run.error_kind or ErrorKind.INTERNAL_ERROR,
            message=run.error_message or "",
            retryable=run.retryable,
        )
    paused = run.status == "paused" and run.paused_for is not None
    status: OutcomeStatus = "completed" if run.status == "completed" else "failed"
    return RunOutcome(
        task_id=run.task_id,
        run_id=str(run.id),
        agent=run.agent,
        session_id=run.session_id,
        status="paused" if paused else status,
        paused_for=PausedFor(**run.paused_for) if paused and run.paused_for else None,
        output=run.output,
        usage=usage,
        cost_usd=run.cost_usd,
        duration_ms=run.duration_ms,
        error=error,
    )


class _Failure(Exception):
    """The run ends as failed with this error kind."""

    def __init__(self, *, kind: ErrorKind, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


Clock = Callable[[], datetime]


def _recalled_instructions(run: AgentRun) -> str | None:
    """The recorded recall as instructions for every model request of the run."""
    if not run.recalled:
        return None
    return recall_instructions([MemoryHit.model_validate(hit) for hit in run.recalled])


StreamOpener = Callable[[RunAgent, CatalogEntry], Awaitable[StreamPublisher]]
"""Opens a task's stream (the worker's: on its NATS connection)."""


def _with_middleware(
    toolsets: Sequence[AbstractToolset[Any]], entry: CatalogEntry
) -> Sequence[AbstractToolset[Any]]:
    """The agent's toolsets behind its catalog middleware (inside the ledger: a call
    served from the record never meets the middleware again)."""
    if entry.middleware is None:
        return toolsets
    return [ToolMiddleware(ts, spec=entry.middleware) for ts in toolsets]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AgentRunner:
    """Runs tasks against the catalog, recording every step in the event store."""

    def __init__(
        self,
        *,
        store: AsyncEventStore,
        catalog: Catalog,
        clock: Clock = _utcnow,
        tool_effects: ToolEffects | None = None,
        logger: Any = None,
        tracer_provider: TracerProvider | None = None,
        recaller: Recaller | None = None,
        streams: StreamOpener | None = None,
    ) -> None:
        """`tool_effects` replaces how a tool call not yet recorded is carried out (replay
        serves recorded results through it); by default the tool runs. `logger` replaces
        the runner's structlog logger (replay passes a silent one). With a
        `tracer_provider`, every agent run is instrumented with it (per run, not through
        `Agent.instrument_all`, so nothing global changes); without one, runs are traced
        only as their agents themselves say."""
        self._log = log if logger is None else logger
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._tool_effects = tool_effects
        self._recaller = recaller
        """Searches the memory for agents with `recall` (None: no recall, e.g. no view)."""
        self._streams = streams
        """Opens the stream of a task that asks for one (None: tasks are not streamed)."""
        # One capability for all runs: pydantic-ai copies it for each run (`for_run`).
        self._run_capabilities = (
            None
            if tracer_provider is None
            else [
                Instrumentation(settings=InstrumentationSettings(tracer_provider=tracer_provider))
            ]
        )

    async def run(
        self,
        task: RunAgent,
        *,
        final_attempt: bool = False,
        first_delivery: bool = False,
        guard: Callable[[], None] | None = None,
    ) -> RunOutcome:
        """Run (or resume, or look up) the task; returns its outcome once recorded.

        With `first_delivery` the run is created straight away (the common case needs no
        read); a task that exists after all is found through the creation conflict.

        Raises `TransientRunError` when it should be retried later; with
        `final_attempt` a transient failure is recorded as the run's failure instead.
        Raises `UnknownAgent` before anything is recorded for an agent not in the catalog.
        `guard` is called before every model request and tool step; what it raises
        (`LeaseLost`, a `RunSuperseded`: this worker may no longer drive the run) ends
        this attempt with nothing more recorded.
        """
        entry = self._catalog.get(task.agent)
        publisher = await self._open_stream(task, entry)
        outcome: RunOutcome | None = None
        try:
            outcome = await self._run(task, entry, final_attempt, first_delivery, guard, publisher)
            return outcome
        finally:
            if publisher is not None:
                await publisher.close(outcome)

    async def _open_stream(self, task: RunAgent, entry: CatalogEntry) -> StreamPublisher | None:
        """The task's stream, when it asks for one and this runner can send one (a stream
        that cannot open is logged and the run goes on unstreamed)."""
        if not task.stream or self._streams is None:
            return None
        try:
            return await self._streams(task, entry)
        except Exception as e:
            self._log.warning("stream not opened", task_id=task.task_id, error=str(e))
            return None

    async def _run(
        self,
        task: RunAgent,
        entry: CatalogEntry,
        final_attempt: bool,
        first_delivery: bool,
        guard: Callable[[], None] | None,
        publisher: StreamPublisher | None,
    ) -> RunOutcome:
        bound = self._log.bind(task_id=task.task_id, agent=task.agent, session_id=task.session_id)
        run = None if first_delivery else await self._store.get(run_id_for(task.task_id), AgentRun)
        created = await self._create(task, entry.recall) if run is None else None
        if created is not None:
            run, session_json = created
            history = RunHistory()
        else:
            if run is None:  # another delivery of the same task created it first
                run = await self._store.get(run_id_for(task.task_id), AgentRun)
                assert run is not None, "a creation conflict implies the run exists"
            if run.status != "running":
                bound.info("task already finished; returning the stored outcome", status=run.status)
                return outcome_of(run)
            history = RunHistory.fold(await self._store.events(run.id))
            session_json = await self._session_history(run)
            bound.info(
                "resuming run",
                recorded_messages=len(history.messages),
                recorded_tool_results=len(history.tool_results),
            )
        bound = bound.bind(run_id=str(run.id))
        recorder = StepRecorder(run=run, store=self._store)
        try:
            with task_context(task, self._store):  # what the run's tools may ask about
                return await self._drive(
                    task, entry, run, history, session_json, recorder, bound, guard, publisher
                )
        except _Failure as failure:
            return await self._fail(run, failure, bound, recorder)
        except RunPauseRequested as pause:
            return await self._pause(run, pause, bound, recorder)
        except TransientRunError as e:
            if not final_attempt:
                raise
            return await self._fail(
                run,
                _Failure(kind=ErrorKind.TRANSIENT_EXHAUSTED, message=str(e), retryable=True),
                bound,
                recorder,
            )

    async def give_up(self, task: RunAgent, kind: ErrorKind, message: str) -> RunOutcome:
        """End the task's run as failed with `kind` (the worker's last delivery could not
        finish it). A finished run keeps its outcome; a task never run gets a run that
        records the failure, so every accepted task has one. Store errors propagate."""
        run = await self._store.get(run_id_for(task.task_id), AgentRun)
        if run is None:
            created = await self._create(task)
            run = (
                created[0]
                if created is not None
                else await self._store.get(run_id_for(task.task_id), AgentRun)
            )
            assert run is not None, "a creation conflict implies the run exists"
        if run.status != "running":
            return outcome_of(run)
        bound = self._log.bind(task_id=task.task_id, agent=task.agent, run_id=str(run.id))
        return await self._fail(run, _Failure(kind=kind, message=message, retryable=True), bound)

    async def cancel(self, task: RunAgent, reason: str) -> RunOutcome:
        """End the task's run as failed (`cancelled`, not retryable), creating it first if
        no worker has started it, so a worker that takes the task later finds it
        finished and runs nothing. A worker driving it meets a conflict at its next
        save and stops (`RunSuperseded`). A finished run keeps its outcome."""
        for _ in range(10):
            run = await self._store.get(run_id_for(task.task_id), AgentRun)
            if run is None:
                created = await self._create(task)
                if created is None:
                    continue  # a worker created it meanwhile: load it again
                run = created[0]
            if run.status not in ("running", "paused"):
                return outcome_of(run)
            run.fail(str(ErrorKind.CANCELLED), reason, False, self._duration_ms(run))
            try:
                await self._store.save(run)
            except ConcurrencyConflict:
                continue  # a step was saved meanwhile: load again and retry
            self._log.info("run cancelled", task_id=task.task_id, run_id=str(run.id))
            return outcome_of(run)
        raise ConcurrencyConflict(f"run of task {task.task_id!r} kept changing")

    async def _create(
        self, task: RunAgent, recall: RecallSpec | None = None
    ) -> tuple[AgentRun, list[Any]] | None:
        """Record the run's creation with the session history it starts from (None when
        another delivery of the same task created it first); with a `recall` spec and a
        recaller, what the memory recalls for the prompt is recorded in the same save."""
        history_version = 0
        session_json: list[Any] = []
        if task.session_id is not None:
            session_events = await self._store.events(session_aggregate_id_for(task.session_id))
            if session_events:
                history_version = session_events[-1].originator_version
                session_json = conversation_messages(session_events)
        limits = task.usage_limits.model_dump() if task.usage_limits else {}
        run = AgentRun(
            task_id=task.task_id,
            agent=task.agent,
            prompt=task.prompt,
            session_id=task.session_id,
            metadata=dict(task.metadata),
            usage_limits=limits,
            deadline=task.deadline.isoformat() if task.deadline else None,
            history_version=history_version,
        )
        if recall is not None and self._recaller is not None:
            recalled = await self._recaller.recall(task, recall)
            run.record_recall(**recalled.as_event_fields())
        try:
            await self._store.save(run)
        except ConcurrencyConflict:
            return None
        return run, session_json

    async def _session_history(self, run: AgentRun) -> list[Any]:
        if run.session_id is None or run.history_version == 0:
            return []
        events = await self._store.events(
            session_aggregate_id_for(run.session_id), lte=run.history_version
        )
        return conversation_messages(events)

    async def _drive(
        self,
        task: RunAgent,
        entry: CatalogEntry,
        run: AgentRun,
        history: RunHistory,
        session_json: list[Any],
        recorder: StepRecorder,
        bound: Any,
        guard: Callable[[], None] | None = None,
        publisher: StreamPublisher | None = None,
    ) -> RunOutcome:
        agent: Agent[Any, Any] = entry.agent
        prior: list[ModelMessage] = messages_from_json(session_json + history.messages)
        prompt = history.prompt_to_send(task.prompt, run.fork_prompt)
        limits = UsageLimits(**(task.usage_limits.model_dump() if task.usage_limits else {}))
        usage = RunUsage(
            requests=run.requests,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            tool_calls=run.tool_calls,
        )
        timeout = self._remaining(task)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                overrides: dict[str, Any] = {}
                if entry.model is not None:
                    overrides["model"] = entry.model
                with agent.override(
                    tools=[],
                    toolsets=wrap_toolsets(
                        _with_middleware(agent.toolsets, entry),
                        recorder,
                        history,
                        self._tool_effects,
                        None if entry.middleware is None else entry.middleware.side_effect_of,
                    ),
                    **overrides,
                ):
                    async with agent.iter(
                        prompt,
                        message_history=prior,
                        instructions=_recalled_instructions(run),
                        usage_limits=limits,
                        usage=usage,
                        capabilities=self._run_capabilities,
                    ) as agent_run:
                        streams = can_stream(entry.model or agent.model)
                        output, final = await self._step_through(
                            agent_run, recorder, len(prior), guard, publisher, streams
                        )
        except TimeoutError as e:
            if not deadline.expired():  # not the task's deadline: a model call timed out
                raise TransientRunError(f"timed out: {e or 'TimeoutError'}") from None
            raise _Failure(
                kind=ErrorKind.DEADLINE_EXCEEDED, message=f"deadline {task.deadline} passed"
            ) from None
        except UsageLimitExceeded as e:
            raise _Failure(kind=ErrorKind.USAGE_LIMIT_EXCEEDED, message=str(e)) from None
        except _TRANSIENT_MODEL_ERRORS as e:
            raise TransientRunError(f"model unavailable: {type(e).__name__}: {e}") from None
        except (UnexpectedModelBehavior, ModelAPIError) as e:
            raise _Failure(kind=ErrorKind.MODEL_ERROR, message=f"{type(e).__name__}: {e}") from None
        except ConcurrencyConflict:
            raise RunSuperseded(f"run {run.id} was advanced by another worker") from None
        except (_Failure, TransientRunError, RunSuperseded, RunPauseRequested):
            raise
        except StoreUnavailable as e:
            raise TransientRunError(str(e)) from None
        except ToolCallError as e:
            raise _Failure(kind=ErrorKind.TOOL_ERROR, message=str(e)) from None
        except Exception as e:
            bound.exception("agent run raised")
            raise _Failure(
                kind=ErrorKind.INTERNAL_ERROR, message=f"{type(e).__name__}: {e}"
            ) from None
        return await self._complete(run, entry, output, recorder, final, history.messages, bound)

    async def _step_through(
        self,
        agent_run: PydanticAgentRun[Any, Any],
        recorder: StepRecorder,
        known: int,
        guard: Callable[[], None] | None = None,
        publisher: StreamPublisher | None = None,
        streams: bool = False,
    ) -> tuple[Any, list[ModelMessage]]:
        """Advance node by node, saving each step's new messages before the next.

        A response that asks for tool calls is saved before they run (so a resumed run
        neither asks the model again nor reruns a recorded call). An answer (a response
        without tool calls) is held back: it is usually the last step, saved with the
        run's completion in the same transaction; were it saved alone, a crash before the
        completion would leave a history that ends in an answer, from which pydantic-ai
        would ask the model again and rerun the tools. The held-back messages are
        returned unsaved, and kept in `recorder.held` meanwhile: a run that fails after
        an answer (its output rejected too often, a usage limit) saves them with its
        failure."""
        async for node in agent_run:
            if Agent.is_end_node(node):
                break
            messages = agent_run.ctx.state.message_history
            if len(messages) > known and not _ends_in_answer(messages):
                await recorder.record_messages(messages[known:])
                known = len(messages)
            recorder.held = list(messages[known:])
            if guard is not None:
                guard()  # before the next node runs (a model request or tool calls)
            if publisher is not None:
                # Runs the node streamed (pydantic-ai's own `node.stream`); `agent_run`
                # then goes on from its result as from any node's.
                await stream_node(node, agent_run.ctx, publisher, streams)
        if agent_run.result is None:  # pragma: no cover - iteration ends at End
            raise _Failure(kind=ErrorKind.INTERNAL_ERROR, message="agent run ended without result")
        return agent_run.result.output, list(agent_run.ctx.state.message_history[known:])

    def _remaining(self, task: RunAgent) -> float | None:
        if task.deadline is None:
            return None
        remaining = (task.deadline - self._clock()).total_seconds()
        if remaining <= 0:
            raise _Failure(
                kind=ErrorKind.DEADLINE_EXCEEDED, message=f"deadline {task.deadline} passed"
            )
        return remaining

    def _duration_ms(self, run: AgentRun) -> float:
        return max(0.0, (self._clock() - run.created_on).total_seconds() * 1000)

    async def _complete(
        self,
        run: AgentRun,
        entry: CatalogEntry,
        output: Any,
        recorder: StepRecorder,
        final: list[ModelMessage],
        recorded_before: list[Any],
        bound: Any,
    ) -> RunOutcome:
        """Save the last step, `RunCompleted` and (for a session) the turn atomically.

        A session's turns are appended with optimistic concurrency: when another turn
        committed first, reload and retry (bounded). A fork sees its parent's session
        history but records no turn: it is a branch, not a turn of the conversation."""
        output_json = to_jsonable_python(output)
        final_json = messages_to_json(final)
        turn_messages = recorded_before + recorder.recorded + final_json
        for attempt in range(SESSION_RETRIES):
            base_version = run.version  # everything before this attempt is saved
            append_messages(run, final, final_json)
            run.complete(output_json, self._cost(run, entry), self._duration_ms(run))
            conversation: Conversation | None = None
            if run.session_id is not None and run.parent_run_id is None:
                conversation = await self._store.get(
                    session_aggregate_id_for(run.session_id), Conversation
                ) or Conversation(session_id=run.session_id)
                conversation.record_turn(str(run.id), run.task_id, run.agent, turn_messages)
            try:
                await self._store.save(run, *([conversation] if conversation else []))
            except ConcurrencyConflict:
                fresh = await self._store.get(run.id, AgentRun)
                # Retry only a conflict that came from the conversation (another turn of
                # the session committed first). If the run itself moved on, another
                # worker is driving it: completing on top of its steps would be wrong.
                if (
                    conversation is None
                    or fresh is None
                    or fresh.status != "running"
                    or fresh.version != base_version
                ):
                    raise RunSuperseded(f"run {run.id} was advanced by another worker") from None
                # Another turn of this session committed first: retry on a fresh state.
                run = fresh
                await asyncio.sleep(min(0.05, 0.001 * (attempt + 1)))
                continue
            bound.info(
                "run completed",
                duration_ms=round(run.duration_ms or 0, 1),
                turn=conversation.turns if conversation else None,
            )
            return outcome_of(run)
        raise TransientRunError(
            f"session {run.session_id} stayed contended for {SESSION_RETRIES} tries"
        )

    def _cost(self, run: AgentRun, entry: CatalogEntry) -> float | None:
        if entry.price is None:
            return None
        return entry.price.cost(input_tokens=run.input_tokens, output_tokens=run.output_tokens)

    async def _pause(
        self, run: AgentRun, pause: RunPauseRequested, bound: Any, recorder: StepRecorder
    ) -> RunOutcome:
        """Record `RunPaused` (with the decision that the call's effect is unknown): the
        run waits for `agentledger tool resolve`."""
        async with recorder.lock:
            run.pause(pause.tool_call_id, pause.tool_name, pause.reason)
            try:
                await self._store.save(run)
            except ConcurrencyConflict:
                raise RunSuperseded(f"run {run.id} was advanced by another worker") from None
        bound.warning(
            "run paused: a side-effecting tool call needs a person's decision",
            tool=pause.tool_name,
            tool_call_id=pause.tool_call_id,
            alert=True,
        )
        return outcome_of(run)

    async def _fail(
        self, run: AgentRun, failure: _Failure, bound: Any, recorder: StepRecorder | None = None
    ) -> RunOutcome:
        """Record the failure, with the steps the recorder held back since its last save."""
        fresh = await self._store.get(run.id, AgentRun)
        if fresh is None or fresh.status != "running":
            return outcome_of(fresh) if fresh else outcome_of(run)
        # Only if no one else advanced the run since this recorder's last save.
        if recorder is not None and recorder.held and fresh.version == recorder.saved_version:
            append_messages(fresh, recorder.held, messages_to_json(recorder.held))
        fresh.fail(failure.kind, failure.message, failure.retryable, self._duration_ms(fresh))
        try:
            await self._store.save(fresh)
        except ConcurrencyConflict:
            raise RunSuperseded(f"run {run.id} was advanced by another worker") from None
        bound.warning("run failed", error_kind=str(failure.kind), error=failure.message)
        return outcome_of(fresh)

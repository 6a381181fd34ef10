"""Recording of a run as it happens: the step recorder and the tool-effect ledger.

`StepRecorder` turns new pydantic-ai messages into events and saves them, one `save()`
per agent step. `LedgerToolset` wraps every toolset of the agent: a call whose outcome
(result, or failure) is already recorded is served from the ledger (never executed
again); any other call is executed and its outcome saved before the run moves on. A call
recorded as started whose outcome was not (the process died while it ran) runs again,
without a second `ToolCallStarted`: a resumed run's events read as one uninterrupted run.

While a call runs, `current_tool_call()` says which call of which run it is, and
`record_tool_decision` lets the tool middleware (`agentledger.handlers.tools`) add its
decisions to the call's record: they are saved with the call's outcome.

A side-effecting tool (`side_effect` in the catalog, or the `side_effect` decorator) has
its start saved before it runs. Found started but unfinished on resume (its worker died
while it ran), it is recorded as `unknown_after_crash` and its policy decides: `retry`
runs it again, `fail` fails the call (it never runs twice), `pause` pauses the run
(`RunPauseRequested`) until a person resolves the call (`ToolCallResolved`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_ai import ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelRequest, ModelResponse
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
from pydantic_core import to_jsonable_python

from agentledger.domain.run import AgentRun, RunHistory
from agentledger.infra.event_store import AsyncEventStore

__all__ = [
    "NOT_RECORDED",
    "SIDE_EFFECT_ATTRIBUTE",
    "SIDE_EFFECT_METADATA",
    "LedgerToolset",
    "RunPauseRequested",
    "StepRecorder",
    "ToolCallError",
    "ToolCallScope",
    "ToolEffects",
    "append_messages",
    "current_tool_call",
    "declared_side_effect",
    "messages_from_json",
    "messages_to_json",
    "record_outcome",
    "record_tool_decision",
    "recorded_outcome",
    "wrap_toolsets",
]


class ToolCallError(Exception):
    """A tool raised (other than `ModelRetry`); the run fails with `tool_error`.

    Raised by a `ToolEffects`, its message is recorded as it is."""


class RunPauseRequested(Exception):
    """A side-effecting call with the `pause` policy was found unfinished after a crash:
    the run pauses until a person resolves the call."""

    def __init__(self, tool_call_id: str, tool_name: str, reason: str) -> None:
        super().__init__(reason)
        self.tool_call_id = tool_call_id
        self.tool_name = tool_name
        self.reason = reason


SIDE_EFFECT_ATTRIBUTE = "__agentledger_side_effect__"
"""Set on a tool function by `agentledger.handlers.tools.side_effect` (its policy)."""
SIDE_EFFECT_METADATA = "agentledger_side_effect"
"""The same, as a key of a pydantic-ai tool's `metadata`."""


def declared_side_effect(tool: ToolsetTool[Any]) -> str | None:
    """The side-effect policy a tool declares itself (decorator or metadata), if any."""
    metadata = tool.tool_def.metadata or {}
    if SIDE_EFFECT_METADATA in metadata:
        return str(metadata[SIDE_EFFECT_METADATA])
    functions = getattr(getattr(tool, "toolset", None), "tools", None)
    if isinstance(functions, Mapping):
        name = getattr(tool, "original_name", None) or tool.tool_def.name
        declared = getattr(
            getattr(functions.get(name), "function", None), SIDE_EFFECT_ATTRIBUTE, None
        )
        if declared is not None:
            return str(declared)
    return None


Execute = Callable[[], Awaitable[Any]]
"""Runs the tool call itself."""


class ToolEffects(Protocol):
    """Carries out a tool call that has no recorded result: `execute()` runs the tool.

    The default runs it; replay serves the recorded result instead. Whatever it returns
    or raises is recorded like the tool's own result: `ModelRetry` as a retry,
    `ToolCallError` with its message, any other exception as the tool's failure."""

    def __call__(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], execute: Execute
    ) -> Awaitable[Any]: ...


def messages_to_json(messages: Sequence[ModelMessage]) -> list[Any]:
    return ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")  # type: ignore[no-any-return]


def messages_from_json(data: Sequence[Any]) -> list[ModelMessage]:
    return ModelMessagesTypeAdapter.validate_python(list(data))


def append_messages(run: AgentRun, messages: Sequence[ModelMessage], as_json: list[Any]) -> None:
    """Trigger the events of new requests/responses on the run (saving is the caller's)."""
    for message, data in zip(messages, as_json, strict=True):
        if isinstance(message, ModelRequest):
            run.send_model_request(data)
        elif isinstance(message, ModelResponse):
            run.receive_model_response(
                data, message.model_name, message.usage.input_tokens, message.usage.output_tokens
            )


@dataclass(kw_only=True)
class StepRecorder:
    """Appends a run's events and saves them; one lock serialises the aggregate's writers
    (the driver loop and parallel tool calls)."""

    run: AgentRun
    store: AsyncEventStore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    recorded: list[Any] = field(default_factory=list)
    """JSON of the messages this recorder saved, in order (the run's new messages)."""
    held: list[ModelMessage] = field(default_factory=list)
    """Messages not saved yet: an answer held back to be saved with the run's ending."""
    saved_version: int = 0
    """The run's version after this recorder's last save (its version when created)."""

    def __post_init__(self) -> None:
        self.saved_version = self.saved_version or self.run.version

    async def record_messages(self, messages: Sequence[ModelMessage]) -> None:
        """Record new requests/responses of one step in one save."""
        if not messages:
            return
        async with self.lock:
            as_json = messages_to_json(messages)
            append_messages(self.run, messages, as_json)
            await self.store.save(self.run)
            self.saved_version = self.run.version
            self.recorded.extend(as_json)

    async def start_tool(
        self, tool_call_id: str, tool_name: str, args: Any, *, save: bool = False
    ) -> None:
        # Kept pending: saved with the result, so a tool costs one save, not two. The
        # event's timestamp still says when the call started. A side-effecting call's
        # start is saved at once (`save`): a crash must leave it on record.
        async with self.lock:
            self.run.start_tool_call(tool_call_id, tool_name, to_jsonable_python(args))
            if save:
                await self.store.save(self.run)
                self.saved_version = self.run.version

    async def finish_tool(self, tool_call_id: str, tool_name: str, result: Any) -> None:
        async with self.lock:
            self.run.finish_tool_call(tool_call_id, tool_name, result)
            await self.store.save(self.run)
            self.saved_version = self.run.version

    async def note_decision(
        self, tool_call_id: str, tool_name: str, decision: str, detail: Any, waited_ms: float
    ) -> None:
        # Kept pending like the start: saved with the call's outcome.
        async with self.lock:
            self.run.record_tool_decision(tool_call_id, tool_name, decision, detail, waited_ms)

    async def fail_tool(self, tool_call_id: str, tool_name: str, error: str, retry: bool) -> None:
        async with self.lock:
            self.run.fail_tool_call(tool_call_id, tool_name, error, retry)
            await self.store.save(self.run)
            self.saved_version = self.run.version


NOT_RECORDED: Any = object()
"""`recorded_outcome` of a call with no recorded outcome."""


def recorded_outcome(
    results: Mapping[str, Any], failures: Mapping[str, tuple[str, bool]], call_id: str
) -> Any:
    """A call's recorded result, or its recorded failure raised again (`ModelRetry` or
    `ToolCallError`), or `NOT_RECORDED`."""
    if call_id in results:
        return results[call_id]
    if call_id in failures:
        error, retry = failures[call_id]
        if retry:
            raise ModelRetry(error)
        raise ToolCallError(error)
    return NOT_RECORDED


@dataclass(frozen=True)
class ToolCallScope:
    """The tool call being carried out, for the middleware around it."""

    tool_call_id: str
    tool_name: str
    recorder: StepRecorder | None
    """Where its decisions are recorded (None: a call outside a recorded run)."""
    ledger: LedgerToolset | None = None
    """The ledger serving the run's recorded tool outcomes (composite tools' sub-calls)."""
    sub_calls: list[int] = field(default_factory=lambda: [0])
    """How many sub-calls this call has made (`agentledger.handlers.tools.sub_call`)."""

    @property
    def run_id(self) -> str | None:
        return None if self.recorder is None else str(self.recorder.run.id)

    @property
    def task_id(self) -> str | None:
        return None if self.recorder is None else self.recorder.run.task_id


_SCOPE: ContextVar[ToolCallScope | None] = ContextVar("agentledger_tool_call", default=None)


def current_tool_call() -> ToolCallScope | None:
    """The recorded tool call this code runs in (None outside one)."""
    return _SCOPE.get()


async def record_tool_decision(decision: str, detail: Any = None, waited_ms: float = 0.0) -> None:
    """Add a middleware decision to the current call's record (nothing outside a recorded
    run). `detail` must be JSON-compatible."""
    scope = _SCOPE.get()
    if scope is None or scope.recorder is None:
        return
    await scope.recorder.note_decision(
        scope.tool_call_id, scope.tool_name, decision, to_jsonable_python(detail), waited_ms
    )


@dataclass
class LedgerToolset(WrapperToolset[Any]):
    """Serves recorded tool results by `tool_call_id`; records the others."""

    recorder: StepRecorder | None = None
    ledger: Mapping[str, Any] = field(default_factory=dict)
    failures: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    """Recorded failures by tool_call_id: (error, retry)."""
    started: AbstractSet[str] = field(default_factory=frozenset)
    """Calls already recorded as started (a crash came before their outcome)."""
    effects: ToolEffects | None = None
    side_effects: Callable[[str], str | None] | None = None
    """The side-effect policy of a tool by name, from the catalog (a tool's own
    declaration counts too: `declared_side_effect`)."""
    unknown: AbstractSet[str] = field(default_factory=frozenset)
    """Calls already recorded as unknown after a crash."""
    resolutions: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    """A person's resolution of an unfinished call: (retry|fail|result, value)."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        call_id = ctx.tool_call_id or ""
        served = recorded_outcome(self.ledger, self.failures, call_id)
        if served is not NOT_RECORDED:
            return served

        def execute() -> Awaitable[Any]:
            return WrapperToolset.call_tool(self, name, tool_args, ctx, tool)

        recorder = self.recorder
        token = _SCOPE.set(ToolCallScope(call_id, name, recorder, self))
        try:
            if recorder is None:
                return await execute()
            policy = (self.side_effects and self.side_effects(name)) or declared_side_effect(tool)
            if call_id not in self.started:
                await recorder.start_tool(call_id, name, tool_args, save=policy is not None)
            elif policy is not None:  # started, no outcome: its worker died while it ran
                served = await self._unfinished(recorder, call_id, name, policy)
                if served is not _RUN_AGAIN:
                    return served
            return await self._record(recorder, call_id, name, tool_args, ctx, execute)
        finally:
            _SCOPE.reset(token)

    async def _unfinished(
        self, recorder: StepRecorder, call_id: str, name: str, policy: str
    ) -> Any:
        """A side-effecting call found unfinished: record that its effect is unknown
        (once), then follow a person's resolution or else the tool's policy. Returns
        the call's result, or `_RUN_AGAIN`."""
        if call_id not in self.unknown:
            await recorder.note_decision(
                call_id, name, "unknown_after_crash", {"on_crash": policy}, 0.0
            )
        resolution = self.resolutions.get(call_id)
        if resolution is not None:
            kind, value = resolution
            if kind == "result":
                await recorder.finish_tool(call_id, name, value)
                return value
            if kind == "fail":
                await recorder.fail_tool(call_id, name, str(value), retry=False)
                raise ToolCallError(str(value))
            return _RUN_AGAIN
        reason = (
            f"side-effecting tool {name!r} was running when its worker stopped:"
            " whether its effect happened is unknown"
        )
        if policy == "fail":
            error = f"{reason} (side_effect = fail: it is not run again)"
            await recorder.fail_tool(call_id, name, error, retry=False)
            raise ToolCallError(error)
        if policy == "pause":
            raise RunPauseRequested(call_id, name, reason)
        return _RUN_AGAIN

    async def _record(
        self,
        recorder: StepRecorder,
        call_id: str,
        name: str,
        tool_args: dict[str, Any],
        ctx: RunContext[Any],
        execute: Execute,
    ) -> Any:
        if self.effects is None:
            return await record_outcome(recorder, call_id, name, execute)
        effects = self.effects
        return await record_outcome(
            recorder, call_id, name, lambda: effects(name, tool_args, ctx, execute)
        )


async def record_outcome(
    recorder: StepRecorder, call_id: str, name: str, execute: Execute, what: str = "tool"
) -> Any:
    """Carry out a call and record its outcome: its result, a `ModelRetry` as a retry, a
    `ToolCallError` with its message, any other exception as the tool's failure (raised
    on as a `ToolCallError`)."""
    try:
        result = await execute()
    except ModelRetry as e:
        await recorder.fail_tool(call_id, name, str(e), retry=True)
        raise
    except ToolCallError as e:
        await recorder.fail_tool(call_id, name, str(e), retry=False)
        raise
    except Exception as e:
        error = f"{what} {name!r} raised {type(e).__name__}: {e}"
        await recorder.fail_tool(call_id, name, error, retry=False)
        raise ToolCallError(error) from e
    await recorder.finish_tool(call_id, name, to_jsonable_python(result))
    # The tool's own result goes to pydantic-ai (a `ToolReturn`, binary content or a
    # model keep their meaning); only a resumed run gets the recorded JSON form.
    return result


_RUN_AGAIN: Any = object()


def wrap_toolsets(
    toolsets: Sequence[AbstractToolset[Any]],
    recorder: StepRecorder,
    history: RunHistory,
    effects: ToolEffects | None = None,
    side_effects: Callable[[str], str | None] | None = None,
) -> list[AbstractToolset[Any]]:
    """Every toolset behind the ledger of what `history` recorded."""
    return [
        LedgerToolset(
            ts,
            recorder=recorder,
            ledger=history.tool_results,
            failures=history.tool_failures,
            started=frozenset(history.started_tool_calls),
            effects=effects,
            side_effects=side_effects,
            unknown=frozenset(history.unknown_after_crash),
            resolutions=history.resolutions,
        )
        for ts in toolsets
    ]

"""Comparing a replayed run's events with the recorded ones: the first divergence.

What counts: every field an agent's code decides (messages, tool calls and results,
outputs, errors, token counts). What does not: when things happened (timestamps,
durations), pydantic-ai's per-execution ids (`run_id`, `conversation_id` in messages)
and the cost, which follows the catalog's price rather than the agent's behaviour.

Tool calls made in one model response may run in parallel, so their events are stored
in completion order; both sides are put in the order the model asked for the calls
before comparing, and indices are reported as stored (the event's version).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.domain.timeline import EventRecord

__all__ = ["Divergence", "comparable", "first_divergence"]

VOLATILE_MESSAGE_KEYS = frozenset({"timestamp", "run_id", "conversation_id", "model_id"})
"""Keys of pydantic-ai message JSON that differ between two executions of one run
(`model_id`, pydantic-ai 2.68+, names the model object: the replay serves responses
through a model of its own)."""

IGNORED_FIELDS: dict[str, frozenset[str]] = {
    "RunCompleted": frozenset({"duration_ms", "cost_usd"}),
    "RunFailed": frozenset({"duration_ms"}),
    "ToolDecisionMade": frozenset({"waited_ms"}),
}
"""Event fields that describe the execution, not the agent's behaviour."""

_TOOL_EVENTS = frozenset(
    {"ToolCallStarted", "ToolDecisionMade", "ToolCallFinished", "ToolCallFailed"}
)
_TOOL_EVENT_RANK = {"ToolCallStarted": 0, "ToolDecisionMade": 1}
"""Within one call: started, then its middleware decisions (in their order), then its
outcome."""
_MESSAGE_EVENTS = frozenset({"ModelRequestSent", "ModelResponseReceived"})


@dataclass(frozen=True, kw_only=True)
class Divergence:
    """Where a replay first differs from the recording."""

    index: int
    """The event index (1-based, the aggregate version) in the recording; one past
    its last event when the replay produced more events than were recorded."""
    expected: EventRecord | None
    """The recorded event there (None when the recording has no more events)."""
    actual: EventRecord | None
    """The replayed event there (None when the replay stopped short)."""
    diff: tuple[str, ...]
    """A unified diff of the two events' compared fields."""

    def differing_fields(self) -> tuple[str, ...]:
        """Paths of the compared fields that differ (`message.instructions`,
        `message.parts[0].content`, `result`), when both sides have the same event type."""
        if self.expected is None or self.actual is None:
            return ()
        if self.expected.name != self.actual.name:
            return ()
        want, got = _shared(comparable(self.expected), comparable(self.actual))
        return tuple(_differing_paths(want, got, ""))

    def summary(self) -> str:
        expected = self.expected.name if self.expected else "end of recording"
        actual = self.actual.name if self.actual else "end of replay"
        fields = self.differing_fields()
        if fields:
            shown = ", ".join(fields[:_MAX_PATHS])
            more = f" (+{len(fields) - _MAX_PATHS} more)" if len(fields) > _MAX_PATHS else ""
            return f"diverged at event {self.index}: {expected} differs in {shown}{more}"
        return f"diverged at event {self.index}: expected {expected}, got {actual}"


_MAX_PATHS = 5


def _differing_paths(want: Any, got: Any, path: str) -> list[str]:
    """The deepest paths at which two JSON-like values differ."""
    if isinstance(want, dict) and isinstance(got, dict):
        paths: list[str] = []
        for key in sorted(set(want) | set(got), key=str):
            if want.get(key, _MISSING) != got.get(key, _MISSING):
                child = f"{path}.{key}" if path else str(key)
                paths += _differing_paths(want.get(key, _MISSING), got.get(key, _MISSING), child)
        return paths
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        paths = []
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if a != b:
                paths += _differing_paths(a, b, f"{path}[{i}]")
        return paths
    return [path or "(value)"]


_MISSING = object()


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_MESSAGE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def comparable(record: EventRecord) -> dict[str, Any]:
    """The fields of an event that a replay must reproduce."""
    ignored = IGNORED_FIELDS.get(record.name, frozenset())
    data = {k: v for k, v in record.data.items() if k not in ignored}
    if record.name in _MESSAGE_EVENTS and "message" in data:
        data["message"] = _strip(data["message"])
    return {"event": record.name, **data}


def _call_order(response: EventRecord) -> dict[str, int]:
    parts = response.data.get("message", {}).get("parts", [])
    ids = [p.get("tool_call_id") for p in parts if p.get("part_kind") == "tool-call"]
    return {call_id: i for i, call_id in enumerate(ids) if call_id}


def canonical_order(records: Sequence[EventRecord]) -> list[EventRecord]:
    """The records with each block of tool-call events in the order the model asked for
    the calls (started, then decisions, then the outcome; a composite call's sub-calls
    after it, by number), other events where they are."""
    ordered: list[EventRecord] = []
    block: list[EventRecord] = []
    order: dict[str, int] = {}

    def position(record: EventRecord) -> tuple[int, int, int]:
        # A composite tool's sub-call (`<id>#<n>`) goes with its call, in its number.
        parent, _, number = str(record.data.get("tool_call_id")).partition("#")
        sub = int(number) if number.isdigit() else 0
        return (order.get(parent, len(order)), sub, _TOOL_EVENT_RANK.get(record.name, 2))

    def flush() -> None:
        block.sort(key=position)
        ordered.extend(block)
        block.clear()

    for record in records:
        if record.name in _TOOL_EVENTS:
            block.append(record)
            continue
        flush()
        if record.name == "ModelResponseReceived":
            order = _call_order(record)
        ordered.append(record)
    flush()
    return ordered


def _diff(expected: EventRecord | None, actual: EventRecord | None) -> tuple[str, ...]:
    def lines(record: EventRecord | None) -> list[str]:
        if record is None:
            return []
        return json.dumps(comparable(record), indent=2, sort_keys=True, default=str).splitlines()

    return tuple(
        difflib.unified_diff(
            lines(expected), lines(actual), "recorded", "replayed", n=3, lineterm=""
        )
    )


def _shared(want: Any, got: Any) -> tuple[Any, Any]:
    """Both values with dict keys that only one side has left out, recursively.

    A pydantic-ai release adds fields to its message JSON (2.68: `canonical_system`,
    `model_id`); a recording made before it lacks them. A key present on one side only
    is version skew, not behaviour: the keys both sides have must agree."""
    if isinstance(want, dict) and isinstance(got, dict):
        keys = want.keys() & got.keys()
        pairs = {k: _shared(want[k], got[k]) for k in keys}
        return {k: a for k, (a, _) in pairs.items()}, {k: b for k, (_, b) in pairs.items()}
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        pairs_list = [_shared(a, b) for a, b in zip(want, got, strict=True)]
        return [a for a, _ in pairs_list], [b for _, b in pairs_list]
    return want, got


def _agree(want: EventRecord, got: EventRecord) -> bool:
    a, b = _shared(comparable(want), comparable(got))
    return bool(a == b)


def first_divergence(
    expected: Sequence[EventRecord], actual: Sequence[EventRecord]
) -> Divergence | None:
    """The first event where `actual` differs from `expected`, or None if they agree."""
    recorded = canonical_order(expected)
    replayed = canonical_order(actual)
    for i in range(max(len(recorded), len(replayed))):
        want = recorded[i] if i < len(recorded) else None
        got = replayed[i] if i < len(replayed) else None
        if want is not None and got is not None and _agree(want, got):
            continue
        if want is not None:
            index = want.version
        else:
            index = max((r.version for r in recorded), default=0) + 1
        return Divergence(index=index, expected=want, actual=got, diff=_diff(want, got))
    return None

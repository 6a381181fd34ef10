"""Intake: turning a raw task message into a `RunAgent`, or a clear rejection.

Every way a message can be poison becomes a `TaskRejected` with one readable sentence,
keyed by the task id when it can be read, else by the message id: not UTF-8 or not
JSON (NaN and Infinity included), a number Python will not read (over 4,300 digits),
nesting deeper than the contract's (`MAX_NESTING`), a NUL character or a lone surrogate
in any string (PostgreSQL text cannot hold NUL, UTF-8 cannot encode a surrogate; both
are refused here rather than failing when the run is saved), metadata over its limits,
anything the JSON schema forbids (validated strictly, as JSON), an unknown agent, a
prompt too large, subject and payload disagreeing, or a deadline already past when the
task first arrives.

What a rejection keeps of the message is untrusted: its ids only when valid, its text
bounded and made storable (`agentledger.domain.rejection.storable_text`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentledger.domain.errors import ErrorKind
from agentledger.domain.rejection import (
    REJECTION_TEXT_MAX_CHARS,
    storable_text,
    unstorable_char,
    valid_id_or_none,
)
from agentledger.domain.tasks import (
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_CHARS,
    RunAgent,
)
from agentledger.handlers.catalog import Catalog, UnknownAgent

__all__ = [
    "MAX_NESTING",
    "Clock",
    "RawTask",
    "Rejection",
    "content_problem",
    "describe_errors",
    "load_json",
    "parse_model",
    "parse_task",
]

EXCERPT_CHARS = REJECTION_TEXT_MAX_CHARS
MAX_NESTING = 2
"""A `RunAgent` is an object holding flat objects (`metadata`, `usage_limits`)."""

M = TypeVar("M", bound=BaseModel)

Clock = Callable[[], datetime]
"""Now, as an aware datetime."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Rejection(Exception):
    """The message cannot be accepted as a task; it is recorded and not retried.

    Its reason and key are bounded and storable, its task id and agent kept only when
    they are valid ids, whatever the caller passes."""

    def __init__(
        self,
        kind: ErrorKind,
        reason: str,
        *,
        key: str,
        task_id: str | None = None,
        agent: str | None = None,
    ) -> None:
        reason = storable_text(reason)
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.key = storable_text(key)
        self.task_id = valid_id_or_none(task_id)
        self.agent = valid_id_or_none(agent)


@dataclass(frozen=True, kw_only=True)
class RawTask:
    """A task message as delivered."""

    body: bytes
    subject: str
    msg_id: str | None
    """The `Nats-Msg-Id` header, if any."""
    fallback_key: str
    """Identifies the message when neither task id nor msg id is readable (stream:seq)."""
    delivered: int = 1
    """Which delivery of the message this is (JetStream's count; 1 is the first)."""

    def excerpt(self) -> str:
        """The start of the body as storable text (at most `EXCERPT_CHARS` characters)."""
        head = self.body[: 4 * EXCERPT_CHARS]
        text = head.decode("utf-8", errors="replace")
        if len(self.body) > len(head):
            text += "…"
        return storable_text(text, EXCERPT_CHARS)


_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}$")


def _shown(name: str) -> str:
    """A key from the message, fit to quote in a reason (bounded, escaped)."""
    return repr(name) if len(name) <= 40 else repr(name[:40]) + "…"


def _child(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    name = str(key)
    if _SIMPLE_NAME.match(name):
        return f"{where}.{name}" if where else name
    return f"{where}[{_shown(name)}]" if where else f"the field {_shown(name)}"


def _text_problem(text: str) -> str | None:
    found = unstorable_char(text)
    if found is None:
        return None
    if found == "\x00":
        return "contains a NUL character (\\u0000), which agentledger cannot store"
    return f"contains a lone surrogate (\\u{ord(found):04x}), which is not Unicode text"


def content_problem(
    data: dict[str, Any],
    *,
    max_nesting: int = MAX_NESTING,
    what: str = "RunAgent",
    why: str = " (metadata and usage_limits are flat objects)",
) -> str | None:
    """Nesting deeper than `max_nesting`, or a string (key or value) with a NUL or a
    surrogate. Iterative, and never deeper than the limit, so hostile input cannot make
    it recurse."""
    stack: list[tuple[str, Any, int]] = [("", data, 1)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > max_nesting:
            return (
                f"{where} is an object or array at nesting level {depth};"
                f" a {what} nests at most {max_nesting} levels deep{why}"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                problem = _text_problem(key)
                if problem:
                    owner = where or "the payload"
                    return f"a key of {owner} {problem}"
                stack.append((_child(where, key), item, depth + 1))
        elif isinstance(value, list):
            stack.extend((_child(where, i), item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return f"{where} {problem}"
    return None


def _metadata_problem(metadata: object) -> str | None:
    if not isinstance(metadata, dict):
        return None  # validation names the wrong type
    if len(metadata) > METADATA_MAX_KEYS:
        return f"metadata has {len(metadata)} keys; the limit is {METADATA_MAX_KEYS}"
    for key, value in metadata.items():
        if not key:
            return f"metadata has an empty key; keys have 1 to {METADATA_KEY_MAX_CHARS} characters"
        if len(key) > METADATA_KEY_MAX_CHARS:
            return (
                f"metadata key {_shown(key)} has {len(key)} characters;"
                f" the limit is {METADATA_KEY_MAX_CHARS}"
            )
        if isinstance(value, str) and len(value) > METADATA_VALUE_MAX_CHARS:
            return (
                f"metadata value of {_shown(key)} has {len(value)} characters;"
                f" the limit is {METADATA_VALUE_MAX_CHARS}"
            )
    return None


class _NotJson(ValueError):
    """A constant Python's parser accepts but JSON does not have."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


class _OutOfRange(ValueError):
    """A number literal beyond a 64-bit float (Python would read it as infinity)."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _OutOfRange(literal[:40] + ("..." if len(literal) > 40 else ""))
    return value


def load_json(
    body: bytes, key: str, *, what: str = "RunAgent", max_nesting: int = MAX_NESTING
) -> tuple[str, Any]:
    """The body as text and as parsed JSON, or a rejection saying why it is neither."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejection(
            ErrorKind.INVALID_JSON,
            f"payload is not valid JSON: it is not UTF-8 text"
            f" (byte 0x{body[e.start]:02x} at position {e.start})",
            key=key,
        ) from None
    kind, reason = ErrorKind.INVALID_JSON, "payload is not valid JSON"
    try:
        return text, json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, _NotJson) as e:
        reason = f"payload is not valid JSON: {e}"
    except _OutOfRange as e:
        kind = ErrorKind.INVALID_PAYLOAD
        reason = f"payload has a number out of range ({e}): numbers must fit a 64-bit float"
    except RecursionError:
        kind = ErrorKind.INVALID_PAYLOAD
        reason = (
            "payload nests arrays or objects hundreds of levels deep;"
            f" a {what} nests at most {max_nesting} levels deep"
        )
    except ValueError:
        # The one other ValueError of json.loads on text: int() refusing a literal of
        # more than sys.get_int_max_str_digits() (4,300) digits.
        kind = ErrorKind.INVALID_PAYLOAD
        reason = f"payload has an integer literal too long to read; no {what} field takes one"
    raise Rejection(kind, reason, key=key)


def _where(loc: tuple[int | str, ...]) -> str:
    where = ""
    for part in loc:
        where = _child(where, part)
    return where or "payload"


def describe_errors(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False)[:5]:
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{_where(item['loc'])}: {message}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def parse_model(raw: RawTask, model: type[M], what: str) -> M:
    """The `model` message in `raw` (a task other than `RunAgent`): UTF-8 JSON, an
    object, no NUL or lone surrogate anywhere, bounded nesting, strict fields; or a
    `Rejection` saying exactly what is wrong, keyed by its task id when it has one."""
    key = valid_id_or_none(raw.msg_id) or raw.fallback_key
    _, data = load_json(raw.body, key, what=what)
    if not isinstance(data, dict):
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload must be a JSON object ({what}), got {type(data).__name__}",
            key=key,
        )
    task_id = valid_id_or_none(data.get("task_id"))
    if task_id is not None:
        key = task_id
    problem = content_problem(data, what=what)
    if problem:
        raise Rejection(ErrorKind.INVALID_PAYLOAD, problem, key=key, task_id=task_id)
    try:
        return model.model_validate_json(json.dumps(data))
    except ValidationError as e:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"invalid {what}: {describe_errors(e)}",
            key=key,
            task_id=task_id,
        ) from None


def parse_task(
    raw: RawTask, *, catalog: Catalog, max_prompt_chars: int, clock: Clock = _utc_now
) -> RunAgent:
    """The task in the message, or `Rejection` saying exactly what is wrong.

    `clock` is asked for now when the task has a deadline: a deadline already past on
    the message's first delivery is a rejection (`deadline_exceeded`). A redelivery is
    not rejected for it: its run may exist, and the runner ends that run as failed (or
    returns its stored outcome) instead.
    """
    key = valid_id_or_none(raw.msg_id) or raw.fallback_key
    text, data = load_json(raw.body, key)
    if not isinstance(data, dict):
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload must be a JSON object (RunAgent), got {type(data).__name__}",
            key=key,
        )
    task_id = valid_id_or_none(data.get("task_id"))
    agent = valid_id_or_none(data.get("agent"))
    if task_id is not None:
        key = task_id
    problem = content_problem(data) or _metadata_problem(data.get("metadata"))
    if problem:
        raise Rejection(ErrorKind.INVALID_PAYLOAD, problem, key=key, task_id=task_id, agent=agent)
    try:
        # As JSON, so strictness means what the schema says (integers are JSON
        # integers, a deadline is a string).
        task = RunAgent.model_validate_json(text)
    except ValidationError as e:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"invalid RunAgent: {describe_errors(e)}",
            key=key,
            task_id=task_id,
            agent=agent,
        ) from None
    subject_agent = raw.subject.rsplit(".", 1)[-1]
    if subject_agent != task.agent:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"subject names agent {_shown(subject_agent)} but the payload names {task.agent!r}",
            key=key,
            task_id=task.task_id,
            agent=task.agent,
        )
    if len(task.prompt) > max_prompt_chars:
        raise Rejection(
            ErrorKind.PROMPT_TOO_LARGE,
            f"prompt has {len(task.prompt)} characters; the limit is {max_prompt_chars}"
            " (AGENTLEDGER_MAX_PROMPT_CHARS)",
            key=key,
            task_id=task.task_id,
            agent=task.agent,
        )
    try:
        catalog.get(task.agent)
    except UnknownAgent as e:
        raise Rejection(
            ErrorKind.UNKNOWN_AGENT, str(e), key=key, task_id=task.task_id, agent=task.agent
        ) from None
    if task.deadline is not None and raw.delivered == 1:
        now = clock()
        if task.deadline <= now:
            raise Rejection(
                ErrorKind.DEADLINE_EXCEEDED,
                f"deadline {task.deadline.isoformat()} had already passed when the task"
                f" arrived at {now.isoformat(timespec='seconds')}",
                key=key,
                task_id=task.task_id,
                agent=task.agent,
            )
    return task

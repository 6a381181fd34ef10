"""Dead letters: task messages the worker gave up on without being able to record why.

When a task cannot be run or rejected on its last delivery because nothing can be
recorded (the event store is down), the original message goes to the `<PREFIX>_DEAD`
stream on `<prefix>.dead.tasks`, with its headers, its delivery count and the reason, and
the task (when its id is known) is answered with a `failed` outcome of kind
`dead_lettered`. An operator sees them with `agentledger dead list|show` and requeues
one with `agentledger dead retry`: the original payload goes back to its subject under a
new `Nats-Msg-Id` (the duplicate window would drop the old one), and since the run id
derives from the task id in the payload, the retry lands on the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentledger.domain.subjects import dead_stream, dead_subject

__all__ = [
    "DeadLetter",
    "DeadLetterNotFound",
    "dead_letter",
    "get_dead_letter",
    "list_dead_letters",
    "retry_dead_letter",
]

_H = "Agentledger-Dead-"
_MAX_HEADER_CHARS = 1000


class DeadLetterNotFound(Exception):
    """No dead letter has that sequence number (never, or already retried)."""

    def __init__(self, sequence: int, stream: str) -> None:
        super().__init__(f"no dead letter {sequence} in {stream} (see `agentledger dead list`)")


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One message the worker gave up on."""

    sequence: int
    """Its number in the dead-letter stream (what `show` and `retry` take)."""
    subject: str
    """The subject it was published to."""
    body: bytes
    """The original payload, byte for byte."""
    headers: dict[str, str]
    """The original headers."""
    task_id: str | None
    kind: str
    """The error kind that made the worker give up (e.g. `transient_exhausted`)."""
    reason: str
    delivered: int
    """How many times JetStream had delivered it."""
    tasks_sequence: int | None
    """Its sequence number in the tasks stream."""
    at: str
    """When it was dead-lettered (UTC, ISO 8601)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "subject": self.subject,
            "task_id": self.task_id,
            "kind": self.kind,
            "reason": self.reason,
            "delivered": self.delivered,
            "tasks_sequence": self.tasks_sequence,
            "at": self.at,
            "headers": self.headers,
            "payload": self.body.decode("utf-8", errors="replace"),
        }


def _header_text(value: str) -> str:
    """A header value: one line, printable, bounded (it is untrusted text)."""
    cleaned = "".join(c if c.isprintable() else " " for c in value)
    return cleaned[:_MAX_HEADER_CHARS]


async def dead_letter(
    js: JetStreamContext,
    prefix: str,
    *,
    subject: str,
    body: bytes,
    headers: dict[str, str],
    task_id: str | None,
    kind: str,
    reason: str,
    delivered: int,
    tasks_sequence: int | None,
    now: datetime | None = None,
) -> int:
    """Keep the message in the dead-letter stream; returns its sequence there.

    Dead-lettering the same tasks-stream message twice keeps one copy (its
    `Nats-Msg-Id` is `dead:<tasks sequence>`).
    """
    at = (now or datetime.now(UTC)).isoformat()
    dead_headers = {
        f"{_H}Subject": _header_text(subject),
        f"{_H}Kind": _header_text(kind),
        f"{_H}Reason": _header_text(reason),
        f"{_H}Delivered": str(delivered),
        f"{_H}At": at,
        f"{_H}Headers": json.dumps({k: _header_text(v) for k, v in headers.items()}),
    }
    if task_id is not None:
        dead_headers[f"{_H}Task-Id"] = _header_text(task_id)
    if tasks_sequence is not None:
        dead_headers[f"{_H}Tasks-Sequence"] = str(tasks_sequence)
        dead_headers["Nats-Msg-Id"] = f"dead:{tasks_sequence}"
    ack = await js.publish(dead_subject(prefix), body, headers=dead_headers)
    return int(ack.seq)


def _parse(sequence: int, data: bytes | None, headers: dict[str, str] | None) -> DeadLetter:
    h = headers or {}
    try:
        original = json.loads(h.get(f"{_H}Headers", "{}"))
    except ValueError:
        original = {}
    tasks_sequence = h.get(f"{_H}Tasks-Sequence")
    return DeadLetter(
        sequence=sequence,
        subject=h.get(f"{_H}Subject", ""),
        body=data or b"",
        headers={str(k): str(v) for k, v in original.items()},
        task_id=h.get(f"{_H}Task-Id"),
        kind=h.get(f"{_H}Kind", ""),
        reason=h.get(f"{_H}Reason", ""),
        delivered=int(h.get(f"{_H}Delivered", "0") or 0),
        tasks_sequence=int(tasks_sequence) if tasks_sequence else None,
        at=h.get(f"{_H}At", ""),
    )


async def get_dead_letter(js: JetStreamContext, prefix: str, sequence: int) -> DeadLetter:
    """One dead letter by its sequence number."""
    try:
        msg = await js.get_msg(dead_stream(prefix), seq=sequence)
    except NotFoundError:
        raise DeadLetterNotFound(sequence, dead_stream(prefix)) from None
    return _parse(sequence, msg.data, msg.headers)


async def list_dead_letters(
    js: JetStreamContext, prefix: str, *, limit: int = 100, after: int = 0
) -> list[DeadLetter]:
    """Dead letters in order, at most `limit`, those with a sequence above `after`."""
    try:
        info = await js.stream_info(dead_stream(prefix))
    except NotFoundError:
        return []
    letters: list[DeadLetter] = []
    sequence = max(after + 1, info.state.first_seq)
    while len(letters) < limit and sequence <= info.state.last_seq:
        try:
            msg = await js.get_msg(
                dead_stream(prefix), seq=sequence, subject=dead_subject(prefix), next=True
            )
        except NotFoundError:
            break
        assert msg.seq is not None
        letters.append(_parse(msg.seq, msg.data, msg.headers))
        sequence = msg.seq + 1
    return letters


async def retry_dead_letter(js: JetStreamContext, prefix: str, sequence: int) -> DeadLetter:
    """Publish the dead letter's payload to its subject again, then remove it."""
    letter = await get_dead_letter(js, prefix, sequence)
    if not letter.subject.startswith(f"{prefix}.tasks."):
        raise DeadLetterNotFound(sequence, dead_stream(prefix))
    headers = dict(letter.headers)
    original_id = headers.get("Nats-Msg-Id") or letter.task_id or f"dead-{sequence}"
    headers["Nats-Msg-Id"] = f"{original_id}:retry:{sequence}"
    await js.publish(letter.subject, letter.body, headers=headers)
    await js.delete_msg(dead_stream(prefix), sequence)
    return letter

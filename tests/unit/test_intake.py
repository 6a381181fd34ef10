"""Intake: every kind of poison message gets its own clear rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentledger.domain.errors import ErrorKind
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.intake import RawTask, Rejection, parse_task

CATALOG = Catalog.load(Path(__file__).resolve().parents[2] / "catalog" / "example.toml")


def _raw(
    body: bytes | dict, subject_agent: str = "calculator", msg_id: str | None = "m-1"
) -> RawTask:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawTask(
        body=data, subject=f"ledger.tasks.run.{subject_agent}", msg_id=msg_id, fallback_key="S:7"
    )


def _reject(raw: RawTask) -> Rejection:
    with pytest.raises(Rejection) as caught:
        parse_task(raw, catalog=CATALOG, max_prompt_chars=100)
    return caught.value


def test_valid_task_parses() -> None:
    task = parse_task(
        _raw({"task_id": "t1", "agent": "calculator", "prompt": "add 1 and 2", "session_id": "s"}),
        catalog=CATALOG,
        max_prompt_chars=100,
    )
    assert (task.task_id, task.agent, task.session_id) == ("t1", "calculator", "s")


def test_invalid_json_is_keyed_by_message_id_or_stream_sequence() -> None:
    rejection = _reject(_raw(b"\xff{oops"))
    assert rejection.kind is ErrorKind.INVALID_JSON and rejection.key == "m-1"
    assert _reject(_raw(b"[", msg_id=None)).key == "S:7"


@pytest.mark.parametrize(
    ("payload", "kind", "message"),
    [
        ([1, 2], ErrorKind.INVALID_PAYLOAD, "must be a JSON object"),
        (
            {"task_id": "t1", "agent": "calculator"},
            ErrorKind.INVALID_PAYLOAD,
            "prompt: Field required",
        ),
        (
            {"task_id": "t1", "agent": "calculator", "prompt": "x", "extra": 1},
            ErrorKind.INVALID_PAYLOAD,
            "extra: Extra inputs",
        ),
        (
            {"task_id": "a.b", "agent": "calculator", "prompt": "x"},
            ErrorKind.INVALID_PAYLOAD,
            "task_id: String should match",
        ),
        (
            {"task_id": "t1", "agent": "calculator", "prompt": "x" * 101},
            ErrorKind.PROMPT_TOO_LARGE,
            "101 characters; the limit is 100",
        ),
        (
            {"task_id": "t1", "agent": "ghost", "prompt": "x"},
            ErrorKind.UNKNOWN_AGENT,
            "unknown agent 'ghost'; the catalog has: calculator, divider, greeter, notes",
        ),
    ],
)
def test_each_problem_is_named(payload: object, kind: ErrorKind, message: str) -> None:
    subject_agent = (
        payload.get("agent", "calculator") if isinstance(payload, dict) else "calculator"
    )
    rejection = _reject(_raw(payload, subject_agent=subject_agent))  # type: ignore[arg-type]
    assert rejection.kind is kind
    assert message in rejection.reason


def test_readable_task_id_becomes_the_key() -> None:
    rejection = _reject(_raw({"task_id": "t-42", "agent": "ghost", "prompt": "x"}, "ghost"))
    assert rejection.key == "t-42" and rejection.task_id == "t-42"

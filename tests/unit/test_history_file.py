"""The export format: a round trip keeps every event; bad files say what is wrong."""

from __future__ import annotations

import json

import pytest

from agentledger.domain.history_file import (
    HistoryDocument,
    HistoryFileError,
    HistorySubject,
    decode_aggregate,
    encode_event,
    exported_aggregate,
    parse_history,
)
from agentledger.domain.run import AgentRun


def _events() -> list[object]:
    run = AgentRun(
        task_id="t",
        agent="a",
        prompt="p",
        session_id=None,
        metadata={"k": "v"},
        usage_limits={"request_limit": 3},
        deadline=None,
        history_version=0,
    )
    run.send_model_request({"parts": [{"content": "p"}]})
    run.fail("tool_error", "boom", False, 1.5)
    return list(run.collect_events())


def _document(events: list[object] | None = None) -> HistoryDocument:
    return HistoryDocument(
        exported_at="2026-12-01T00:00:00+00:00",
        subject=HistorySubject(kind="run", id="t"),
        aggregates=[exported_aggregate(events or _events())],
    )


def test_round_trip_keeps_every_field_and_version() -> None:
    events = _events()
    document = parse_history(_document(events).to_json())
    decoded = decode_aggregate(document.aggregates[0])
    assert [encode_event(e) for e in decoded] == [encode_event(e) for e in events]
    assert [vars(e) for e in decoded] == [vars(e) for e in events]
    assert document.aggregates[0].events[0].class_version == 2
    run = decoded[0].mutate(None)
    for event in decoded[1:]:
        run = event.mutate(run)
    assert run.status == "failed" and run.error_message == "boom"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: "not json", "not JSON"),
        (lambda d: json.dumps({**d, "format": "other"}), "not an agentledger history"),
        (lambda d: json.dumps({**d, "format_version": 9}), "format_version 9"),
        (lambda d: json.dumps({**d, "subject": {"kind": "planet", "id": "x"}}), "subject.kind"),
    ],
)
def test_a_bad_file_says_what_is_wrong(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _document().model_dump(mode="json")
    with pytest.raises(HistoryFileError, match=message):
        parse_history(change(data), "f.json")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("topic", "agentledger.AgentRun.Teleported", "names no event class"),
        ("topic", "os:system", "not an event of"),
        ("version", 3, "versions 1..n"),
        ("topic", "agentledger.Conversation.TurnRecorded", "not an event of a AgentRun"),
        ("class_version", 7, "upgrade it"),
    ],
)
def test_an_event_this_version_cannot_read_is_refused(
    field: str, value: object, message: str
) -> None:
    data = _document().model_dump(mode="json")
    data["aggregates"][0]["events"][0][field] = value
    document = parse_history(json.dumps(data))
    with pytest.raises(HistoryFileError, match=message):
        decode_aggregate(document.aggregates[0])

"""Intake: every kind of poison message gets its own clear rejection."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentledger.domain.errors import ErrorKind
from agentledger.domain.tasks import ID_PATTERN, RunAgent
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
            "unknown agent 'ghost'; the catalog has: billing, calculator, calculator_v2, counter, divider",
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


# -- hostile input (issue 7, item 6): found by a client written from the contracts only --

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
GOOD = '"task_id": "t1", "agent": "calculator", "prompt": "add 1 and 2"'


def _text(json_text: str, *, delivered: int = 1, msg_id: str | None = "m-1") -> RawTask:
    """A message whose body is `json_text` as written (escapes such as \\ud800 kept)."""
    return RawTask(
        body=json_text.encode(),
        subject="ledger.tasks.run.calculator",
        msg_id=msg_id,
        fallback_key="S:7",
        delivered=delivered,
    )


def _parse(raw: RawTask) -> RunAgent:
    return parse_task(raw, catalog=CATALOG, max_prompt_chars=100, clock=lambda: NOW)


def _rejected(raw: RawTask) -> Rejection:
    with pytest.raises(Rejection) as caught:
        _parse(raw)
    rejection = caught.value
    # Whatever the input, what is recorded and answered can be stored and encoded, and
    # the reason is one bounded sentence.
    for text in (rejection.reason, rejection.key):
        text.encode("utf-8")
        assert "\x00" not in text and len(text) <= 512
    assert "\n" not in rejection.reason and rejection.reason[0].islower()
    assert rejection.task_id is None or _ID.match(rejection.task_id)
    assert rejection.agent is None or _ID.match(rejection.agent)
    return rejection


_ID = re.compile(ID_PATTERN)


@pytest.mark.parametrize(
    ("body", "kind", "needle"),
    [
        ("[" * 100_000, ErrorKind.INVALID_PAYLOAD, "nests arrays or objects hundreds of levels"),
        ('{"a":' * 100_000, ErrorKind.INVALID_PAYLOAD, "nests arrays or objects hundreds of"),
        (
            "{" + GOOD + ', "usage_limits": {"request_limit": ' + "9" * 4301 + "}}",
            ErrorKind.INVALID_PAYLOAD,
            "integer literal too long to read",
        ),
        ("1" * 5000, ErrorKind.INVALID_PAYLOAD, "integer literal too long to read"),
        ("{" + GOOD + ', "x": NaN}', ErrorKind.INVALID_JSON, "NaN is not a JSON value"),
        ("{" + GOOD + ', "x": -Infinity}', ErrorKind.INVALID_JSON, "-Infinity is not a JSON"),
        # Regression: 1e400 is valid JSON syntax that Python reads as infinity; it reached
        # a graph step as inf and was stored.
        ("{" + GOOD + ', "x": [1e400]}', ErrorKind.INVALID_PAYLOAD, "out of range (1e400)"),
        ("{" + GOOD + ', "x": -2e308}', ErrorKind.INVALID_PAYLOAD, "must fit a 64-bit float"),
    ],
    ids=[
        "deep-array",
        "deep-object",
        "huge-int-limit",
        "huge-int",
        "nan",
        "infinity",
        "huge-float",
        "huge-negative-float",
    ],
)
def test_poison_json_is_rejected_not_raised(body: str, kind: ErrorKind, needle: str) -> None:
    rejection = _rejected(_text(body))
    assert rejection.kind is kind and needle in rejection.reason


def test_json_that_is_not_utf8_is_rejected() -> None:
    utf16 = ("{" + GOOD + "}").encode("utf-16")  # json.loads(bytes) would accept it
    rejection = _rejected(RawTask(body=utf16, subject="x", msg_id=None, fallback_key="S:1"))
    assert rejection.kind is ErrorKind.INVALID_JSON
    assert "not UTF-8 text (byte 0xff at position 0)" in rejection.reason


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('"metadata": {"a": {"b": "c"}}', "metadata.a is an object or array at nesting level 3"),
        ('"metadata": {"a": []}', "metadata.a is an object or array at nesting level 3"),
        ('"usage_limits": {"request_limit": [1]}', "usage_limits.request_limit is an object"),
        ('"prompt2": [[1]]', "prompt2[0] is an object or array at nesting level 3"),
    ],
)
def test_nesting_deeper_than_the_contract_is_rejected(extra: str, needle: str) -> None:
    rejection = _rejected(_text("{" + GOOD + ", " + extra + "}"))
    assert rejection.kind is ErrorKind.INVALID_PAYLOAD
    assert needle in rejection.reason and "at most 2 levels deep" in rejection.reason
    assert rejection.task_id == "t1" and rejection.key == "t1"


@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800", "\\udfff", "ok\\ud83d", "\\ude00ok"])
@pytest.mark.parametrize(
    ("template", "where"),
    [
        ('"task_id": "t1", "agent": "calculator", "prompt": "a{bad}b"', "prompt "),
        (
            '"task_id": "t1", "agent": "calculator", "prompt": "p", "session_id": "{bad}"',
            "session_id",
        ),
        (
            '"task_id": "t1", "agent": "calculator", "prompt": "p", "metadata": {{"k": "{bad}"}}',
            "metadata.k ",
        ),
        (
            '"task_id": "t1", "agent": "calculator", "prompt": "p", "metadata": {{"{bad}": "v"}}',
            "a key of metadata ",
        ),
        ('"task_id": "t{bad}", "agent": "calculator", "prompt": "p"', "task_id "),
        ('"task_id": "t1", "agent": "calc{bad}", "prompt": "p"', "agent "),
        (
            '"task_id": "t1", "agent": "calculator", "prompt": "p", "{bad}": 1',
            "a key of the payload ",
        ),
        ('"task_id": "t1", "agent": "calculator", "prompt": ["{bad}"]', "prompt[0] "),
    ],
)
def test_nul_and_lone_surrogates_are_rejected_in_every_string(
    template: str, where: str, bad: str
) -> None:
    rejection = _rejected(_text("{" + template.format(bad=bad) + "}"))
    assert rejection.kind is ErrorKind.INVALID_PAYLOAD
    assert rejection.reason.startswith(where)
    if bad == "\\u0000":
        assert "contains a NUL character (\\u0000), which agentledger cannot store" in (
            rejection.reason
        )
    else:
        assert "contains a lone surrogate (\\ud" in rejection.reason
        assert "which is not Unicode text" in rejection.reason
    # Unreadable ids are not kept: the key falls back to the message id.
    if where == "task_id ":
        assert rejection.task_id is None and rejection.key == "m-1"
    else:
        assert rejection.task_id == "t1" and rejection.key == "t1"


def test_a_valid_surrogate_pair_and_other_control_characters_are_fine() -> None:
    task = _parse(_text("{" + GOOD[:-1] + ' \\ud83d\\ude00 \\u0001", "metadata": {"k": "\\t"}}'))
    assert task.prompt == "add 1 and 2 😀 \x01" and task.metadata == {"k": "\t"}


def test_values_of_a_rejected_message_are_not_trusted() -> None:
    body = json.dumps({"task_id": "a b" + "x" * 1000, "agent": "ev il", "prompt": 1})
    rejection = _rejected(_text(body, msg_id="not valid\x00" * 100))
    assert rejection.task_id is None and rejection.agent is None
    assert rejection.key == "S:7"  # neither the task id nor the message id is an id
    direct = Rejection(
        ErrorKind.INTERNAL_ERROR,
        "gave up: \x00\ud800" + "x" * 10_000,
        key="k\x00" * 1000,
        task_id="t\ud800",
        agent="a.b",
    )
    assert (direct.task_id, direct.agent) == (None, None)
    assert len(direct.reason) == 512 and direct.reason.endswith("…")
    assert "\x00" not in direct.reason + direct.key and len(direct.key) == 512
    assert str(direct) == direct.reason


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00 not json \xff\xfe" + b"\xed\xa0\x80" * 10_000,
        ("\u00e9" * 600).encode(),
        ('{"prompt": "' + "\\u0000" * 2000 + '"}').encode(),
        b"x" * 100_000,
    ],
)
def test_the_payload_excerpt_is_bounded_valid_text(body: bytes) -> None:
    excerpt = RawTask(body=body, subject="s", msg_id=None, fallback_key="S:1").excerpt()
    excerpt.encode("utf-8")
    assert "\x00" not in excerpt and 0 < len(excerpt) <= 512
    assert excerpt.endswith("…") == (len(body.decode("utf-8", "replace")) > 512)


def test_metadata_within_the_limits_is_accepted() -> None:
    metadata = {f"{i:03d}" + "k" * 125: "v" * 4096 for i in range(64)}
    task = _parse(
        _raw({"task_id": "t1", "agent": "calculator", "prompt": "p", "metadata": metadata})
    )
    assert task.metadata == metadata


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({f"k{i}": "v" for i in range(65)}, "metadata has 65 keys; the limit is 64"),
        ({"k" * 129: "v"}, "metadata key 'kkkk"),
        ({"k" * 1_000_000: "v"}, "has 1000000 characters; the limit is 128"),
        ({"k": "v" * 4097}, "metadata value of 'k' has 4097 characters; the limit is 4096"),
        ({"k": "v" * 1_000_000}, "has 1000000 characters; the limit is 4096"),
        ({"": "v"}, "metadata has an empty key; keys have 1 to 128 characters"),
        ({"k": 1}, "invalid RunAgent: metadata.k: Input should be a valid string"),
    ],
)
def test_metadata_over_its_limits_is_rejected(metadata: dict[str, object], needle: str) -> None:
    payload = {"task_id": "t1", "agent": "calculator", "prompt": "p", "metadata": metadata}
    rejection = _rejected(_text(json.dumps(payload)))
    assert rejection.kind is ErrorKind.INVALID_PAYLOAD and needle in rejection.reason


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('"usage_limits": {"request_limit": "5"}', "usage_limits.request_limit: Input should"),
        ('"usage_limits": {"request_limit": true}', "usage_limits.request_limit: Input should"),
        ('"usage_limits": {"tool_calls_limit": 2.0}', "usage_limits.tool_calls_limit: Input"),
        ('"usage_limits": {"total_tokens_limit": 2.5}', "usage_limits.total_tokens_limit"),
        ('"usage_limits": {"input_tokens_limit": "10"}', "usage_limits.input_tokens_limit"),
        ('"usage_limits": {"output_tokens_limit": true}', "usage_limits.output_tokens_limit"),
        ('"deadline": 1900000000', "deadline: deadline must be an RFC 3339 date-time string"),
        ('"deadline": 1900000000.5', "deadline: deadline must be an RFC 3339"),
        ('"deadline": "1900000000"', "deadline: deadline must be an RFC 3339"),
        ('"deadline": "2031-01-01T00:00:00"', "with a timezone"),
        ('"deadline": "2031-01-01"', "deadline: deadline must be an RFC 3339"),
        ('"deadline": true', "deadline: deadline must be an RFC 3339"),
        ('"deadline": "2031-02-30T00:00:00Z"', "deadline: Input should be a valid datetime"),
    ],
)
def test_what_the_schema_forbids_is_rejected(extra: str, needle: str) -> None:
    rejection = _rejected(_text("{" + GOOD + ", " + extra + "}"))
    assert rejection.kind is ErrorKind.INVALID_PAYLOAD
    assert rejection.reason.startswith("invalid RunAgent: ") and needle in rejection.reason


def test_what_the_schema_allows_is_accepted() -> None:
    limits = '"usage_limits": {"request_limit": 5, "tool_calls_limit": 0}'
    deadline = '"deadline": "2030-06-01T14:00:00.5+02:00"'
    task = _parse(_text("{" + GOOD + ", " + limits + ", " + deadline + "}"))
    assert task.usage_limits is not None and task.usage_limits.request_limit == 5
    assert task.deadline == datetime(2030, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "deadline", ["2030-06-01T12:00:00Z", "2030-06-01T11:59:59+00:00", "2020-01-01T00:00:00Z"]
)
def test_a_deadline_already_past_on_arrival_is_rejected(deadline: str) -> None:
    rejection = _rejected(_text("{" + GOOD + f', "deadline": "{deadline}"' + "}"))
    assert rejection.kind is ErrorKind.DEADLINE_EXCEEDED
    assert rejection.reason.startswith("deadline ")
    assert "had already passed when the task arrived at 2030-06-01T12:00:00+00:00" in (
        rejection.reason
    )
    assert (rejection.task_id, rejection.agent) == ("t1", "calculator")


def test_a_future_deadline_is_accepted_and_the_clock_is_only_asked_when_needed() -> None:
    body = "{" + GOOD + ', "deadline": "2030-06-01T12:00:01Z"}'
    assert _parse(_text(body)).deadline == datetime(2030, 6, 1, 12, 0, 1, tzinfo=UTC)

    def no_clock() -> datetime:
        raise AssertionError("the clock is not needed without a deadline")

    parse_task(_text("{" + GOOD + "}"), catalog=CATALOG, max_prompt_chars=100, clock=no_clock)


def test_a_redelivery_past_its_deadline_goes_to_the_runner() -> None:
    # Its run may exist: the runner fails it (or returns its stored outcome).
    body = "{" + GOOD + ', "deadline": "2020-01-01T00:00:00Z"}'
    assert _parse(_text(body, delivered=2)).deadline == datetime(2020, 1, 1, tzinfo=UTC)


def test_hostile_names_in_validation_errors_are_bounded_and_escaped() -> None:
    payload = {"task_id": "t1", "agent": "calculator", "prompt": "p", "k\t" * 100_000: 1}
    rejection = _rejected(_text(json.dumps(payload)))
    assert rejection.reason.startswith("invalid RunAgent: the field 'k\\tk\\t")
    assert "…: Extra inputs are not permitted" in rejection.reason
    mismatch = _rejected(
        RawTask(
            body=json.dumps({"task_id": "t1", "agent": "calculator", "prompt": "p"}).encode(),
            subject="ledger.tasks.run." + "é" * 3000,
            msg_id=None,
            fallback_key="S:1",
        )
    )
    assert "subject names agent 'éééé" in mismatch.reason and "…" in mismatch.reason

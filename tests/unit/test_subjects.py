"""Subject naming: the tasks stream's subjects and the check of hostile reply subjects."""

from __future__ import annotations

import pytest

from agentledger.domain.subjects import (
    REPLY_SUBJECT_MAX_CHARS,
    reply_subject_problem,
    task_stream_subjects,
    task_subject,
)


def test_the_tasks_stream_holds_exactly_the_subjects_workers_consume() -> None:
    assert task_stream_subjects("ledger") == [
        "ledger.tasks.run.*",
        "ledger.tasks.graph.*",
        "ledger.tasks.route",
        "ledger.tasks.workflow.cancel",
        "ledger.tasks.eval.*",
    ]
    assert task_subject("ledger", "greeter").startswith("ledger.tasks.run.")


@pytest.mark.parametrize(
    "subject",
    [
        "_INBOX.abc.def",
        "_INBOX.8f2c1e",
        "app.replies.42",
        "reply",
        "a-b_c:d=e/f~g!h",
        "LEDGER.results.other",  # subjects are case-sensitive: not ours
        "ledgers.results.x",  # another prefix that merely starts like ours
        "x" * REPLY_SUBJECT_MAX_CHARS,
        "a.$JS.API",  # `$` only matters as the first token
    ],
)
def test_client_subjects_are_accepted(subject: str) -> None:
    assert reply_subject_problem("ledger", subject) is None


@pytest.mark.parametrize(
    ("subject", "needle"),
    [
        ("", "is empty"),
        ("x" * (REPLY_SUBJECT_MAX_CHARS + 1), "has 257 characters; the limit is 256"),
        ("_INBOX." + "x" * 4090, "has 4097 characters"),  # over NATS's max control line
        ("_INBOX.a b", "whitespace (' ' at position 8)"),
        ("_INBOX.a\tb", "whitespace ('\\t'"),
        ("_INBOX.a\nb", "whitespace ('\\n'"),
        ("_INBOX.a\r\nPUB x 1", "whitespace"),  # protocol injection
        ("_INBOX.a\x00b", "'\\x00' at position 8; only printable ASCII"),
        ("_INBOX.\x7f", "'\\x7f'"),
        ("_INBOX.é", "'é'"),
        ("_INBOX.\ud800", "'\\ud800'"),
        ("_INBOX.\u00a0", "whitespace"),
        ("_INBOX.*", "wildcard"),
        ("_INBOX.>", "wildcard"),
        ("a.b*", "wildcard"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a..b", "empty token"),
        (".", "empty token"),
        ("$JS.API.STREAM.DELETE.X", "NATS system namespace '$JS'"),
        ("$js.api.stream.delete.x", "NATS system namespace"),
        ("$SYS.REQ.SERVER.PING", "NATS system namespace"),
        ("$Sys.x", "NATS system namespace"),
        ("$KV.bucket.key", "NATS system namespace"),
        ("$O.store.x", "NATS system namespace"),
        ("$JSC.x", "NATS system namespace"),
        ("$JS", "NATS system namespace"),
        ("ledger.results.other", "agentledger's own subjects"),
        ("ledger.tasks.run.x", "agentledger's own subjects"),
        ("ledger.tasks.run.greeter", "agentledger's own subjects"),
        ("ledger.events.AgentRun.RunCompleted", "agentledger's own subjects"),
        ("ledger.query.runs", "agentledger's own subjects"),
        ("ledger.dead.tasks", "agentledger's own subjects"),
        ("ledger", "agentledger's own subjects"),
    ],
)
def test_hostile_subjects_are_refused_with_a_reason(subject: str, needle: str) -> None:
    problem = reply_subject_problem("ledger", subject)
    assert problem is not None and needle in problem
    assert "\n" not in problem and len(problem) < 200


def test_the_prefix_is_the_configured_one() -> None:
    assert reply_subject_problem("acme", "ledger.results.x") is None
    assert reply_subject_problem("acme", "acme.results.x") is not None

"""A workflow's messages as a Mermaid sequence diagram: participants in the order they
appear, solid arrows for requests, dashed for responses, and one safe line per message
whatever its content holds."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentledger.domain.orchestration.diagram import (
    PREVIEW_CHARS,
    label_text,
    preview,
    sequence_diagram,
)
from agentledger.domain.orchestration.messages import BROADCAST, AgentMessage

ENTITY = re.compile(r"#\d+;")
ARROW_LINE = re.compile(r"^    (p\d+)(->>|-->>)(p\d+): (.*)$")


def message(n: int, sender: str, receiver: str, kind: str, content: Any) -> AgentMessage:
    return AgentMessage(
        message_id=f"m-{n}",
        correlation_id="wf-1",
        causation_id=None if n == 1 else f"m-{n - 1}",
        sender=sender,
        receiver=receiver,
        kind=kind,  # type: ignore[arg-type]
        content=content,
    )


def arrows(diagram: str) -> list[tuple[str, str, str, str]]:
    found = []
    for line in diagram.splitlines():
        if match := ARROW_LINE.match(line):
            found.append(match.groups())
    return found


def test_participants_in_first_appearance_order_and_arrows_by_kind() -> None:
    messages = [
        message(1, "relay", "writer", "request", "draft it"),
        message(2, "relay", "critic", "handoff", {"history": [1, 2]}),
        message(3, "writer", "relay", "response", "a draft"),
        message(4, "critic", BROADCAST, "broadcast", "done"),
    ]
    diagram = sequence_diagram(messages, title="wf-1 (relay)")
    lines = diagram.splitlines()
    assert lines[:2] == ["sequenceDiagram", "    title wf-1 (relay)"]
    assert lines[2:7] == [
        "    participant p1 as relay",
        "    participant p2 as writer",
        "    participant p3 as critic",
        "    participant p4 as all",
        "    p1->>p2: request: draft it",
    ]
    assert arrows(diagram) == [
        ("p1", "->>", "p2", "request: draft it"),
        ("p1", "->>", "p3", 'handoff: {"history":[1,2]}'),
        ("p2", "-->>", "p1", "response: a draft"),
        ("p3", "->>", "p4", "broadcast: done"),
    ]
    assert diagram.endswith("\n") and not diagram.endswith("\n\n")


def test_no_messages_and_no_title() -> None:
    assert sequence_diagram([]) == "sequenceDiagram\n"
    assert sequence_diagram([], title="  ") == "sequenceDiagram\n"


HOSTILE = [
    "a; b",
    "# heading",
    "#35; already an entity",
    "line one\nline two\r\nthree\u2028four\u0085five",
    "x --> y ->> z -->> w",
    "<br/> <script>alert(1)</script>",
    "%% not a comment\nparticipant evil as pwned\nnote over p1: injected",
    "tab\tand\x00nul and \x1b[31mansi",
    "é ü 🙂 " * 30,
    {"nested": {"list": ["a;b", "#c", "d\ne"]}},
    ["end", "alt", "loop"],
    "",
]


@pytest.mark.parametrize("content", HOSTILE)
def test_hostile_content_stays_one_safe_statement(content: Any) -> None:
    diagram = sequence_diagram(
        [message(1, "relay", "writer", "request", content)], title="t; #1\n<b>"
    )
    lines = diagram.splitlines()
    assert len(lines) == 5  # header, title, two participants, one arrow
    (sender, arrow, receiver, text), *_ = arrows(diagram)
    assert (sender, arrow, receiver) == ("p1", "->>", "p2")
    for line in (text, lines[1]):
        bare = ENTITY.sub("", line)
        assert not set(bare) & set(";#<>"), line
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in line), line
        assert "\u2028" not in line
    assert text.startswith("request:")
    assert len(ENTITY.sub("x", text)) <= len("request: ") + PREVIEW_CHARS


def test_the_preview_is_cut_and_escaping_is_after_the_cut() -> None:
    long = "word " * 40
    cut = preview(long)
    assert len(cut) == PREVIEW_CHARS and cut.endswith("…")
    assert preview("short") == "short"
    assert preview({"b": 1, "a": [1, 2]}) == '{"b":1,"a":[1,2]}'
    # An entity code is never cut in half: the cut happens on the raw text.
    text = label_text(preview(";" * 100))
    assert text == "#59;" * (PREVIEW_CHARS - 1) + "…"
    assert label_text("a -> b <c> #d; e") == "a -#62; b #60;c#62; #35;d#59; e"

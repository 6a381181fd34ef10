"""A workflow's messages drawn as a Mermaid sequence diagram (pure: text in, text out).

Participants appear in the order they first send or receive; a request, handoff or
broadcast is a solid arrow (`->>`), a response a dashed one (`-->>`). Each arrow is
labelled with the message's kind and a one-line preview of its content. Whatever the
content holds, a label is one Mermaid statement: line breaks and control characters
become spaces, and the characters Mermaid reads as syntax inside a label (`;` ends a
statement, `#` starts an entity code, `<` and `>` make arrows and HTML such as `<br>`)
are written as entity codes (`#59;`, `#35;`, `#60;`, `#62;`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentledger.domain.orchestration.messages import AgentMessage, MessageKind

__all__ = ["PREVIEW_CHARS", "TITLE_CHARS", "label_text", "preview", "sequence_diagram"]

PREVIEW_CHARS = 60
"""A label's preview of the content, at most this many characters (before escaping)."""

TITLE_CHARS = 120
"""A title, at most this many characters (before escaping)."""

_ESCAPES = {"#": "#35;", ";": "#59;", "<": "#60;", ">": "#62;"}
_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def preview(content: Any, limit: int = PREVIEW_CHARS) -> str:
    """`content` as one short line: text as it is, anything else as compact JSON; runs
    of whitespace and control characters are one space, and a longer text is cut to
    `limit` characters ending in `…`."""
    if isinstance(content, str):
        text = content
    else:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def label_text(text: str) -> str:
    """`text` safe inside a Mermaid label: one line, syntax characters as entity codes."""
    line = _SPACE.sub(" ", text).strip()
    return "".join(_ESCAPES.get(c, c) for c in line)


def sequence_diagram(messages: list[AgentMessage], title: str | None = None) -> str:
    """The messages, in the order given, as a Mermaid `sequenceDiagram`."""
    lines = ["sequenceDiagram"]
    if title and title.strip():
        lines.append(f"    title {label_text(preview(title, TITLE_CHARS))}")
    aliases: dict[str, str] = {}
    for message in messages:
        for name in (message.sender, message.receiver):
            if name not in aliases:
                aliases[name] = f"p{len(aliases) + 1}"
                lines.append(f"    participant {aliases[name]} as {label_text(name)}")
    for message in messages:
        arrow = "-->>" if message.kind == MessageKind.RESPONSE else "->>"
        text = label_text(f"{message.kind.value}: {preview(message.content)}")
        lines.append(f"    {aliases[message.sender]}{arrow}{aliases[message.receiver]}: {text}")
    return "\n".join(lines) + "\n"

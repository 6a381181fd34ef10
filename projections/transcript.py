"""A readable transcript from pydantic-ai's message JSON (`ModelMessagesTypeAdapter`).

Read from the JSON shape, not pydantic-ai's classes: projections stay pure, and old
stored messages keep rendering after pydantic-ai changes its classes. Thinking parts,
per-request `instructions` and bookkeeping parts (instruction and settings deltas,
compaction) are left out: they are not turns of the conversation. A part kind this module
does not know is left out too rather than failing the whole view.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["TranscriptEntry", "TranscriptRole", "transcript"]

TranscriptRole = Literal["user", "assistant", "tool-call", "tool-return", "system", "retry"]


class TranscriptEntry(BaseModel):
    """One readable line of a conversation."""

    model_config = ConfigDict(frozen=True)

    role: TranscriptRole
    content: str
    tool_name: str | None = None
    """The tool a `tool-call`, `tool-return` or tool `retry` is about."""


def transcript(messages: Iterable[Any]) -> list[TranscriptEntry]:
    """The transcript of pydantic-ai messages dumped with `mode="json"`."""
    entries: list[TranscriptEntry] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        for part in message.get("parts") or ():
            if isinstance(part, dict):
                entry = _entry(part)
                if entry is not None:
                    entries.append(entry)
    return entries


def _entry(part: dict[str, Any]) -> TranscriptEntry | None:
    kind = part.get("part_kind")
    content = part.get("content")
    tool_name = part.get("tool_name")
    if kind == "system-prompt":
        return TranscriptEntry(role="system", content=_text(content))
    if kind == "user-prompt":
        return TranscriptEntry(role="user", content=_user_content(content))
    if kind == "text":
        return TranscriptEntry(role="assistant", content=_text(content))
    if kind == "file":
        return TranscriptEntry(role="assistant", content=_media(part.get("content")))
    if kind in ("tool-call", "builtin-tool-call"):
        return TranscriptEntry(
            role="tool-call", content=_args(part.get("args")), tool_name=tool_name
        )
    if kind in ("tool-return", "builtin-tool-return"):
        # pydantic-ai 2.x records a retried tool call as a tool return with outcome
        # "retried": for a reader it is a retry, not a result.
        role: TranscriptRole = "retry" if part.get("outcome") == "retried" else "tool-return"
        return TranscriptEntry(role=role, content=_text(content), tool_name=tool_name)
    if kind in ("retry-prompt", "retry-feedback"):
        return TranscriptEntry(role="retry", content=_retry_content(content), tool_name=tool_name)
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _args(args: Any) -> str:
    """Tool-call arguments: a JSON string or an object, rendered as compact JSON."""
    if args is None:
        return "{}"
    if isinstance(args, str):
        return args
    return json.dumps(args, ensure_ascii=False)


def _user_content(content: Any) -> str:
    """A user prompt is a string, or a list of strings and media (images, documents...)."""
    if isinstance(content, list):
        return "\n".join(item if isinstance(item, str) else _media(item) for item in content)
    return _text(content)


def _media(item: Any) -> str:
    if isinstance(item, dict):
        kind = item.get("kind") or item.get("media_type") or "media"
        where = item.get("url") or item.get("identifier") or item.get("media_type")
        return f"[{kind}: {where}]" if where else f"[{kind}]"
    return _text(item)


def _retry_content(content: Any) -> str:
    """A retry prompt holds a message, or pydantic validation errors (loc + msg)."""
    if isinstance(content, list):
        lines = []
        for error in content:
            if isinstance(error, dict) and "msg" in error:
                loc = ".".join(str(p) for p in error.get("loc") or ())
                lines.append(f"{loc}: {error['msg']}" if loc else str(error["msg"]))
            else:
                lines.append(_text(error))
        return "\n".join(lines)
    return _text(content)

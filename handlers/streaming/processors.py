"""Stream processors: transformers and aggregators a run's chunks go through in the worker
before they are sent. A processor takes a chunk (a dict: `kind`, `text`, `data`,
`tokens`) and returns the chunks to pass on (none, it, changed, or more); `flush()`
returns what it still holds when the run ends. They run in the order listed.

Built in: `redact`, `sentences`, `tokens`, `json` (`agentledger.domain.streaming.spec`).
Your own: `module:attribute` naming a class (or any callable) that takes the agent's
`StreamSpec` and returns an object with `process` and `flush`.

Internal chunks of kind `args` (a tool call's argument text as the model streams it)
reach the processors too, for the `json` assembler; they are never sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic_core import from_json

from agentledger.domain.streaming.spec import StreamSpec
from agentledger.handlers.refs import load_ref

__all__ = [
    "JsonAssembler",
    "Redactor",
    "SentenceChunker",
    "StreamProcessor",
    "TokenCounter",
    "build_processors",
    "flush_all",
    "through",
]

Chunk = dict[str, Any]


class StreamProcessor(Protocol):
    def process(self, chunk: Chunk) -> list[Chunk]: ...

    def flush(self) -> list[Chunk]: ...


class Redactor:
    """Text matching any of the agent's `redact` patterns becomes `[redacted]` (within
    one chunk: put `sentences` first to catch a match split across chunks)."""

    def __init__(self, spec: StreamSpec) -> None:
        self._patterns = [re.compile(p) for p in spec.redact]

    def process(self, chunk: Chunk) -> list[Chunk]:
        if chunk["kind"] == "text" and chunk.get("text"):
            text = chunk["text"]
            for pattern in self._patterns:
                text = pattern.sub("[redacted]", text)
            chunk = {**chunk, "text": text}
        return [chunk]

    def flush(self) -> list[Chunk]:
        return []


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class SentenceChunker:
    """Text is held until a sentence ends (`.`, `!` or `?` and a space, or a line
    break) and sent a whole sentence per chunk; the rest goes out at the end of the
    text or before any other chunk."""

    def __init__(self, spec: StreamSpec) -> None:
        self._held = ""

    def process(self, chunk: Chunk) -> list[Chunk]:
        if chunk["kind"] != "text":
            return [*self.flush(), chunk]
        self._held += chunk.get("text") or ""
        pieces = _SENTENCE_END.split(self._held)
        self._held = pieces.pop()
        return [{"kind": "text", "text": piece} for piece in pieces if piece]

    def flush(self) -> list[Chunk]:
        held, self._held = self._held, ""
        return [{"kind": "text", "text": held}] if held else []


_TOKEN = re.compile(r"\w+|[^\w\s]")


class TokenCounter:
    """Each text chunk carries the running count of text tokens streamed so far (words
    and punctuation: an estimate, not the model's tokenizer)."""

    def __init__(self, spec: StreamSpec) -> None:
        self._tokens = 0

    def process(self, chunk: Chunk) -> list[Chunk]:
        if chunk["kind"] == "text":
            self._tokens += len(_TOKEN.findall(chunk.get("text") or ""))
            chunk = {**chunk, "tokens": self._tokens}
        return [chunk]

    def flush(self) -> list[Chunk]:
        return []


class JsonAssembler:
    """Structured output as it streams: the output tool's argument text is assembled and,
    each time it parses (as far as it goes) to something new, sent as a `json` chunk."""

    def __init__(self, spec: StreamSpec) -> None:
        self._text: dict[str, str] = {}
        self._last: dict[str, Any] = {}

    def process(self, chunk: Chunk) -> list[Chunk]:
        if chunk["kind"] != "args":
            return [chunk]
        data = chunk["data"]
        tool = str(data.get("tool_name") or "")
        if not tool.startswith("final_result"):
            return []
        key = str(data.get("index"))
        self._text[key] = self._text.get(key, "") + str(data.get("delta") or "")
        try:
            value = from_json(self._text[key], allow_partial="trailing-strings")
        except ValueError:
            return []
        if key in self._last and self._last[key] == value:
            return []
        self._last[key] = value
        return [{"kind": "json", "data": value}]

    def flush(self) -> list[Chunk]:
        return []


_BUILTIN: dict[str, type[Any]] = {
    "redact": Redactor,
    "sentences": SentenceChunker,
    "tokens": TokenCounter,
    "json": JsonAssembler,
}


def through(processors: Sequence[StreamProcessor], chunks: list[Chunk]) -> list[Chunk]:
    """`chunks` passed through `processors` in order."""
    for processor in processors:
        chunks = [out for chunk in chunks for out in processor.process(chunk)]
    return chunks


def flush_all(processors: Sequence[StreamProcessor]) -> list[Chunk]:
    """What each processor still holds at the end, passed through the ones after it."""
    return [c for i, p in enumerate(processors) for c in through(processors[i + 1 :], p.flush())]


def build_processors(spec: StreamSpec | None) -> list[StreamProcessor]:
    """The agent's processors, new for one run (they may hold state)."""
    if spec is None:
        return []
    built: list[StreamProcessor] = []
    for name in spec.processors:
        factory = _BUILTIN.get(name) or load_ref(name)
        built.append(factory(spec))
    return built

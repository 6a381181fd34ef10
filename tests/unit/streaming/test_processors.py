"""Stream processors (pure): redaction, sentence chunking, token counting, the JSON
assembler for structured output, a processor of your own, and the catalog's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.streaming.spec import StreamSpec
from agentledger.handlers.catalog import Catalog, CatalogError
from agentledger.handlers.streaming.processors import build_processors


def _run(spec: StreamSpec, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    processors = build_processors(spec)
    out = []
    for chunk in chunks:
        produced = [chunk]
        for p in processors:
            produced = [c for one in produced for c in p.process(one)]
        out += produced
    for i, p in enumerate(processors):
        held = p.flush()
        for later in processors[i + 1 :]:
            held = [c for one in held for c in later.process(one)]
        out += held
    return out


def _texts(*pieces: str) -> list[dict[str, Any]]:
    return [{"kind": "text", "text": p} for p in pieces]


def test_sentences_are_sent_whole_and_the_rest_at_the_end() -> None:
    out = _run(
        StreamSpec(processors=("sentences",)), _texts("Hel", "lo. How ", "are", " you? Fi", "ne")
    )
    assert [c["text"] for c in out] == ["Hello.", "How are you?", "Fine"]


def test_a_tool_call_flushes_the_sentence_held_before_it() -> None:
    tool = {"kind": "tool_call", "data": {"tool_name": "x"}}
    out = _run(StreamSpec(processors=("sentences",)), [*_texts("half a"), tool, *_texts(" line.")])
    assert out == [{"kind": "text", "text": "half a"}, tool, {"kind": "text", "text": " line."}]


def test_redaction_after_sentences_catches_a_match_split_across_chunks() -> None:
    spec = StreamSpec(processors=("sentences", "redact"), redact=(r"\d{4}-\d{4}",))
    out = _run(spec, _texts("card 12", "34-56", "78 ok. next"))
    assert [c["text"] for c in out] == ["card [redacted] ok.", "next"]
    alone = _run(
        StreamSpec(processors=("redact",), redact=(r"\d{4}-\d{4}",)), _texts("12", "34-5678")
    )
    assert [c["text"] for c in alone] == ["12", "34-5678"]  # per chunk: why sentences go first


def test_tokens_are_counted_as_they_stream() -> None:
    out = _run(StreamSpec(processors=("tokens",)), _texts("Hello, world", " and more!"))
    assert [c["tokens"] for c in out] == [3, 6]


def test_the_json_assembler_sends_the_structured_output_as_it_grows() -> None:
    pieces = ['{"city": "Os', 'lo", "days": [1, ', "2]}"]
    chunks = [
        {"kind": "args", "data": {"index": 0, "tool_name": "final_result", "delta": p}}
        for p in pieces
    ]
    other = {"kind": "args", "data": {"index": 1, "tool_name": "lookup", "delta": "{}"}}
    out = _run(StreamSpec(processors=("json",)), [*chunks, other])
    assert [c["data"] for c in out] == [
        {"city": "Os"},
        {"city": "Oslo", "days": [1]},
        {"city": "Oslo", "days": [1, 2]},
    ]


class Shout:
    """A processor of one's own (`module:attribute`)."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec

    def process(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk["kind"] == "text":
            return [{**chunk, "text": chunk["text"].upper()}]
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []


def test_a_processor_of_ones_own_by_reference() -> None:
    spec = StreamSpec(processors=(f"{__name__}:Shout",))
    assert _run(spec, _texts("quiet"))[0]["text"] == "QUIET"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('processors = ["shout"]', "one of redact, sentences, tokens, json or a module:attribute"),
        ('processors = ["no.such.module:X"]', "processor 'no.such.module:X'"),
        ('redact = ["("]', "redact pattern '('"),
        ('backpressure = "never"', "backpressure"),
    ],
)
def test_a_bad_stream_table_is_a_clear_catalog_error(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[agents.calc]\nref = "agentledger.catalog.example_agents:calculator"\n'
        f"[agents.calc.stream]\n{table}\n"
    )
    with pytest.raises(CatalogError, match="agent 'calc': stream") as caught:
        Catalog.load(path)
    assert message in str(caught.value)

"""The stream contract: what a task that asks for `stream: true` sends, in order, on
`<prefix>.stream.<task_id>` while its run goes on.

Every chunk is one JSON object (`StreamChunk`) with a sequence number `seq` (1, 2, ...
with no gap unless chunks were dropped, and then a `gap` chunk says how many). Kinds:

- `text`: a piece of the model's text (`text`), as the model streams it (after the
  agent's stream processors: `agentledger.handlers.streaming.processors`);
- `tool_call`: the model asked for a tool call (`data`: tool name, call id, arguments);
- `tool_result`: a tool call's outcome (`data`: tool name, call id, result or error);
- `json`: the structured output assembled so far (the `json` processor);
- `gap`: `dropped` chunks were dropped before this one (backpressure `drop_oldest`);
- `restart`: the worker streaming the run died and another resumed it from its last
  recorded step (`data.after`: the last sequence number sent before): text sent since
  the last `tool_result` (or the start) may come again;
- `end`: the last chunk: the run's status (`data`: the outcome's status, output or
  error) and how many chunks were dropped in all.

The stream is best effort and never holds the run up for longer than the stall
timeout: the run is recorded whole in the event store at its step boundaries whatever
happens to its stream, and is the same whether it was streamed or not.

**Flow control** (`stream_backpressure`):

- `none` (the default): chunks are sent as they come. A subscriber that falls behind
  still gets them all from the `<PREFIX>_STREAMS` JetStream stream, which keeps them a
  while (`AGENTLEDGER_STREAM_MAX_AGE_S`).
- `slow_down`: at most `stream_window` chunks are sent that the subscriber has not
  acknowledged; it acknowledges by publishing `{"ack": <seq>}` to
  `<prefix>.stream.<task_id>.ack`. When the window is full the run waits (its model
  stream is read more slowly), for at most the stall timeout; a subscriber silent for
  that long is taken as gone and the rest is dropped (counted in `end`).
- `drop_oldest`: the same window, but the run never waits: chunks wait in a buffer of
  `stream_buffer`, and when it is full the oldest waiting chunk is dropped. The next
  chunk sent is preceded by a `gap` chunk with the count.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Backpressure", "ChunkKind", "StreamAck", "StreamChunk"]

Backpressure = Literal["none", "slow_down", "drop_oldest"]
ChunkKind = Literal["text", "tool_call", "tool_result", "json", "gap", "restart", "end"]


class StreamChunk(BaseModel):
    """One message on `<prefix>.stream.<task_id>`."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    seq: int
    kind: ChunkKind
    text: str | None = None
    """For `text`: the piece of text."""
    data: Any = None
    """For `tool_call`, `tool_result`, `json` and `end`: what happened."""
    tokens: int | None = None
    """Text tokens streamed so far (the `tokens` processor; an estimate)."""
    dropped: int = 0
    """For `gap`: chunks dropped just before; for `end`: chunks dropped in all."""


class StreamAck(BaseModel):
    """Flow control from a subscriber, on `<prefix>.stream.<task_id>.ack`: it has
    processed every chunk up to `ack` (and may widen the window)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ack: int
    window: int | None = None

"""`StreamPublisher`: one streamed run's chunks, out on `<prefix>.stream.<task_id>` in
order, with the task's flow control (`agentledger.domain.streaming.chunks`).

The run calls `emit()` for each piece (text, a tool call, a tool result, an internal
argument delta) and `close()` with its outcome. Chunks go through the agent's stream
processors, get their sequence number when sent, and are published with core NATS (the
`<PREFIX>_STREAMS` stream keeps them a while). Nothing here ever fails the run: a
publish error is logged once and the rest of the stream is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from pydantic_core import to_json

from agentledger.domain.streaming.chunks import StreamAck
from agentledger.domain.subjects import stream_ack_subject, stream_subject, streams_stream
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.streaming.processors import StreamProcessor, flush_all, through

__all__ = ["StreamPublisher"]

log = structlog.get_logger("agentledger.streaming")

Chunk = dict[str, Any]


class StreamPublisher:
    def __init__(
        self,
        nc: Client,
        prefix: str,
        task: RunAgent,
        *,
        processors: list[StreamProcessor] | None = None,
        stall_s: float = 5.0,
        backpressure: str | None = None,
        window: int | None = None,
        buffer: int | None = None,
    ) -> None:
        self._nc = nc
        self.task_id = task.task_id
        self._subject = stream_subject(prefix, task.task_id)
        self._stream = streams_stream(prefix)
        self._ack_subject = stream_ack_subject(prefix, task.task_id)
        self.policy = backpressure or task.stream_backpressure
        self.window = window or task.stream_window
        self.buffer = buffer or task.stream_buffer
        self._processors = processors or []
        self._stall_s = stall_s
        self.sent = 0
        """The last sequence number sent."""
        self.acked = 0
        """The highest sequence number a subscriber acknowledged."""
        self.dropped = 0
        """Chunks dropped in all."""
        self._dropped_unsaid = 0
        self._queue: deque[Chunk] = deque()
        self._changed = asyncio.Event()
        """Set on every ack, enqueue and send: whoever waits looks again."""
        self._gone = False
        """The subscriber is taken as gone (stalled past the timeout) or NATS failed."""
        self._sender: asyncio.Task[None] | None = None
        self._acks: Subscription | None = None
        self._ended = False
        """The stream had ended before this attempt (nothing more is sent)."""

    async def start(self) -> StreamPublisher:
        """Subscribe to acks (with flow control) and, when an earlier attempt at this run
        streamed already (its worker died), go on from its last sequence number with a
        `restart` chunk: numbers never repeat, and the reader knows the step it was in
        is streamed again."""
        last, kind = await self._last_sent()
        if kind == "end":  # a redelivery of a task whose stream has ended: say nothing
            self._ended = self._gone = True
        elif last:
            self.sent = self.acked = last
            await self._send({"kind": "restart", "data": {"after": last}})
        if self.policy != "none":
            self._acks = await self._nc.subscribe(self._ack_subject, cb=self._on_ack)
            self._sender = asyncio.create_task(self._send_loop(), name=f"stream {self.task_id}")
        return self

    async def _last_sent(self) -> tuple[int, str | None]:
        """The last sequence number an earlier attempt sent and its kind ((0, None): none,
        or unknown)."""
        try:
            msg = await self._nc.jetstream().get_last_msg(self._stream, self._subject)
            last = json.loads(msg.data or b"{}")
            return max(0, int(last.get("seq", 0))), str(last.get("kind"))
        except NotFoundError:
            return 0, None
        except Exception as e:  # no streams stream (yet), a timeout: start at 1
            log.warning(
                "could not read the stream's last chunk", task_id=self.task_id, error=str(e)
            )
            return 0, None

    async def _on_ack(self, msg: Msg) -> None:
        try:
            ack = StreamAck.model_validate_json(msg.data)
        except ValidationError:
            return  # hostile or broken flow control: ignored
        self.acked = max(self.acked, min(ack.ack, self.sent))
        if ack.window is not None and 1 <= ack.window <= 10_000:
            self.window = ack.window
        self._changed.set()

    # -- the run's side -------------------------------------------------------

    async def emit(self, chunk: Chunk) -> None:
        """One piece of the run, through the processors and out (or queued)."""
        if self._gone:
            self.dropped += 1
            return
        try:
            processed = self._process(chunk)
        except Exception as e:  # a processor's bug ends the stream, never the run
            self._give_up(f"stream processor raised {type(e).__name__}: {e}")
            self.dropped += 1
            return
        for out in processed:
            await self._offer(out)

    def _process(self, chunk: Chunk) -> list[Chunk]:
        return _sendable(through(self._processors, [chunk]))

    def _flush_processors(self) -> list[Chunk]:
        return _sendable(flush_all(self._processors))

    async def _offer(self, chunk: Chunk) -> None:
        if self._gone:
            self.dropped += 1
            return
        if self.policy == "none":
            await self._send(chunk)
            return
        if self.policy == "slow_down":
            waited_since = time.monotonic()
            while len(self._queue) >= self.buffer and not self._gone:
                self._changed.clear()
                left = self._stall_s - (time.monotonic() - waited_since)
                if left <= 0 or not await _wait(self._changed, left):
                    self._give_up("no ack within the stall timeout")
                    self.dropped += 1
                    return
        elif len(self._queue) >= self.buffer:  # drop_oldest: never wait
            self._queue.popleft()
            self.dropped += 1
            self._dropped_unsaid += 1
        self._queue.append(chunk)
        self._changed.set()

    async def close(self, outcome: RunOutcome | None) -> None:
        """Send what the processors hold and the `end` chunk (with `outcome`), waiting for
        the subscriber while it makes progress (at most the stall timeout without any);
        then stop."""
        try:
            held = [] if self._gone else self._flush_processors()
        except Exception as e:
            self._give_up(f"stream processor raised {type(e).__name__}: {e}")
            held = []
        for chunk in held:
            await self._offer(chunk)
        if outcome is not None and not self._ended:
            end = {
                "kind": "end",
                "data": {
                    "status": outcome.status,
                    "output": outcome.output,
                    "error": None if outcome.error is None else outcome.error.model_dump(),
                },
            }
            if self.policy == "none" or self._gone:
                await self._flush_queue_now()
                await self._send(end, final=True)
            else:
                self._queue.append(end)
                self._changed.set()
                # Wait while the subscriber makes progress (each ack or send resets the
                # stall timeout): a slow reader still gets every chunk.
                while self._queue and not self._gone:
                    self._changed.clear()
                    if not await _wait(self._changed, self._stall_s):
                        break
                if self._queue:  # the subscriber stalled: say how it ended
                    self._queue.pop()
                    self.dropped += len(self._queue)
                    self._queue.clear()
                    await self._send(end, final=True)
        await self._stop()

    async def _flush_queue_now(self) -> None:
        if self._gone:
            self.dropped += len(self._queue)
            self._queue.clear()
        while self._queue:
            await self._send(self._queue.popleft())

    async def _stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(BaseException):
                await self._sender
        if self._acks is not None:
            with contextlib.suppress(Exception):
                await self._acks.unsubscribe()
        if self.dropped:
            log.info("stream ended with chunks dropped", task_id=self.task_id, dropped=self.dropped)

    # -- the sender -----------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            while not self._queue or (self.sent - self.acked >= self.window and not self._gone):
                self._changed.clear()
                if self.policy == "slow_down" and self._queue and not self._gone:
                    if not await _wait(self._changed, self._stall_s):
                        self._give_up("no ack within the stall timeout")
                    continue
                await self._changed.wait()
            if self._gone:
                self.dropped += len(self._queue)
                self._queue.clear()
                self._changed.set()
                continue
            await self._send(self._queue.popleft())
            self._changed.set()

    async def _send(self, chunk: Chunk, *, final: bool = False) -> None:
        if self._gone and not final:
            self.dropped += 1
            return
        try:
            if self._dropped_unsaid and chunk["kind"] != "end":
                self.sent += 1
                gap = {"task_id": self.task_id, "seq": self.sent, "kind": "gap"}
                await self._nc.publish(
                    self._subject, to_json(gap | {"dropped": self._dropped_unsaid})
                )
                self._dropped_unsaid = 0
            self.sent += 1
            body = {"task_id": self.task_id, "seq": self.sent, **chunk}
            if chunk["kind"] == "end":
                body["dropped"] = self.dropped
            await self._nc.publish(self._subject, to_json(body, fallback=str))
        except Exception as e:  # NATS down or closing: the run goes on without its stream
            self._give_up(f"publish failed: {type(e).__name__}: {e}")

    def _give_up(self, why: str) -> None:
        if not self._gone:
            log.warning("stream subscriber gone; dropping the rest", task_id=self.task_id, why=why)
        self._gone = True
        self._changed.set()


def _sendable(chunks: list[Chunk]) -> list[Chunk]:
    return [c for c in chunks if c["kind"] != "args"]  # internal: never sent


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False

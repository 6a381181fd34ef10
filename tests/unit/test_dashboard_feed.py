"""The live feed's pieces that need no server: one event per change on one `data:` line
whatever the text holds, and a browser that falls behind is dropped, not waited for."""

from __future__ import annotations

import asyncio
import json

from agentledger.handlers.dashboard import feed
from agentledger.handlers.dashboard.feed import StreamClient, sse


def test_an_event_is_one_data_line_whatever_the_text() -> None:
    message = sse("run", {"prompt": "line one\nline two\r\n\ndata: forged\n\nevent: x"})
    kind, data, end, rest = message.decode().split("\n", 3)
    assert kind == "event: run" and data.startswith("data: ") and end == "" and rest == ""
    assert json.loads(data[6:])["prompt"].startswith("line one\nline two")


def test_a_browser_that_falls_behind_is_dropped() -> None:
    async def go() -> None:
        client = StreamClient()
        for i in range(feed.MAX_PENDING):
            client.offer(b"%d" % i)
        assert not client.dropped
        client.offer(b"one too many")
        assert client.dropped and client.queue.qsize() == feed.MAX_PENDING
        client.offer(b"ignored")
        items = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
        assert items[-1] is None and b"ignored" not in items

    asyncio.run(go())

"""The feed's pull loop against a pull subscription that behaves as nats-py's does: a
batch fetch that has its first message keeps waiting for the rest of the batch until
its deadline. The feed must hand the first message over at once.

(Before: the feed only fetched batches; a task landing in a batch fetch waited for that
fetch's deadline, FETCH_WAIT_S: a workflow whose two 1 s children ended together took
2 s, its second child's outcome held back a second. Seen 5 times in 12 workflows.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentledger.handlers import task_consumer
from agentledger.handlers.task_consumer import Delivery, TaskConsumer
from agentledger.infra.settings import Settings

pytestmark = pytest.mark.asyncio


class Msg:
    def __init__(self, data: bytes) -> None:
        self.data, self.reply, self.subject, self.headers = data, None, "ledger.tasks.run.x", None


class BatchHoldingSubscription:
    """`fetch(batch=1)` returns the next message when it comes; a larger batch returns
    only once it is full or its timeout has passed (nats-py's `_fetch_n` after the
    first message)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got: list[Msg] = []
        if batch == 1:
            return [await asyncio.wait_for(self.queue.get(), timeout)]
        while len(got) < batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                got.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        if not got:
            raise TimeoutError
        return got


async def test_the_first_message_of_a_pull_is_handed_over_without_waiting_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(task_consumer, "FETCH_WAIT_S", 30.0)
    arrived: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(body: bytes, delivery: Delivery) -> None:
        arrived.put_nowait(body)

    consumer = TaskConsumer(
        settings=Settings(),
        name="t",
        subject="ledger.tasks.run.*",
        stream="LEDGER_TASKS",
        durable="d",
        config=None,  # type: ignore[arg-type]  (not used by the pull loop)
        capacity=8,
        handle=handle,
        heartbeat_s=10,
    )
    consumer._loop = asyncio.get_running_loop()
    consumer._freed = asyncio.Event()
    consumer._fetching.set()
    subscription: Any = BatchHoldingSubscription()
    pulling = asyncio.create_task(consumer._pull(subscription))
    try:
        for i in range(3):
            subscription.queue.put_nowait(Msg(f"task {i}".encode()))
            assert await asyncio.wait_for(arrived.get(), 5) == f"task {i}".encode()
            await asyncio.sleep(0.1)
    finally:
        consumer._fetching.clear()
        pulling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pulling

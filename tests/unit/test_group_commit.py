"""Saves through `AsyncEventStore` go to one writer thread, which commits the saves
queued meanwhile in one transaction. Each save still has its own outcome."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.run import AgentRun
from agentledger.infra.event_store import (
    AsyncEventStore,
    ConcurrencyConflict,
    EventStore,
    StoreUnavailable,
    UnsavedAggregate,
)
from agentledger.infra.settings import Settings


def new_run(task_id: str) -> AgentRun:
    return AgentRun(
        task_id=task_id, agent="a", prompt="p", session_id=None, metadata={},
        usage_limits={}, deadline=None, history_version=0,
    )  # fmt: skip


class Gated(EventStore):
    """SQLite; the first save waits for `gate`, so the saves behind it queue up. Every
    call to `save` is counted with the number of events it got."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.bad: set[str] = set()
        self.down = 0

    def save(self, *objs: Any) -> int | None:
        if not self.calls:
            self.entered.set()
            self.gate.wait(5)
        self.calls.append(len(objs))
        if self.down:
            self.down -= 1
            raise StoreUnavailable("event store unavailable: down")
        if any(getattr(o, "task_id", None) in self.bad for o in objs):
            raise ValueError("cannot encode this event")
        return super().save(*objs)


@pytest.fixture
def gated(tmp_path: Path) -> Gated:
    return Gated(Settings(data_dir=tmp_path, postgres_dsn=None))


async def _queue_behind_first(store: AsyncEventStore, gated: Gated, saves: list[Any]) -> list[Any]:
    """Start the saves; the first blocks in the writer until the rest are queued."""
    tasks = [asyncio.create_task(saves[0])]
    for _ in range(200):
        await asyncio.sleep(0.005)
        if gated.entered.is_set():
            break
    tasks += [asyncio.create_task(save) for save in saves[1:]]
    for _ in range(200):
        await asyncio.sleep(0.005)
        if store._writer._queue.qsize() >= len(saves) - 1:
            break
    gated.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_saves_queued_meanwhile_are_committed_in_one_transaction(gated: Gated) -> None:
    store = AsyncEventStore(gated, threads=2)
    runs = [new_run(f"r{i}") for i in range(6)]
    try:
        results = await _queue_behind_first(store, gated, [store.save(r) for r in runs])
    finally:
        store._writer.close()
    assert not any(isinstance(r, BaseException) for r in results), results
    assert gated.calls == [1, 5]  # the first alone, the five behind it together
    for run in runs:
        assert [e.originator_version for e in gated.events(run.id)] == [1]
    # Each is answered with a notification id at or after its own event's.
    assert all(isinstance(r, int) for r in results)


async def test_a_conflict_in_a_batch_fails_only_that_save(gated: Gated) -> None:
    store = AsyncEventStore(gated, threads=2)
    first, twin, other = new_run("blocker"), new_run("same"), new_run("other")
    gated.gate.set()
    await store.save(new_run("same"))  # "another worker" created run `same` first
    gated.gate.clear()
    gated.entered.clear()
    gated.calls.clear()
    try:
        results = await _queue_behind_first(
            store, gated, [store.save(first), store.save(twin), store.save(other)]
        )
    finally:
        store._writer.close()
    assert results[0] is None or isinstance(results[0], int)
    assert isinstance(results[1], ConcurrencyConflict)
    assert isinstance(results[2], int)
    # The batch [twin, other] failed as a whole, then each went alone.
    assert gated.calls == [1, 2, 1, 1]
    assert [e.originator_version for e in gated.events(other.id)] == [1]
    with pytest.raises(UnsavedAggregate):  # as after any failed save
        await AsyncEventStore(gated, threads=0).save(twin)


async def test_a_save_that_raises_fails_only_itself(gated: Gated) -> None:
    store = AsyncEventStore(gated, threads=2)
    gated.bad.add("poison")
    runs = [new_run("blocker"), new_run("poison"), new_run("fine")]
    try:
        results = await _queue_behind_first(store, gated, [store.save(r) for r in runs])
    finally:
        store._writer.close()
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], int)
    assert gated.events(runs[1].id) == []
    assert len(gated.events(runs[2].id)) == 1


async def test_an_outage_fails_the_batch_and_each_save_retries_on_its_own(gated: Gated) -> None:
    store = AsyncEventStore(gated, threads=2, retry_s=5)
    gated.down = 2  # the first save, then the batch behind it
    runs = [new_run(f"o{i}") for i in range(4)]
    try:
        results = await _queue_behind_first(store, gated, [store.save(r) for r in runs])
    finally:
        store._writer.close()
    assert not any(isinstance(r, BaseException) for r in results), results
    for run in runs:
        assert [e.originator_version for e in gated.events(run.id)] == [1]


async def test_the_writer_thread_ends_when_idle_and_starts_again(
    gated: Gated, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentledger.infra import event_store

    monkeypatch.setattr(event_store, "WRITER_IDLE_S", 0.05)
    gated.gate.set()
    store = AsyncEventStore(gated, threads=1)
    try:
        await store.save(new_run("before"))
        first = store._writer._thread
        assert first is not None
        first.join(2)
        assert not first.is_alive() and store._writer._thread is None
        await store.save(new_run("after"))
        assert store._writer._thread is not None
    finally:
        store._writer.close()
    assert store._writer._thread is None
    assert len(gated.events(new_run("after").id)) == 1

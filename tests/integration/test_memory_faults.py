"""The memory projector under embedder faults: an embeddings outage is waited out (no
event is skipped for it), and a text the embedder refuses for good is one poison event,
skipped by the memory view only, while the other runs are folded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from conftest import MakeSettings

from agentledger.domain.memory.embedding import EmbeddingError, Vectors
from agentledger.handlers.projector import Projector
from agentledger.infra.embedders import load_embedder
from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import view_store_for
from agentledger.projections.memory import MemoryProjection
from support.harness import wait_for
from support.memory import TURNS, record_turns


class Faulty:
    """A real embedder that fails as told."""

    def __init__(self, outages: int = 0, refuse: str | None = None) -> None:
        self.inner = load_embedder("wordllama")
        self.name, self.dim = self.inner.name, self.inner.dim
        self.outages = outages
        self.refuse = refuse

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.outages:
            self.outages -= 1
            raise EmbeddingError("endpoint unreachable (test)", transient=True)
        if self.refuse is not None and self.refuse in texts:
            raise EmbeddingError("input rejected (test)")
        return self.inner.embed(texts)


def fold_forever(store: EventStore, views: Any, embedder: Faulty) -> tuple[Projector, int]:
    projector = Projector(store, views, [MemoryProjection(embedder, "sqlite")], batch=50)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=projector.run_forever, args=(stop,), daemon=True)
    thread.start()
    head = store.max_notification_id()
    try:
        wait_for(lambda: views.tracking("memory") >= head, 30, "the memory view to catch up")
    finally:
        stop.set()
        thread.join(10)
    with views.read() as cursor:
        cursor.execute("SELECT COUNT(*) FROM al_memory")
        row = cursor.fetchone()
    return projector, int(row[0])


@pytest.mark.slow
def test_an_embeddings_outage_is_waited_out(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite")
    store, views = EventStore(settings), view_store_for(settings)
    try:
        record_turns(store, TURNS)
        projector, rows = fold_forever(store, views, Faulty(outages=5))
        assert rows == 2 * len(TURNS)
        assert projector.poisoned == {}
        assert projector.poison_log.entries() == []
    finally:
        views.close()
        store.close()


@pytest.mark.slow
def test_a_text_the_embedder_refuses_is_one_poison_event(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite")
    store, views = EventStore(settings), view_store_for(settings)
    try:
        record_turns(store, TURNS)
        projector, rows = fold_forever(store, views, Faulty(refuse=TURNS[2][2]))
        # The refused prompt's RunRequested is skipped, and with it that run's output (the
        # view keeps an output with its run's agent and session, which that event holds);
        # every other run folds.
        assert rows == 2 * (len(TURNS) - 1)
        assert projector.poisoned == {"memory": 1}
        [entry] = projector.poison_log.entries()
        assert entry.consumer == "memory" and "input rejected" in entry.reason
    finally:
        views.close()
        store.close()

"""Embedders: the offline ones load from their wheels and agree with each other's
geometry; an OpenAI-compatible endpoint (a local stub) is used by configuration for the
memory view, and its failures are errors that say what happened."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MakeSettings

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.handlers.memory import MemoryReader
from agentledger.infra.embedders import load_embedder
from agentledger.infra.embedders.openai_compatible import OpenAICompatibleEmbedder
from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import view_store_for
from support.memory import TURNS, fold, record_turns
from support.openai_stub import EMBEDDING_DIMS, openai_stub


@pytest.mark.parametrize(
    ("spec", "dim"), [("minilm", 384), ("wordllama", 256), ("wordllama:64", 64)]
)
def test_offline_embedders_give_unit_vectors_that_rank_paraphrases_first(
    spec: str, dim: int
) -> None:
    embedder = load_embedder(spec)
    assert embedder.dim == dim and spec.split(":")[0] in embedder.name
    texts = [
        "I want my money back for this order",
        "please refund my purchase",
        "the weather is sunny",
        "",
    ]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3].any()  # an empty text is a zero row, not NaN
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.1
    # Hostile text never reaches the tokenizer as it is.
    assert embedder.embed(["a\x00b \ud800 c" * 3000]).shape == (1, dim)
    assert load_embedder(spec) is embedder  # loaded once per process


def test_unknown_specs_say_what_is_known() -> None:
    with pytest.raises(EmbeddingError, match="unknown embedder 'bert'; one of: wordllama"):
        load_embedder("bert")
    with pytest.raises(EmbeddingError, match="AGENTLEDGER_EMBEDDINGS_URL"):
        load_embedder("openai:text-embedding-3-small")
    with pytest.raises(EmbeddingError, match="64, 128 or 256"):
        load_embedder("wordllama:100")


def test_an_openai_compatible_endpoint_embeds_for_the_memory_view(
    make_settings: MakeSettings,
) -> None:
    with openai_stub() as (base_url, state):
        settings = make_settings(
            "sqlite", embedder="openai:stub-embed", embeddings_url=base_url, embeddings_api_key="k"
        )
        store, views = EventStore(settings), view_store_for(settings)
        try:
            record_turns(store, TURNS)
            fold(settings, store, views)
            memory = MemoryReader.for_settings(settings, views)
            assert memory.embedder.dim == EMBEDDING_DIMS
            hits = memory.search_similar("production deploy Friday", 1, role="user")
            assert hits[0].text == TURNS[0][2]
            assert memory.stats()["embedder"] == f"openai:stub-embed@{base_url}"
        finally:
            views.close()
            store.close()
        assert all(r["model"] == "stub-embed" for r in state.requests)
        assert any(isinstance(r["input"], list) and len(r["input"]) > 1 for r in state.requests)


def test_endpoint_failures_are_clear_and_say_whether_they_may_pass() -> None:
    with openai_stub(fail_first=1) as (base_url, _):
        with pytest.raises(EmbeddingError, match="answered 503") as failed:
            OpenAICompatibleEmbedder(base_url, "m")
        assert failed.value.transient
        embedder = OpenAICompatibleEmbedder(base_url, "m")  # the next probe succeeds
        assert embedder.embed(["x"]).shape == (1, EMBEDDING_DIMS)
    with pytest.raises(EmbeddingError, match="unreachable") as down:
        embedder.embed(["the server is gone"])
    assert down.value.transient
    with pytest.raises(EmbeddingError, match="http"):
        OpenAICompatibleEmbedder("file:///etc/passwd", "m")


def test_the_memory_view_can_have_its_own_embedder(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite", embedder="minilm", memory_embedder="wordllama")
    store, views = EventStore(settings), view_store_for(settings)
    try:
        record_turns(store, TURNS)
        fold(settings, store, views)
        memory = MemoryReader.for_settings(settings, views)
        assert memory.stats()["embedder"] == "wordllama:l2_supercat:256"
        assert memory.search_similar("deploy production", 1, role="user")[0].text == TURNS[0][2]
    finally:
        views.close()
        store.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_read_side_starts_without_its_embedder_and_the_memory_view_follows(
    make_settings: MakeSettings,
) -> None:
    import asyncio
    import socket

    from agentledger.handlers.client import LedgerClient, QueryFailed
    from support.harness import nats_client, running_projector

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(
        "sqlite", memory_embedder="openai:stub-embed", embeddings_url=f"http://127.0.0.1:{port}/v1"
    )
    store = EventStore(settings)
    try:
        record_turns(store, TURNS)
    finally:
        store.close()
    async with running_projector(settings) as service, nats_client(settings) as nc:
        client = LedgerClient(nc, prefix=settings.subject_prefix)
        # The endpoint is down: the other views and queries work; memory says it is off.
        assert service.memory is None
        runs = await client.query("runs", limit=10)
        assert len(runs) == len(TURNS)
        with pytest.raises(QueryFailed, match="memory view is off"):
            await client.search_similar("deploy", 1)
        with openai_stub(port=port):
            for _ in range(200):
                if service.memory is not None and service.wait_until(
                    service.store.max_notification_id(),
                    0.1,  # type: ignore[union-attr]
                ):
                    break
                await asyncio.sleep(0.05)
            hits = await client.search_similar("production deploy Friday", 1, role="user")
            assert hits[0].text == TURNS[0][2]


def test_mixed_lengths_are_batched_by_length_and_each_text_keeps_its_own_vector() -> None:
    """Padding-aware batching: a long text never sits in a batch of much shorter ones
    (the whole batch would be padded to it), and reordering for that never moves a
    vector to another text's row."""
    embedder = load_embedder("minilm")
    texts = [
        "ok",
        "the parcel arrived broken and the support line keeps hanging up on me " * 3,
        "",
        "refund please",
        "what is the capital of France, and how many people live there today?",
        "hi",
    ] * 6
    lengths = embedder._lengths([t for t in texts if t.strip()])  # type: ignore[attr-defined]
    for batch in embedder._batches([t for t in texts if t.strip()]):  # type: ignore[attr-defined]
        longest = lengths[batch[0]]
        assert all(lengths[i] >= 0.75 * longest for i in batch)
        assert all(lengths[i] <= longest for i in batch)
    together = embedder.embed(texts)
    for i, text in enumerate(texts[:6]):
        alone = embedder.embed([text])[0]
        assert np.allclose(together[i], alone, atol=2e-3), text

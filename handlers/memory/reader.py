"""`search_similar`: the memory view searched by meaning, from Python.

    from agentledger.handlers.memory import open_memory
    with open_memory() as memory:                      # settings from AGENTLEDGER_*
        for hit in memory.search_similar("when is the deploy?", k=5, agent="notes"):
            print(f"{hit.score:.3f} {hit.session_id} {hit.text}")

The same search answers `<prefix>.query.memory` over NATS and `agentledger memory search`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from agentledger.domain.memory.embedding import Embedder
from agentledger.domain.memory.recall import MemoryHit
from agentledger.infra.embedders import load_embedder
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import PostgresViewStore, ViewStore, view_store_for
from agentledger.projections.memory import HnswParams, MemoryFilter, MemoryProjection, MemorySearch
from agentledger.projections.memory.search import Role
from agentledger.projections.memory.view import Dialect

__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MemoryReader",
    "MemoryViewMismatch",
    "embedder_for",
    "memory_projection",
    "open_memory",
]

MAX_K = 100
"""The most hits one search returns."""
MAX_QUERY_CHARS = 8_000


def embedder_for(settings: Settings, *, memory: bool = False) -> Embedder:
    """The configured embedder (loaded once per process); with `memory`, the memory
    view's (AGENTLEDGER_MEMORY_EMBEDDER, else AGENTLEDGER_EMBEDDER)."""
    key = settings.embeddings_api_key
    spec = (settings.memory_embedder or settings.embedder) if memory else settings.embedder
    return load_embedder(
        spec,
        base_url=settings.embeddings_url,
        api_key=key.get_secret_value() if key else None,
        batch=settings.embed_batch,
    )


def dialect_of(views: ViewStore) -> Dialect:
    return "postgres" if isinstance(views, PostgresViewStore) else "sqlite"


def memory_projection(settings: Settings, views: ViewStore) -> MemoryProjection:
    """The memory view as the settings configure it (embedder, index parameters)."""
    return MemoryProjection(
        embedder_for(settings, memory=True),
        dialect_of(views),
        views.sealer,
        HnswParams(m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction),
    )


class MemoryViewMismatch(ValueError):
    """The memory view was made by another embedder (or index) than the configured one."""


class MemoryReader:
    """Similarity search over one view store's memory view."""

    def __init__(self, views: ViewStore, projection: MemoryProjection, ef_search: int = 100):
        self.views = views
        self.embedder = projection.embedder
        self.projection = projection
        self._search = MemorySearch(projection.dialect, views.sealer, ef_search)
        self._ensured = False

    @classmethod
    def for_settings(cls, settings: Settings, views: ViewStore) -> MemoryReader:
        return cls(views, memory_projection(settings, views), settings.hnsw_ef_search)

    def search_similar(
        self,
        query: str,
        k: int = 5,
        *,
        agent: str | None = None,
        session: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        role: Role | None = None,
        exclude_session: str | None = None,
    ) -> list[MemoryHit]:
        """The `k` stored prompts and outputs most similar to `query` (cosine, best
        first), among those matching every filter given. Blocking: see `asearch`."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty text")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query is {len(query)} characters; at most {MAX_QUERY_CHARS}")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be 1..{MAX_K}, got {k}")
        where = MemoryFilter(
            agent=agent,
            session_id=session,
            exclude_session_id=exclude_session,
            since=since,
            until=until,
            role=role,
        )
        vector = self.embedder.embed([query])[0]
        self._ensure()
        with self.views.read() as cursor:
            return self._search.search(cursor, vector, k, where)

    async def asearch(self, query: str, k: int = 5, **filters: object) -> list[MemoryHit]:
        """`search_similar` off the event loop."""
        return await asyncio.to_thread(self.search_similar, query, k, **filters)  # type: ignore[arg-type]

    def stats(self) -> dict[str, object]:
        """How many texts the view holds and what made it."""
        self._ensure()
        with self.views.read() as cursor:
            count = self._search.count(cursor)
        return {"texts": count, **self.projection.made_by()}

    def _ensure(self) -> None:
        """Create the view's tables if missing; never drop a view another embedder made
        (the projector does that when it is configured so): say so instead."""
        if not self._ensured:
            with self.views.read() as cursor:
                reason = self.projection.stale_reason(cursor)
            if reason is not None:
                raise MemoryViewMismatch(
                    f"{reason}: the memory projector rebuilds it once it runs with this"
                    " embedder (or `agentledger rebuild memory`); or set AGENTLEDGER_EMBEDDER"
                    " to the view's"
                )
            self.views.ensure(self.projection)
            self._ensured = True


@contextmanager
def open_memory(settings: Settings | None = None) -> Iterator[MemoryReader]:
    """A `MemoryReader` over the configured view store, closed on exit."""
    settings = settings or Settings()
    views = view_store_for(settings)
    try:
        yield MemoryReader.for_settings(settings, views)
    finally:
        views.close()

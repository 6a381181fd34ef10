"""Semantic memory: the memory view's projector, `search_similar`, recall for agents."""

from agentledger.handlers.memory.reader import (
    MemoryReader,
    embedder_for,
    memory_projection,
    open_memory,
)

__all__ = ["MemoryReader", "embedder_for", "memory_projection", "open_memory"]

"""Read side of semantic memory: the embedded view and similarity search over it."""

from agentledger.projections.memory.search import MemoryFilter, MemorySearch
from agentledger.projections.memory.view import HnswParams, MemoryProjection, output_text

__all__ = ["HnswParams", "MemoryFilter", "MemoryProjection", "MemorySearch", "output_text"]

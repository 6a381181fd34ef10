"""What every embedder shares: text cleaning, batching, normalisation, a lock."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from agentledger.domain.memory.embedding import Vectors, as_unit_rows

__all__ = ["BaseEmbedder", "clean_text"]

MAX_CHARS = 8_000
"""Characters of a text an embedder looks at (every model here truncates far earlier)."""


def clean_text(text: str) -> str:
    """A text every tokenizer accepts: no NUL, no lone surrogate, bounded length."""
    text = text[:MAX_CHARS].replace("\x00", " ")
    return text.encode("utf-8", "replace").decode("utf-8")


class BaseEmbedder(ABC):
    """Batches texts, keeps empty ones as zero rows, normalises what the model returns.

    Calls are serialised by a lock: the models run their own threads inside, and two
    callers at once would only fight over the same cores.
    """

    def __init__(self, name: str, dim: int, batch: int = 64) -> None:
        self._name = name
        self._dim = dim
        self.batch = batch
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        cleaned = [clean_text(t) for t in texts]
        # Longest first, so each batch pads to texts of about its own length (a batch is
        # as slow as its longest text for the transformer models).
        wanted = sorted(
            (i for i, t in enumerate(cleaned) if t.strip()), key=lambda i: -len(cleaned[i])
        )
        with self._lock:
            for start in range(0, len(wanted), self.batch):
                chunk = wanted[start : start + self.batch]
                out[chunk] = self._embed([cleaned[i] for i in chunk])
        return as_unit_rows(out)

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) vectors for non-empty texts (normalised or not)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name}>"

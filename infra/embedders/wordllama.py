"""WordLlama: static token embeddings (l2_supercat, 256 dims) shipped inside the wheel.

Average-pooled token vectors: no neural network at query time, so a short text embeds
in well under a millisecond on one core. `dim` below 256 truncates the vectors
(WordLlama is trained Matryoshka-style for 64, 128 and 256).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.infra.embedders.base import BaseEmbedder

__all__ = ["WordLlamaEmbedder"]


class WordLlamaEmbedder(BaseEmbedder):
    def __init__(self, dim: int = 256, batch: int = 64) -> None:
        if dim not in (64, 128, 256):
            raise EmbeddingError(f"wordllama dims are 64, 128 or 256, not {dim}")
        try:
            import logging

            root = logging.getLogger()
            level, handlers = root.level, list(root.handlers)
            import wordllama
            from wordllama import WordLlama

            # Importing wordllama calls logging.basicConfig(INFO): undo it.
            root.setLevel(level)
            for handler in list(root.handlers):
                if handler not in handlers:
                    root.removeHandler(handler)
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise EmbeddingError(f"wordllama is not installed: {e}") from None
        try:
            self._model: Any = WordLlama.load(
                config="l2_supercat",
                cache_dir=Path(wordllama.__file__).parent,
                disable_download=True,
                dim=256,
                trunc_dim=None if dim == 256 else dim,
            )
        except Exception as e:
            raise EmbeddingError(f"could not load wordllama from its wheel: {e}") from None
        super().__init__(f"wordllama:l2_supercat:{dim}", dim, batch)

    def _embed(self, texts: list[str]) -> np.ndarray:
        # norm=False: its own normalisation divides by zero on a text with no tokens.
        return np.asarray(
            self._model.embed(texts, norm=False, batch_size=self.batch), dtype=np.float32
        )

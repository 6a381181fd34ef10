"""The embedder port: text in, unit vectors out.

Every embedder (infra/embedders) returns float32 rows of length `dim`, L2-normalised, so
a dot product is the cosine similarity everywhere: in numpy, in pgvector's `<=>` and in
the router's scoring. `name` identifies the model and its settings (a view records which
embedder made its vectors, and a different one means a rebuild).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "EmbeddingError", "Vectors", "as_unit_rows"]

Vectors = npt.NDArray[np.float32]
"""A (texts, dim) float32 matrix of unit rows."""


class EmbeddingError(Exception):
    """An embedder could not be loaded or could not embed (a clear message says why).

    `transient`: the cause may pass (an endpoint unreachable, overloaded, rate limiting);
    the memory projector then retries for as long as it lasts instead of taking the event
    for a poison one."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. Synchronous and CPU-bound (or a blocking HTTP call):
    call it off the event loop."""

    @property
    def name(self) -> str:
        """The model and its settings, e.g. `wordllama:l2_supercat:256`."""
        ...

    @property
    def dim(self) -> int:
        """The length of every vector."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One unit row per text, in order (an empty text gets a zero row)."""
        ...


def as_unit_rows(matrix: npt.ArrayLike) -> Vectors:
    """`matrix` as float32 rows scaled to length 1 (zero rows stay zero)."""
    rows = np.asarray(matrix, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: Vectors = (rows / norms).astype(np.float32, copy=False)
    return unit

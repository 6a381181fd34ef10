"""Lexical similarity that survives typos: TF-IDF over character n-grams of words.

Each route is one document (its description and examples). N-grams of 3 to 5 characters
are taken inside words padded with spaces (` refund ` -> ` re`, `ref`, ..., `nd `), so
"refnd" still shares most of its n-grams with "refund". IDF is over the routes: an
n-gram every route has says nothing. Scores are cosine similarities in [0, 1].
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["LexicalIndex", "char_ngrams"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SIZES = (3, 4, 5)


def char_ngrams(text: str) -> Counter[str]:
    grams: Counter[str] = Counter()
    for word in _WORD.findall(text.lower()):
        padded = f" {word} "
        for n in _SIZES:
            if len(padded) < n:
                continue
            grams.update(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


class LexicalIndex:
    """TF-IDF vectors of route documents; `scores(text)` is one cosine per route."""

    def __init__(self, documents: Sequence[str]) -> None:
        counts = [char_ngrams(d) for d in documents]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        n = max(len(documents), 1)
        self._idf = {g: math.log((1 + n) / (1 + f)) + 1.0 for g, f in df.items()}
        self._docs: list[dict[str, float]] = []
        for c in counts:
            vector = {g: (1.0 + math.log(tf)) * self._idf[g] for g, tf in c.items()}
            norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
            self._docs.append({g: v / norm for g, v in vector.items()})

    def scores(self, text: str) -> npt.NDArray[np.float32]:
        grams = char_ngrams(text)
        query = {
            g: (1.0 + math.log(tf)) * self._idf[g] for g, tf in grams.items() if g in self._idf
        }
        # Unknown n-grams count in the norm: a text mostly about something else scores low.
        unknown = sum((1.0 + math.log(tf)) ** 2 for g, tf in grams.items() if g not in self._idf)
        norm = math.sqrt(sum(v * v for v in query.values()) + unknown) or 1.0
        out = np.zeros(len(self._docs), dtype=np.float32)
        for i, doc in enumerate(self._docs):
            out[i] = sum(v * doc.get(g, 0.0) for g, v in query.items()) / norm
        return out

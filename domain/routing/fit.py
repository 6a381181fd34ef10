"""`fit`: tune a router on labelled utterances (and decisions marked right or wrong).

What is learned, by method:
- `max_example` (semantic-router's method, the baseline): a global threshold and then
  per-route thresholds, for the best accuracy on the labelled utterances, as
  semantic-router's own `fit` does;
- every other method: the labelled utterances become learned examples of their routes
  (off-topic ones join the off-topic anchors), and `hybrid` / `logreg` train their
  softmax regression on them too; then `none_bias`, a global threshold and a margin are
  chosen by 2-fold cross-validation inside the labelled set (learn from one half, score
  the other), so they are tuned on utterances the learned examples do not contain.

Accuracy counts an off-topic utterance (label None) as right only when no route is
taken. `split` makes a stratified, seeded train / held-out split, so `route fit` and
bench/router.py report accuracy before and after on utterances the fit never saw.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from agentledger.domain.memory.embedding import Embedder, Vectors
from agentledger.domain.routing.routes import RouteSpec
from agentledger.domain.routing.scoring import (
    NONE,
    RouteIndex,
    RouterParams,
    Softmax,
    decide_features,
)

__all__ = ["LOGREG_WEIGHT", "Labelled", "accuracy", "fit", "split"]

LOGREG_WEIGHT = 0.5
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Labelled:
    text: str
    route: str | None
    """The right route; None: off-topic (no route should be taken)."""


def split(
    items: Sequence[T], label: Callable[[T], object], held_out: float = 0.5, seed: int = 7
) -> tuple[list[T], list[T]]:
    """A stratified split: `held_out` of each label's items (at least one when a label has
    two or more) go to the second list."""
    groups: dict[object, list[T]] = defaultdict(list)
    for item in items:
        groups[label(item)].append(item)
    rng = random.Random(seed)
    train: list[T] = []
    test: list[T] = []
    for key in sorted(groups, key=str):
        group = list(groups[key])
        rng.shuffle(group)
        cut = round(len(group) * held_out)
        if len(group) >= 2:
            cut = min(max(cut, 1), len(group) - 1)
        test.extend(group[:cut])
        train.extend(group[cut:])
    return train, test


def accuracy(
    index: RouteIndex, params: RouterParams, vectors: Vectors, items: Sequence[Labelled]
) -> float:
    if not items:
        return 0.0
    right = 0
    for vector, item in zip(vectors, items, strict=True):
        features = index.features(vector, item.text, params.off_topic, params.spelling)
        right += decide_features(index, params, features, vector).chosen == item.route
    return right / len(items)


def _learned(base: RouterParams, items: Sequence[Labelled]) -> RouterParams:
    examples: dict[str, list[str]] = {k: list(v) for k, v in base.examples.items()}
    for item in items:
        if item.route is not None and item.text not in examples.setdefault(item.route, []):
            examples[item.route].append(item.text)
    off_topic = list(dict.fromkeys([*base.off_topic, *(i.text for i in items if i.route is None)]))
    return dataclasses.replace(base, examples=examples, off_topic=off_topic)


def _with_softmax(
    index: RouteIndex, params: RouterParams, vectors: Vectors, items: Sequence[Labelled]
) -> RouterParams:
    if params.method not in ("hybrid", "logreg"):
        return params
    rows, labels = index.training_rows([])
    model = Softmax.train(
        np.vstack([rows, vectors]).astype(np.float32),
        labels + [i.route or NONE for i in items],
        [*index.names, NONE],
    )
    weight = LOGREG_WEIGHT if params.method == "hybrid" else params.logreg_weight
    return dataclasses.replace(params, logreg=model, logreg_weight=weight)


def _grid(method: str) -> list[tuple[float, float | None, float]]:
    biases = list(np.round(np.linspace(-0.08, 0.08, 17), 3))
    thresholds: list[float | None] = [None, *np.round(np.linspace(0.0, 0.4, 9), 3)]
    if method == "logreg":
        # The softmax learns the off-topic class itself; a bias on its probabilities
        # tuned on half the labels does not carry over to the model trained on all of
        # them (more confident): -0.03 took held-out accuracy from 0.78 to 0.45.
        biases = [0.0]
        thresholds = [None, *np.round(np.linspace(0.1, 0.6, 6), 3)]
    return [
        (float(b), None if t is None else float(t), m)
        for b in biases
        for t in thresholds
        for m in (0.0, 0.01, 0.02, 0.04)
    ]


def fit(
    routes: tuple[RouteSpec, ...],
    embedder: Embedder,
    base: RouterParams,
    vectors: Vectors,
    items: Sequence[Labelled],
    cache: dict[str, Vectors] | None = None,
) -> RouterParams:
    """Parameters for `base.method` learned from `items` (with their unit `vectors`);
    build the router's index with `learned=params.examples` to use them."""
    names = {r.name for r in routes}
    unknown = {i.route for i in items if i.route is not None and i.route not in names}
    if unknown:
        raise ValueError(f"labelled routes not in the catalog: {', '.join(sorted(unknown))}")
    cache = dict(cache or {})
    cache.update({i.text: v for i, v in zip(items, vectors, strict=True)})
    if base.method == "max_example":
        return _fit_thresholds(RouteIndex(routes, embedder, cache), base, vectors, items)
    grid = _grid(base.method)
    right = np.zeros(len(grid))
    positions = list(range(len(items)))
    first, second = split(positions, lambda i: items[i].route, 0.5, seed=13)
    for learn, score in ((first, second), (second, first)):
        params = _learned(base, [items[i] for i in learn])
        index = RouteIndex(routes, embedder, cache, params.examples)
        params = _with_softmax(index, params, vectors[learn], [items[i] for i in learn])
        for i in score:
            features = index.features(vectors[i], items[i].text, params.off_topic, params.spelling)
            for g, (bias, threshold, margin) in enumerate(grid):
                candidate = dataclasses.replace(
                    params, none_bias=bias, threshold=threshold, margin=margin
                )
                right[g] += (
                    decide_features(index, candidate, features, vectors[i]).chosen == items[i].route
                )
    bias, threshold, margin = grid[_robust_best(grid, right, len(items))]
    params = _learned(base, items)
    index = RouteIndex(routes, embedder, cache, params.examples)
    params = _with_softmax(index, params, vectors, items)
    return dataclasses.replace(params, none_bias=bias, threshold=threshold, margin=margin)


def _robust_best(grid: list[tuple[float, float | None, float]], right: np.ndarray, n: int) -> int:
    """The grid point to keep: each point is judged by the mean of itself and its two
    neighbours on the `none_bias` axis (a bias at the edge of a cliff, where one step
    further sends most prompts off-topic, does not win on a lucky count), and the
    defaults stay unless another point beats them by at least 1% of the utterances."""
    biases = sorted({g[0] for g in grid})
    position = {g: i for i, g in enumerate(grid)}
    smooth = np.zeros(len(grid))
    for i, (bias, threshold, margin) in enumerate(grid):
        b = biases.index(bias)
        around = [
            right[position[(biases[j], threshold, margin)]]
            for j in (b - 1, b, b + 1)
            if 0 <= j < len(biases)
        ]
        smooth[i] = float(np.mean(around))
    default = position[(0.0, None, 0.0)]
    best = int(np.argmax(smooth))
    return best if smooth[best] >= smooth[default] + max(1.0, 0.01 * n) else default


def _fit_thresholds(
    index: RouteIndex, base: RouterParams, vectors: Vectors, items: Sequence[Labelled]
) -> RouterParams:
    """semantic-router's fit: a global threshold, then each route's (coordinate ascent)."""
    features = [
        index.features(v, i.text, [], base.spelling) for v, i in zip(vectors, items, strict=True)
    ]

    def score(candidate: RouterParams) -> float:
        right = 0
        for f, v, i in zip(features, vectors, items, strict=True):
            right += decide_features(index, candidate, f, v).chosen == i.route
        return right / max(len(items), 1)

    grid = [float(x) for x in np.round(np.linspace(0.05, 0.8, 31), 3)]
    best_value, current = score(base), base
    for value in grid:
        candidate = dataclasses.replace(base, threshold=value)
        result = score(candidate)
        if result > best_value + 1e-9:
            best_value, current = result, candidate
    for _ in range(2):
        for name in index.names:
            for value in grid:
                candidate = dataclasses.replace(
                    current, thresholds={**current.thresholds, name: value}
                )
                result = score(candidate)
                if result > best_value + 1e-9:
                    best_value, current = result, candidate
    return current

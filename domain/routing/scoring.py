"""Route scoring: from a prompt's vector and text to one score per route and a choice.

Features of a prompt against route r (cosine similarities of unit vectors):
- `max_example`: the best match among r's examples (semantic-router's method);
- `centroid`: r's examples averaged;
- `description`: r's one-line description;
- `lexical`: TF-IDF over character n-grams of r's description and examples (typos);
- `none`: the mean of the 3 best matches among generic off-topic anchors
  (`anchors.OFF_TOPIC_ANCHORS`, plus any off-topic examples `fit` was given).

Methods (`RouterParams.method`):
- `max_example`: score = max_example; chosen if it reaches the threshold (semantic-router;
  default threshold 0.5, its default for local encoders);
- `description`, `centroid`: score = that feature; off-topic by the anchor rule below;
- `hybrid` (default): score = 0.35 max_example + 0.25 centroid + 0.15 description
  + 0.25 lexical; off-topic by the anchor rule;
- `logreg`: a softmax regression over the prompt's vector with one class per route and
  one for off-topic, trained on the examples, descriptions and anchors (and, after
  `fit`, on labelled utterances); score = the class probability.

Spelling (`RouterParams.spelling`, on by default; see `spelling.py`): a prompt with a
misspelt word is also scored as corrected: its vector is the mean of the original's and
the corrected text's, and `lexical` reads the corrected text. Callers embed prompts with
`RouteIndex.embed_queries`.

The anchor rule: the best route is taken only if its dense evidence (the method's
embedding-based score) reaches `none` + `none_bias`, i.e. the prompt is closer to the
route than to generic chit-chat. Then per-route thresholds apply (a route's own from the
catalog or `fit`, else `threshold`), and a `margin` between the best two. Otherwise the
fallback route (if any) is taken, else no route.

`fit` (agentledger.domain.routing.fit) tunes `none_bias`, the thresholds and the margin on
labelled utterances, and for `hybrid`/`logreg` trains the softmax regression, whose
probability `hybrid` then adds with weight `logreg_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agentledger.domain.memory.embedding import Embedder, Vectors, as_unit_rows
from agentledger.domain.routing.anchors import OFF_TOPIC_ANCHORS
from agentledger.domain.routing.lexical import LexicalIndex
from agentledger.domain.routing.routes import Method, RouteSpec
from agentledger.domain.routing.spelling import Speller

__all__ = [
    "DEFAULT_WEIGHTS",
    "Decision",
    "RouteIndex",
    "RouterParams",
    "Softmax",
    "decide",
    "decide_features",
]

DEFAULT_WEIGHTS = {"max_example": 0.35, "centroid": 0.25, "description": 0.15, "lexical": 0.25}
ANCHOR_OVERLAP = 0.6
"""An anchor this similar to a route's own text is left out (see `_anchors_apart`)."""
NONE = "__none__"
"""The off-topic class of the softmax regression."""

Array = npt.NDArray[np.float32]


@dataclass
class Softmax:
    """Multinomial logistic regression over unit vectors: `classes` x (dim + 1)."""

    classes: list[str]
    weights: Array

    def probabilities(self, vectors: Vectors) -> Array:
        logits = vectors @ self.weights[:, :-1].T + self.weights[:, -1]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: Array = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities

    @classmethod
    def train(
        cls,
        vectors: Vectors,
        labels: list[str],
        classes: list[str],
        *,
        l2: float = 1e-3,
        epochs: int = 300,
        rate: float = 0.5,
        scale: float = 10.0,
    ) -> Softmax:
        """Full-batch gradient descent (a few hundred small matrix products)."""
        x = np.hstack([vectors * scale, np.ones((len(vectors), 1), dtype=np.float32)])
        index = {c: i for i, c in enumerate(classes)}
        y = np.zeros((len(labels), len(classes)), dtype=np.float32)
        for row, label in enumerate(labels):
            y[row, index[label]] = 1.0
        # Each class weighs the same however many examples it has.
        counts = y.sum(axis=0)
        sample = (y / np.maximum(counts, 1.0)).sum(axis=1) * len(classes) / max(len(labels), 1)
        w = np.zeros((len(classes), x.shape[1]), dtype=np.float32)
        for _ in range(epochs):
            logits = x @ w.T
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            gradient = ((p - y) * sample[:, None]).T @ x / len(labels) + l2 * w
            w -= rate * gradient
        w[:, :-1] *= scale
        return cls(classes=list(classes), weights=w.astype(np.float32))

    def as_json(self) -> dict[str, Any]:
        return {"classes": self.classes, "weights": self.weights.round(6).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Softmax:
        return cls(classes=list(data["classes"]), weights=np.asarray(data["weights"], np.float32))


@dataclass
class RouterParams:
    """What scoring depends on besides the routes: defaults, or what `fit` learned."""

    method: Method = "hybrid"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    threshold: float | None = None
    """Threshold of routes without their own (None: the method's default)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    none_bias: float = 0.0
    margin: float = 0.0
    logreg: Softmax | None = None
    logreg_weight: float = 0.0
    off_topic: list[str] = field(default_factory=list)
    """Off-topic utterances learned by `fit`, added to the anchors."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Labelled utterances learned by `fit`, added to each route's examples."""
    spelling: bool = True
    """Score a spelling-corrected copy of the prompt too (`spelling.Speller`)."""

    def default_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 0.5 if self.method == "max_example" else -1.0

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "weights": self.weights,
            "threshold": self.threshold,
            "thresholds": self.thresholds,
            "none_bias": self.none_bias,
            "margin": self.margin,
            "logreg": None if self.logreg is None else self.logreg.as_json(),
            "logreg_weight": self.logreg_weight,
            "off_topic": self.off_topic,
            "examples": self.examples,
            "spelling": self.spelling,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouterParams:
        return cls(
            method=data.get("method", "hybrid"),
            weights=dict(data.get("weights") or DEFAULT_WEIGHTS),
            threshold=data.get("threshold"),
            thresholds={str(k): float(v) for k, v in (data.get("thresholds") or {}).items()},
            none_bias=float(data.get("none_bias", 0.0)),
            margin=float(data.get("margin", 0.0)),
            logreg=Softmax.from_json(data["logreg"]) if data.get("logreg") else None,
            logreg_weight=float(data.get("logreg_weight", 0.0)),
            off_topic=list(data.get("off_topic") or []),
            examples={str(k): list(v) for k, v in (data.get("examples") or {}).items()},
            spelling=bool(data.get("spelling", True)),
        )


@dataclass(frozen=True)
class Decision:
    """One prompt's scores and what they decided."""

    scores: dict[str, float]
    best: str | None
    """The best-scoring route (whether or not it was taken)."""
    chosen: str | None
    """The route taken (the fallback when the best did not qualify), or None."""
    fallback: bool
    threshold: float | None
    """The best route's threshold."""
    none_score: float
    reason: str
    """Why: `matched`, `below_threshold`, `off_topic`, `ambiguous` (margin), `no_routes`."""


class RouteIndex:
    """The routes' vectors, made once per (routes, embedder); cheap to score against."""

    def __init__(
        self,
        routes: tuple[RouteSpec, ...],
        embedder: Embedder,
        vectors: dict[str, Vectors] | None = None,
        learned: dict[str, list[str]] | None = None,
    ) -> None:
        """`vectors` maps texts to vectors already computed (a cache); the others are
        embedded now, in one batch. `learned` adds examples per route (what `fit`
        learned); the centroid and the lexical index keep to the operator's own."""
        learned = learned or {}
        self.routes = routes
        self.names = [r.name for r in routes]
        self.embedder = embedder
        known = dict(vectors or {})
        wanted = [
            t
            for t in dict.fromkeys(
                [t for r in routes for t in (r.description, *r.examples, *learned.get(r.name, []))]
                + list(OFF_TOPIC_ANCHORS)
            )
            if t.strip() and t not in known
        ]
        if wanted:
            for text, vector in zip(wanted, embedder.embed(wanted), strict=True):
                known[text] = vector
        self.vectors = known
        dim = embedder.dim

        def rows(texts: list[str]) -> Vectors:
            kept = [known[t] for t in texts if t.strip()]
            return np.stack(kept) if kept else np.zeros((0, dim), dtype=np.float32)

        own = [rows(list(r.examples) or [r.description]) for r in routes]
        self.examples = [
            rows(list(r.examples) + learned.get(r.name, [])) if learned.get(r.name) else e
            for r, e in zip(routes, own, strict=True)
        ]
        self.descriptions = (
            np.stack(
                [
                    known[r.description] if r.description.strip() else self.examples[i].mean(axis=0)
                    for i, r in enumerate(routes)
                ]
            )
            if routes
            else np.zeros((0, dim), dtype=np.float32)
        )
        self.descriptions = as_unit_rows(self.descriptions) if routes else self.descriptions
        self.centroids = (
            as_unit_rows(np.stack([e.mean(axis=0) for e in own]))
            if routes
            else np.zeros((0, dim), dtype=np.float32)
        )
        self._own = own
        self.lexical = LexicalIndex([" ".join((r.description, *r.examples)) for r in routes])
        self.anchors = self._anchors_apart(rows(list(OFF_TOPIC_ANCHORS)))
        self._extra_anchors: dict[tuple[str, ...], Vectors] = {}
        self._speller: Speller | None = None

    @property
    def speller(self) -> Speller:
        """Corrects towards the operator's own texts (not learned ones, which may hold
        the very typos being corrected) and English; made when first needed."""
        if self._speller is None:
            self._speller = Speller(t for r in self.routes for t in (r.description, *r.examples))
        return self._speller

    def embed_queries(self, texts: list[str], spelling: bool = True) -> Vectors:
        """Unit vectors to score `texts` by: with `spelling`, a text that has a
        correction gets the mean of its own vector and its corrected copy's (one more
        embedding, only for those texts)."""
        vectors = self.embedder.embed(texts)
        if not spelling:
            return vectors
        fixed = [self.speller.correct(t) for t in texts]
        changed = [i for i, (t, f) in enumerate(zip(texts, fixed, strict=True)) if t != f]
        if changed:
            extra = self.embedder.embed([fixed[i] for i in changed])
            vectors = vectors.copy()
            vectors[changed] = as_unit_rows(vectors[changed] + extra)
        return vectors

    def _anchors_apart(self, anchors: Vectors) -> Vectors:
        """The anchors that are not what a route is about: one as close to a route's own
        example or description as `ANCHOR_OVERLAP` (a small-talk route's "hello") is
        that route's, not off-topic."""
        if not self.routes or anchors.size == 0:
            return anchors
        own = np.vstack([*self._own, self.descriptions])
        closest = (anchors @ own.T).max(axis=1)
        kept: Vectors = anchors[closest < ANCHOR_OVERLAP]
        return kept

    def anchors_with(self, extra: list[str]) -> Vectors:
        if not extra:
            return self.anchors
        key = tuple(extra)
        if key not in self._extra_anchors:
            missing = [t for t in dict.fromkeys(extra) if t not in self.vectors]
            if missing:
                self.vectors.update(zip(missing, self.embedder.embed(missing), strict=True))
            rows = np.stack([self.vectors[t] for t in extra])
            self._extra_anchors[key] = np.vstack([self.anchors, rows])
        return self._extra_anchors[key]

    def features(
        self,
        vector: Vectors,
        text: str,
        off_topic: list[str] | None = None,
        spelling: bool = True,
    ) -> dict[str, Array]:
        """`vector` is the text's query vector (`embed_queries`); the lexical feature
        reads the spelling-corrected text when `spelling`."""
        q = vector.reshape(-1)
        per_example = [e @ q for e in self.examples]
        anchors = self.anchors_with(off_topic or []) @ q
        top = np.sort(anchors)[-3:]
        return {
            "max_example": np.array([s.max() for s in per_example], dtype=np.float32),
            "centroid": (self.centroids @ q).astype(np.float32),
            "description": (self.descriptions @ q).astype(np.float32),
            "lexical": self.lexical.scores(self.speller.correct(text) if spelling else text),
            "none": np.array([top.mean() if top.size else -1.0], dtype=np.float32),
        }

    def default_softmax(self, params: RouterParams) -> Softmax:
        """The softmax regression trained on the routes' own texts and the anchors."""
        vectors, labels = self.training_rows(params.off_topic)
        return Softmax.train(vectors, labels, [*self.names, NONE])

    def training_rows(self, off_topic: list[str]) -> tuple[Vectors, list[str]]:
        rows: list[Vectors] = []
        labels: list[str] = []
        for name, examples, description in zip(
            self.names, self._own, self.descriptions, strict=True
        ):
            rows.extend([examples, description.reshape(1, -1)])
            labels.extend([name] * (len(examples) + 1))
        anchors = self.anchors_with(off_topic)
        rows.append(anchors)
        labels.extend([NONE] * len(anchors))
        return np.vstack(rows).astype(np.float32), labels


def method_scores(
    index: RouteIndex, params: RouterParams, features: dict[str, Array], vector: Vectors
) -> tuple[Array, Array, float]:
    """(scores, dense evidence, none score) of every route under `params.method`."""
    none = float(features["none"][0])
    method = params.method
    if method in ("max_example", "centroid", "description"):
        scores = features[method]
        return scores, scores, none
    if method == "logreg":
        model = params.logreg or index.default_softmax(params)
        p = model.probabilities(vector.reshape(1, -1))[0]
        order = {c: i for i, c in enumerate(model.classes)}
        scores = np.array([p[order[n]] if n in order else 0.0 for n in index.names], np.float32)
        none_p = float(p[order[NONE]]) if NONE in order else 0.0
        return scores, scores, none_p
    w = params.weights
    dense_weight = sum(w.get(k, 0.0) for k in ("max_example", "centroid", "description")) or 1.0
    dense = np.zeros(len(index.names), dtype=np.float32)
    for k in ("max_example", "centroid", "description"):
        dense = dense + w.get(k, 0.0) * features[k]
    scores = dense + w.get("lexical", 0.0) * features["lexical"]
    if params.logreg is not None and params.logreg_weight:
        p = params.logreg.probabilities(vector.reshape(1, -1))[0]
        order = {c: i for i, c in enumerate(params.logreg.classes)}
        scores = scores + params.logreg_weight * np.array(
            [p[order[n]] if n in order else 0.0 for n in index.names], np.float32
        )
    return scores.astype(np.float32), (dense / dense_weight).astype(np.float32), none


def decide(
    index: RouteIndex,
    params: RouterParams,
    vector: Vectors,
    text: str,
    fallback: str | None = None,
) -> Decision:
    """Score `text` (and its query `vector`, `RouteIndex.embed_queries`) against every
    route and choose."""
    if not index.names:
        return Decision({}, None, fallback, fallback is not None, None, -1.0, "no_routes")
    return decide_features(
        index,
        params,
        index.features(vector, text, params.off_topic, params.spelling),
        vector,
        fallback,
    )


def decide_features(
    index: RouteIndex,
    params: RouterParams,
    features: dict[str, Array],
    vector: Vectors,
    fallback: str | None = None,
) -> Decision:
    """`decide` from features already computed (fit evaluates many params on them)."""
    scores, dense, none = method_scores(index, params, features, vector)
    order = np.argsort(-scores, kind="stable")
    best = index.names[int(order[0])]
    top = float(scores[order[0]])
    second = float(scores[order[1]]) if len(order) > 1 else -np.inf
    route = index.routes[int(order[0])]
    threshold = params.thresholds.get(
        best, route.threshold if route.threshold is not None else params.default_threshold()
    )
    if params.method == "logreg":
        off_topic = none > top + params.none_bias
    elif params.method == "max_example":
        off_topic = False
    else:
        off_topic = float(dense[order[0]]) < none + params.none_bias
    reason = "matched"
    if off_topic:
        reason = "off_topic"
    elif top < threshold:
        reason = "below_threshold"
    elif top - second < params.margin:
        reason = "ambiguous"
    chosen = best if reason == "matched" else fallback
    return Decision(
        scores={n: round(float(s), 6) for n, s in zip(index.names, scores, strict=True)},
        best=best,
        chosen=chosen,
        fallback=reason != "matched" and fallback is not None,
        threshold=float(threshold),
        none_score=round(none, 6),
        reason=reason,
    )

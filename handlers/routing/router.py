"""The router a worker (and `agentledger route test`) uses: the catalog's routes, the
configured embedder, and the latest fit recorded for them.

Example embeddings are computed once and cached on disk
(`<data_dir>/cache/route-vectors/<embedder>.npz`, keyed by a digest of each text), so a
restart embeds nothing; a changed or added example misses the cache and is embedded
(and cached) when the router is built. The fit (`RouterModel` in the event store) is
used only when it was made for the same routes (`routes_digest`), embedder and method;
otherwise the router routes with its defaults and logs why.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agentledger.domain.memory.embedding import Embedder, Vectors
from agentledger.domain.routing.anchors import OFF_TOPIC_ANCHORS
from agentledger.domain.routing.decision import RouterModel
from agentledger.domain.routing.routes import RouterSpec, routes_digest
from agentledger.domain.routing.scoring import Decision, RouteIndex, RouterParams, decide
from agentledger.infra.event_store import EventStore

__all__ = ["Router", "VectorCache", "latest_fit"]

log = structlog.get_logger("agentledger.routing")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class VectorCache:
    """Text -> vector, for one embedder, in one .npz file (written atomically)."""

    def __init__(self, folder: Path | None, embedder: Embedder) -> None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)[:120]
        self.path = None if folder is None else folder / f"{slug}.npz"
        self._lock = threading.Lock()

    def load(self, texts: list[str]) -> dict[str, Vectors]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            with np.load(self.path) as data:
                stored = {k: data[k] for k in data.files}
        except Exception as e:  # a torn or foreign file: embed again
            log.warning(
                "route vector cache unreadable; ignoring it", path=str(self.path), error=str(e)
            )
            return {}
        return {t: stored[_key(t)] for t in texts if _key(t) in stored}

    def save(self, vectors: dict[str, Vectors]) -> None:
        if self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp.npz")
            arrays: dict[str, Any] = {_key(t): v for t, v in vectors.items()}
            np.savez(tmp, **arrays)
            tmp.replace(self.path)


@dataclass(frozen=True)
class Fit:
    version: int
    params: RouterParams


def latest_fit(store: EventStore, prefix: str, spec: RouterSpec, embedder: Embedder) -> Fit | None:
    """The latest `route fit` made for these routes, this embedder and method (or None)."""
    from agentledger.domain.ids import router_model_id

    events = store.events(router_model_id(prefix))
    for event in reversed(events):
        if isinstance(event, RouterModel.RouterFitted):
            if (
                event.routes_digest == routes_digest(spec.routes)
                and event.embedder == embedder.name
                and event.method == spec.method
            ):
                return Fit(event.originator_version, RouterParams.from_json(event.params))
            log.warning(
                "the latest route fit was made for other routes, embedder or method; routing"
                " with defaults until `agentledger route fit` runs again",
                fitted_for=[event.routes_digest, event.embedder, event.method],
            )
            return None
    return None


class Router:
    """Scores prompts against the catalog's routes."""

    def __init__(
        self,
        spec: RouterSpec,
        embedder: Embedder,
        fit: Fit | None = None,
        cache_folder: Path | None = None,
    ) -> None:
        self.spec = spec
        self.embedder = embedder
        self.fit = fit
        self.params = fit.params if fit is not None else RouterParams(method=spec.method)
        if spec.margin and not self.params.margin:
            self.params.margin = spec.margin
        if not spec.spelling:
            self.params.spelling = False
        self.digest = routes_digest(spec.routes)
        cache = VectorCache(cache_folder, embedder)
        texts = [
            t
            for r in spec.routes
            for t in (r.description, *r.examples, *self.params.examples.get(r.name, []))
        ] + [*OFF_TOPIC_ANCHORS, *self.params.off_topic]
        known = cache.load(texts)
        self.index = RouteIndex(spec.routes, embedder, known, self.params.examples)
        self.index.anchors_with(self.params.off_topic)  # embedded now, and cached
        if len(self.index.vectors) > len(known):
            cache.save(self.index.vectors)

    @property
    def method(self) -> str:
        return self.params.method

    @property
    def fit_version(self) -> int | None:
        return None if self.fit is None else self.fit.version

    def decide(self, prompt: str) -> Decision:
        """Embed `prompt`, score every route, choose (blocking: see `adecide`)."""
        vector = self.index.embed_queries([prompt], self.params.spelling)[0]
        return decide(self.index, self.params, vector, prompt, self.spec.fallback)

    async def adecide(self, prompt: str) -> Decision:
        return await asyncio.to_thread(self.decide, prompt)

    def thresholds(self) -> dict[str, float]:
        """Each route's threshold in force."""
        default = self.params.default_threshold()
        return {
            r.name: self.params.thresholds.get(
                r.name, r.threshold if r.threshold is not None else default
            )
            for r in self.spec.routes
        }

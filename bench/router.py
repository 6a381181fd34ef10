#!/usr/bin/env python
"""Semantic routing accuracy and speed, per embedder and method, in one run:

    python bench/router.py [--embedders wordllama,minilm] [--routes F] [--set F]

The routes (bench/data/router_routes.toml, catalog syntax: a one-line description and
6 examples per route, as an operator writes them) and the labelled set
(bench/data/router_set.jsonl: 444 utterances over 7 routes, 80 of them off-topic, with
paraphrases, typos and near-misses, none copied from the examples) are kept apart.

For each embedder, every method is scored on a stratified, seeded held-out half of the
set, before and after `fit` on the other half (the same code as `agentledger route fit`).
Accuracy counts an off-topic utterance as right only when it falls back (no route).
`max_example` is semantic-router's method (max cosine over examples; threshold 0.5
before fit, per-route thresholds after) - the baseline, on the same embedder. The
`hybrid, margin` rows apply the margin rule (the best route must beat the second by the
margin, else it falls back) without a fit.
Also printed: accuracy on the whole set before fit, and p50 / p99 of one routing
decision (embed the prompt + score + choose), one prompt at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT)]

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.domain.routing.fit import Labelled, accuracy, fit, split  # noqa: E402
from agentledger.domain.routing.routes import METHODS, RouterSpec, RouteSpec  # noqa: E402
from agentledger.domain.routing.scoring import RouteIndex, RouterParams, decide  # noqa: E402
from agentledger.infra.embedders import load_embedder  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)
DATA = Path(__file__).parent / "data"


def load(routes_file: Path, set_file: Path) -> tuple[RouterSpec, list[Labelled], list[str]]:
    tables = tomllib.loads(routes_file.read_text())["routes"]
    spec = RouterSpec(routes=tuple(RouteSpec(name=n, **t) for n, t in tables.items()))
    rows = [json.loads(line) for line in set_file.read_text().splitlines() if line.strip()]
    return spec, [Labelled(r["text"], r["route"]) for r in rows], [r["kind"] for r in rows]


def timings(index: RouteIndex, params: RouterParams, texts: list[str]) -> tuple[float, float]:
    for text in texts[:20]:  # warm-up
        decide(index, params, index.embed_queries([text], params.spelling)[0], text)
    spent = []
    for text in texts:
        start = time.perf_counter()
        decide(index, params, index.embed_queries([text], params.spelling)[0], text)
        spent.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(spent, 50)), float(np.percentile(spent, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", default="wordllama,minilm")
    parser.add_argument("--routes", type=Path, default=DATA / "router_routes.toml")
    parser.add_argument("--set", type=Path, default=DATA / "router_set.jsonl")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    spec, items, kinds = load(args.routes, args.set)
    train, test = split(items, lambda i: i.route, 0.5, args.seed)
    console.print(
        f"{len(spec.routes)} routes, {len(items)} labelled utterances"
        f" ({sum(i.route is None for i in items)} off-topic); fit on {len(train)},"
        f" held out {len(test)}"
    )
    table = Table(title="routing accuracy (held-out half unless said)")
    for column in (
        "embedder",
        "method",
        "all, before fit",
        "held-out before",
        "held-out after",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="right" if column != "method" else "left")
    per_kind: dict[str, dict[str, float]] = {}
    for name in args.embedders.split(","):
        embedder = load_embedder(name.strip())
        index = RouteIndex(spec.routes, embedder)
        texts = [i.text for i in items]
        raw = dict(zip(texts, embedder.embed(texts), strict=True))
        spelled = dict(zip(texts, index.embed_queries(texts), strict=True))

        def matrix(
            subset: list[Labelled], spelling: bool = True, raw: dict = raw, spelled: dict = spelled
        ) -> np.ndarray:
            vectors = spelled if spelling else raw
            return np.stack([vectors[i.text] for i in subset])

        def score(params: RouterParams, subset: list[Labelled], idx: RouteIndex = index) -> str:
            return f"{accuracy(idx, params, matrix(subset, params.spelling), subset):.3f}"

        # semantic-router's method is the baseline as it is: no spelling correction.
        variants = [(m, RouterParams(method=m, spelling=m != "max_example")) for m in METHODS]
        variants.append(("hybrid, no spelling", RouterParams(method="hybrid", spelling=False)))
        for label, base in variants:
            fitted = fit(
                spec.routes,
                embedder,
                base,
                matrix(train, base.spelling),
                train,
                index.vectors,
            )
            vectors = spelled if base.spelling else raw
            learned = RouteIndex(spec.routes, embedder, index.vectors | vectors, fitted.examples)
            p50, p99 = timings(learned, fitted, [i.text for i in test[:200]])
            table.add_row(
                embedder.name,
                label,
                score(base, items),
                score(base, test),
                score(fitted, test, learned),
                f"{p50:.2f}",
                f"{p99:.2f}",
            )
            if label == "hybrid":
                for margin in (0.02, 0.05):  # the margin rule between the top two routes
                    ruled = RouterParams(method="hybrid", margin=margin)
                    table.add_row(
                        embedder.name,
                        f"hybrid, margin {margin}",
                        score(ruled, items),
                        score(ruled, test),
                        "",
                        "",
                        "",
                    )
            if label.startswith("hybrid"):
                for kind in sorted(set(kinds)):
                    subset = [i for i, k in zip(items, kinds, strict=True) if k == kind]
                    per_kind.setdefault(f"{embedder.name}, {label}", {})[kind] = float(
                        score(base, subset)
                    )
    console.print(table)
    kinds_table = Table(title="hybrid before fit, whole set, by kind of utterance")
    kinds_table.add_column("embedder, method")
    all_kinds = sorted(set(kinds))
    for kind in all_kinds:
        kinds_table.add_column(kind, justify="right")
    for name, row in per_kind.items():
        kinds_table.add_row(name, *(f"{row[k]:.3f}" for k in all_kinds))
    console.print(kinds_table)


if __name__ == "__main__":
    main()

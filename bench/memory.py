#!/usr/bin/env python
"""Memory view: similarity search at 100,000 stored vectors, and the throughput of the
memory projection, in one run:

    python bench/memory.py [--n 100000] [--queries 200] [--ef-search 100] [--runs 1000]
                           [--no-postgres]

1. Search at `--n` stored vectors of the default embedder's size (minilm, 384 dims).
   Embedding 100k texts would take longer than the whole bench, so the view is filled
   with synthetic vectors of realistic structure: `--centres` cluster centres are real
   minilm embeddings of generated prompts and outputs; every stored vector is one centre
   plus gaussian noise (a spread per cluster: cosine 0.7-0.9 to its centre), normalised,
   float32, seeded; cluster sizes are Zipf-like. The rows (agent, session, time, the
   centre's text) are copied straight into `al_memory`, made by the projection's DDL. On
   PostgreSQL the HNSW index (m=16, ef_construction=64) is dropped before the load and
   built after it, timed on its own; at the end `--append` more rows go in through
   `MemoryProjection.apply_batch` (vectors precomputed), to time inserts into the indexed
   table at that size. The `--queries` query vectors are new points from the same clusters.
   Reported: p50/p99 of one `MemorySearch.search` (k=10, in its own read transaction, as
   the memory reader does) and recall@10 against exact search in numpy: pgvector HNSW at
   several `hnsw.ef_search`, a PostgreSQL exact scan, an agent filter (an exact scan of
   that agent's rows), and SQLite (numpy; the first search loads the matrix, timed apart).
2. Projection throughput: `--runs` runs (a generated prompt and output each) through
   `MemoryProjection.apply_batch`, one `views.transaction()` per batch of 256 events as the
   memory projector reads them (a run has `--events-per-run` events; the ones the memory
   view ignores still take their slots in a batch), with minilm and wordllama, on SQLite
   and PostgreSQL: runs/s and texts/s, split into embed time and write time. Baselines in
   the same run: the bare embedder on the same texts and batches, and raw inserts of the
   same rows (vectors precomputed) into an identical empty table.
3. A summary of the targets: search p50 <= 5 ms with recall@10 >= 0.95, and the memory
   projection keeping up with 100 runs/s (200 texts/s) with the default embedder.

AGENTLEDGER_POSTGRES_DSN names a PostgreSQL with pgvector to use (fresh databases are made
on it and dropped afterwards); otherwise an embedded PostgreSQL 16 + pgvector 0.6 is
started in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.domain.memory.embedding import Embedder, Vectors, as_unit_rows  # noqa: E402
from agentledger.domain.memory.recall import MemoryHit  # noqa: E402
from agentledger.domain.run import AgentRun  # noqa: E402
from agentledger.infra.embedders import load_embedder  # noqa: E402
from agentledger.infra.logging import configure_logging  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402
from agentledger.infra.view_store import ViewStore, view_store_for  # noqa: E402
from agentledger.projections.base import ViewCursor, iso  # noqa: E402
from agentledger.projections.memory import (  # noqa: E402
    HnswParams,
    MemoryFilter,
    MemoryProjection,
    MemorySearch,
)
from agentledger.projections.memory.view import COLUMNS, Dialect, vector_literal  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)

K = 10
BATCH_EVENTS = 256
"""Events per batch of the memory projector (`make_memory_projector`)."""
TARGET_P50_MS = 5.0
TARGET_RECALL = 0.95
TARGET_RUNS_S = 100.0
DEFAULT_EMBEDDER = "minilm"
EMBEDDERS = ("minilm", "wordllama")

# -- generated conversations -----------------------------------------------------------

AGENTS = {
    "support": 30,
    "notes": 20,
    "coder": 15,
    "ops": 12,
    "research": 10,
    "travel": 6,
    "writer": 5,
    "calculator": 2,
}
"""Agents and their share of the runs (the filter bench uses the most and least common)."""
COMMON_AGENT, RARE_AGENT = "support", "calculator"

PRODUCTS = (
    "router",
    "laptop",
    "coffee machine",
    "phone",
    "monitor",
    "headset",
    "smart thermostat",
    "e-bike",
    "dishwasher",
    "printer",
    "robot vacuum",
    "tablet",
)
PROBLEMS = (
    "stopped charging",
    "keeps rebooting",
    "arrived with a cracked screen",
    "won't connect to the wifi",
    "makes a grinding noise",
    "shows error E{n}",
    "is missing a part",
    "was charged twice",
    "overheats after ten minutes",
    "never arrived",
)
PEOPLE = ("Alice", "Bob", "Priya", "Chen", "Fatima", "Lukas", "Maria", "Tom", "Aiko", "Omar")
CITIES = ("Lisbon", "Berlin", "Paris", "Madrid", "Warsaw", "Vienna", "Oslo", "Rome", "Prague")
SERVICES = (
    "payments API",
    "checkout service",
    "search cluster",
    "auth gateway",
    "billing worker",
    "image resizer",
    "notification queue",
    "reporting database",
)
REGIONS = ("eu-west-1", "us-east-2", "ap-south-1", "eu-central-1")
SYMPTOMS = (
    "returning 503s",
    "slow, p99 over 2 seconds",
    "dropping messages",
    "running out of memory",
    "failing health checks",
    "logging TLS handshake errors",
)
CHANGES = ("deploy", "config push", "feature flag flip", "schema migration", "node rotation")
LANGS = ("Python", "TypeScript", "Go", "Rust", "SQL", "Java", "Kotlin")
ARTIFACTS = ("unit test", "migration", "CLI", "web handler", "batch job", "query", "parser")
ERRORS = (
    "a KeyError",
    "a timeout",
    "a null pointer exception",
    "a deadlock",
    "an off-by-one error",
    "a type error",
    "a 401 Unauthorized",
    "a unique constraint violation",
)
CAUSES = (
    "a missing default",
    "two goroutines sharing a map",
    "an index that starts at 1",
    "a stale token in the cache",
    "a connection that is never returned to the pool",
    "a timezone-naive timestamp",
)
TOPICS = (
    "battery recycling",
    "sleep and memory",
    "urban heat islands",
    "remote work productivity",
    "soil carbon",
    "vector databases",
    "microplastics in rivers",
    "four-day work weeks",
    "heat pumps in cold climates",
    "bird migration and light pollution",
)
FIELDS = ("economics", "public health", "climate science", "computer science", "ecology")
SUBJECTS = (
    "the Q3 budget",
    "the offsite agenda",
    "a late invoice",
    "the new hire's onboarding",
    "the contract renewal",
    "the server migration",
    "the product launch date",
)
TONES = ("friendly", "formal", "short", "apologetic", "firm")
THINGS = (
    "birthday",
    "favourite restaurant",
    "phone number",
    "shoe size",
    "dentist appointment",
    "wifi password hint",
    "parking spot",
    "allergy",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TRANSPORT = ("train", "flight", "night bus", "ferry")


def pick_agent(rng: random.Random) -> str:
    return rng.choices(list(AGENTS), weights=list(AGENTS.values()))[0]


def conversation(rng: random.Random, agent: str) -> tuple[str, str]:
    """A user prompt and the agent's final output, from templates with random slots."""
    n, c = rng.randrange, rng.choice
    if agent == "support":
        product, order = c(PRODUCTS), f"#{n(10000, 99999)}"
        problem = c(PROBLEMS).format(n=n(100, 999))
        prompt = c(
            (
                f"My {product} {problem} since {c(DAYS)}. Order {order}, can you help?",
                f"hi, the {product} I bought {n(2, 30)} days ago {problem}. what can I do?",
                f"Order {order}: the {product} {problem}. I want a refund or a replacement.",
            )
        )
        output = c(
            (
                f"Sorry about the {product}. I have opened a replacement for order {order};"
                f" it ships within {n(1, 5)} working days.",
                f"I have refunded order {order} in full; the money is back in {n(3, 10)} days.",
                f"Please reset the {product} first (hold the power button for {n(5, 20)}"
                f" seconds); if it still {problem}, reply here and I will book a repair.",
            )
        )
    elif agent == "notes":
        person, thing = c(PEOPLE), c(THINGS)
        value = c((f"{c(DAYS)} at {n(7, 20)}:{n(0, 6)}0", f"{n(10, 99)}", c(CITIES), c(TOPICS)))
        prompt = c(
            (
                f"remember that {person}'s {thing} is {value}",
                f"note: {person} told me their {thing} is {value}",
                f"what is {person}'s {thing} again?",
            )
        )
        output = c((f"Noted: {person}'s {thing} is {value}.", f"{person}'s {thing}: {value}."))
    elif agent == "coder":
        lang, artifact, error, cause = c(LANGS), c(ARTIFACTS), c(ERRORS), c(CAUSES)
        prompt = c(
            (
                f"why does my {lang} {artifact} raise {error} when I run it twice?",
                f"{lang}: the {artifact} fails with {error} only in CI, locally it passes",
                f"review this {lang} {artifact}, it sometimes ends in {error}",
            )
        )
        output = c(
            (
                f"{error.capitalize()} comes from {cause}. Fix that and add a test that runs"
                f" the {artifact} twice.",
                f"The {artifact} fails because of {cause}; CI runs tests in parallel, which"
                f" exposes it. Here is a patch.",
            )
        )
    elif agent == "ops":
        service, region, symptom = c(SERVICES), c(REGIONS), c(SYMPTOMS)
        hours, change = n(1, 24), c(CHANGES)
        prompt = c(
            (
                f"the {service} in {region} is {symptom}; what changed in the last {hours} hours?",
                f"page: {service} {symptom} ({region}). find the cause",
                f"is the {service} in {region} healthy right now?",
            )
        )
        output = c(
            (
                f"{n(1, 6)} changes touched the {service}; the {change} at {n(0, 23):02d}:"
                f"{n(0, 59):02d} matches the start of it. Rolling it back.",
                f"The {service} in {region} is healthy: error rate {n(0, 9)}.{n(0, 9)}%,"
                f" p99 {n(80, 900)} ms.",
            )
        )
    elif agent == "research":
        topic, field = c(TOPICS), c(FIELDS)
        prompt = c(
            (
                f"summarise what is known about {topic} in {field}, with sources",
                f"give me three recent findings on {topic}",
                f"is there a consensus on {topic}? short answer",
            )
        )
        output = c(
            (
                f"Three findings on {topic}: effects are real but smaller than first reported;"
                f" most studies come from {field}; long-term data is scarce.",
                f"No consensus on {topic} yet: {n(2, 9)} reviews since {n(2015, 2025)} disagree"
                f" on the size of the effect.",
            )
        )
    elif agent == "travel":
        a, b = rng.sample(CITIES, 2)
        transport, day = c(TRANSPORT), c(DAYS)
        prompt = c(
            (
                f"find me a {transport} from {a} to {b} on {day} morning",
                f"cheapest way from {a} to {b} next {day}?",
            )
        )
        output = (
            f"There is a {transport} from {a} to {b} on {day} at {n(5, 11)}:{n(0, 59):02d}"
            f" for {n(19, 240)} EUR, {n(1, 12)} hours."
        )
    elif agent == "writer":
        person, subject, tone = c(PEOPLE), c(SUBJECTS), c(TONES)
        prompt = f"draft a {tone} email to {person} about {subject}"
        output = (
            f"Hi {person}, a quick note about {subject}: can we settle it by {c(DAYS)}?"
            f" Let me know what works for you. Best regards"
        )
    else:  # calculator
        a, b = n(2, 999), n(2, 999)
        op, result = c(((f"{a} plus {b}", a + b), (f"{a} times {b}", a * b)))
        prompt = f"what is {op}"
        output = str(result)
    return prompt, output


# -- synthetic view -----------------------------------------------------------------------


@dataclass
class Corpus:
    """The synthetic memory view: vectors, their rows, and how to draw more of them."""

    vectors: Vectors
    rows: list[tuple[Any, ...]]
    """Values of `COLUMNS` without the embedding, one per vector."""
    agents: np.ndarray
    index: dict[str, int]
    """Row of each run_id (every synthetic row is a run of its own)."""
    centres: Vectors
    weights: np.ndarray
    spread: np.ndarray
    centre_rows: list[tuple[str, str, str]]
    """(agent, role, text) of each centre."""

    def sample(self, count: int, gen: np.random.Generator) -> tuple[np.ndarray, Vectors]:
        """`count` new vectors from the clusters (cluster chosen by size): their clusters
        and the unit vectors."""
        clusters = gen.choice(len(self.centres), size=count, p=self.weights)
        noise = gen.standard_normal((count, self.centres.shape[1]), dtype=np.float32)
        noise *= self.spread[clusters, None]
        return clusters, as_unit_rows(self.centres[clusters] + noise)


def build_corpus(n: int, embedder: Embedder, centres: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    centre_rows: list[tuple[str, str, str]] = []
    while len(centre_rows) < centres:
        agent = pick_agent(rng)
        prompt, output = conversation(rng, agent)
        centre_rows += [(agent, "user", prompt), (agent, "assistant", output)]
    centre_rows = centre_rows[:centres]
    centre_vectors = embedder.embed([text for _, _, text in centre_rows])
    ranks = gen.permutation(len(centre_rows)) + 1
    weights = 1.0 / ranks**0.8
    weights /= weights.sum()
    # A member's cosine to its centre is about 1/sqrt(1 + spread^2 * dim): 0.9 to 0.7.
    dim = centre_vectors.shape[1]
    spread = gen.uniform(0.25, 1.0, len(centre_rows)) ** 0.5 / dim**0.5
    corpus = Corpus(
        vectors=np.zeros((0, dim), dtype=np.float32),
        rows=[],
        agents=np.array([], dtype=object),
        index={},
        centres=centre_vectors,
        weights=weights,
        spread=spread.astype(np.float32),
        centre_rows=centre_rows,
    )
    clusters, corpus.vectors = corpus.sample(n, gen)
    sessions = gen.integers(0, max(1, n // 40), n)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    step = 90 * 86400 / max(n, 1)
    rows = []
    for i, (cluster, session) in enumerate(zip(clusters.tolist(), sessions.tolist(), strict=True)):
        agent, role, text = centre_rows[cluster]
        run_id = f"bench-run-{i:07d}"
        at = iso(start + timedelta(seconds=i * step + float(gen.random())))
        session_id = f"{agent}-s{session}"
        row_id = f"{run_id}:{role}"
        rows.append((row_id, run_id, f"bench-task-{i:07d}", agent, session_id, role, at, text))
    corpus.rows = rows
    corpus.agents = np.array([row[3] for row in rows], dtype=object)
    corpus.index = {row[1]: i for i, row in enumerate(rows)}
    return corpus


def exact_top(vectors: Vectors, queries: Vectors, mask: np.ndarray | None = None) -> list[set[int]]:
    """The rows of the exact top-K of every query (cosine = dot product of unit rows)."""
    scores = queries @ vectors.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return [set(row.tolist()) for row in top]


def recall(results: Sequence[Sequence[MemoryHit]], truth: list[set[int]], corpus: Corpus) -> float:
    found = [
        len({corpus.index[hit.run_id] for hit in hits} & want) / K
        for hits, want in zip(results, truth, strict=True)
    ]
    return float(np.mean(found))


def cosine_stats(corpus: Corpus, queries: Vectors, truth: list[set[int]]) -> str:
    gen = np.random.default_rng(0)
    a = gen.integers(0, len(corpus.vectors), 4000)
    b = gen.integers(0, len(corpus.vectors), 4000)
    pairs = float(np.mean(np.sum(corpus.vectors[a] * corpus.vectors[b], axis=1)))
    best = np.sort(queries @ corpus.vectors.T, axis=1)[:, -K:]
    sizes = np.sort(np.bincount(corpus.sample(20000, gen)[0], minlength=len(corpus.centres)))
    return (
        f"mean cosine: random pair {pairs:.2f}, query to its 1st neighbour"
        f" {float(best[:, -1].mean()):.2f}, to its {K}th {float(best[:, 0].mean()):.2f};"
        f" the largest cluster holds {sizes[-1] / 20000:.1%} of the rows, the median one"
        f" {sizes[len(sizes) // 2] / 20000:.3%}"
    )


# -- helpers ---------------------------------------------------------------------------------


def percentiles(ms: Sequence[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed_searches(
    search: Callable[[Vectors], list[MemoryHit]], queries: Vectors, warmup: int = 10
) -> tuple[list[float], list[list[MemoryHit]]]:
    """(ms per search, hits per query); `warmup` searches first, untimed."""
    for query in queries[:warmup]:
        search(query)
    spent, results = [], []
    for query in queries:
        t0 = time.perf_counter()
        hits = search(query)
        spent.append((time.perf_counter() - t0) * 1000)
        results.append(hits)
    return spent, results


def through(
    views: ViewStore, search: MemorySearch, where: MemoryFilter | None = None
) -> Callable[[Vectors], list[MemoryHit]]:
    """One search in its own read transaction, as `MemoryReader.search_similar` does."""

    def run(query: Vectors) -> list[MemoryHit]:
        with views.read() as cursor:
            return search.search(cursor, query, K, where)

    return run


def write_meta(cursor: ViewCursor, projection: MemoryProjection) -> None:
    meta = {**projection.made_by(), "generation": uuid.uuid4().hex}
    cursor.executemany(
        "INSERT INTO al_memory_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        list(meta.items()),
    )


class TimedEmbedder:
    """An embedder that adds up the time spent in it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        t0 = time.perf_counter()
        vectors = self.inner.embed(texts)
        self.seconds += time.perf_counter() - t0
        self.texts += len(texts)
        return vectors


class PrecomputedEmbedder:
    """Hands out vectors made beforehand, in order (the cost of embedding left out)."""

    def __init__(self, name: str, vectors: Vectors) -> None:
        self._name = name
        self._vectors = vectors
        self._next = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def embed(self, texts: Sequence[str]) -> Vectors:
        start, self._next = self._next, self._next + len(texts)
        return self._vectors[start : self._next]


_OTHER = object()
"""Stands for an event of a run the memory view ignores (a model request, a tool call)."""


def run_batches(
    runs: int, tag: str, seed: int, events_per_run: int
) -> tuple[list[list[object]], int]:
    """The events of `runs` generated runs, in batches as the memory projector reads them
    (runs one after another: a run's completion may fall in the next batch), and how
    many texts they hold. The same seed gives the same texts whatever the tag."""
    rng = random.Random(seed)
    events: list[object] = []
    texts = 0
    for i in range(runs):
        agent = pick_agent(rng)
        prompt, output = conversation(rng, agent)
        run = AgentRun(
            task_id=f"{tag}-{i}",
            agent=agent,
            prompt=prompt,
            session_id=f"{agent}-s{rng.randrange(50)}",
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        run.complete(output=output, cost_usd=None, duration_ms=1.0)
        requested, completed = run.collect_events()
        events += [requested, *[_OTHER] * max(0, events_per_run - 2), completed]
        texts += 2
    batches = [events[i : i + BATCH_EVENTS] for i in range(0, len(events), BATCH_EVENTS)]
    return batches, texts


def batch_rows(batch: list[object], runs: dict[str, tuple[str, ...]]) -> list[tuple[Any, ...]]:
    """The rows the memory projection writes for a batch (values of COLUMNS but the
    embedding); `runs` carries the runs of earlier batches."""
    rows: list[tuple[Any, ...]] = []
    for event in batch:
        if isinstance(event, AgentRun.RunRequested):
            run = (str(event.originator_id), event.task_id, event.agent, event.session_id or "")
            runs[run[0]] = run
            rows.append((f"{run[0]}:user", *run, "user", iso(event.timestamp), event.prompt))
        elif isinstance(event, AgentRun.RunCompleted):
            run = runs[str(event.originator_id)]
            at = iso(event.timestamp)
            rows.append((f"{run[0]}:assistant", *run, "assistant", at, str(event.output)))
    return rows


def raw_ddl(projection: MemoryProjection) -> list[str]:
    """The projection's DDL for an identical table `bench_raw` (indexes included)."""
    statements = (*projection.ddl, *projection.deferred_ddl)
    return [s.replace("al_memory", "bench_raw") for s in statements if "al_memory" in s]


class Postgres:
    """Databases on the embedded server or on AGENTLEDGER_POSTGRES_DSN's, dropped at close."""

    def __init__(self, root: Path) -> None:
        self.external = os.environ.get("AGENTLEDGER_POSTGRES_DSN")
        self.server: Any = None
        self.made: list[str] = []
        if not self.external:
            from support.postgres_server import EmbeddedPostgres

            self.server = EmbeddedPostgres(root / "pg").start()

    def create(self, name: str) -> str:
        name = f"bench_memory_{name}_{uuid.uuid4().hex[:6]}"
        self.made.append(name)
        if self.server is not None:
            return str(self.server.create_database(name))
        from support.postgres_server import create_database_on

        return create_database_on(self.external or "", name)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            return
        from support.postgres_server import drop_database_on

        for name in self.made:
            try:
                drop_database_on(self.external or "", name)
            except psycopg.Error as e:
                console.print(f"[yellow]could not drop database {name}: {e}")


def pg_settings(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        values = [
            conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "shared_buffers", "max_parallel_maintenance_workers")
        ]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        version = row.fetchone()
    return (
        f"PostgreSQL {values[0].split()[0]}, pgvector {version[0] if version else '?'},"
        f" shared_buffers {values[1]}, max_parallel_maintenance_workers {values[2]}"
    )


# -- part 1: search -----------------------------------------------------------------------


@dataclass
class SearchRow:
    what: str
    p50: float
    p99: float
    recall: float | None
    note: str = ""


def search_postgres(
    args: argparse.Namespace,
    pg: Postgres,
    root: Path,
    embedder: Embedder,
    corpus: Corpus,
    queries: Vectors,
    truth: list[set[int]],
) -> tuple[list[SearchRow], list[tuple[str, str]]]:
    dsn = pg.create("search")
    console.print(f"[dim]{pg_settings(dsn)}")
    settings = Settings(data_dir=root / "pg-search", postgres_dsn=dsn, log_level="WARNING")
    views = view_store_for(settings)
    projection = MemoryProjection(embedder, "postgres", hnsw=HnswParams())
    views.ensure(projection)
    loads: list[tuple[str, str]] = []
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        register_vector(conn)
        conn.execute("DROP INDEX al_memory_hnsw")
        with views.transaction() as cursor:
            write_meta(cursor, projection)
        t0 = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY al_memory ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text"] * (len(COLUMNS) - 1) + ["vector"])
            for row, vector in zip(corpus.rows, corpus.vectors, strict=True):
                copy.write_row((*row, vector))
        load_s = time.perf_counter() - t0
        conn.execute("ANALYZE al_memory")
        loads.append(
            (
                f"PostgreSQL: COPY {len(corpus.rows):,} rows into al_memory, no HNSW index",
                f"{load_s:.1f} s ({len(corpus.rows) / load_s:,.0f} rows/s)",
            )
        )
        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        build = next(s for s in projection.deferred_ddl if "USING hnsw" in s)
        t0 = time.perf_counter()
        conn.execute(build)
        build_s = time.perf_counter() - t0
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_table_size('al_memory')),"
            " pg_size_pretty(pg_relation_size('al_memory_hnsw'))"
        ).fetchone()
        assert sizes is not None
        fits = "" if not notices else f"; notice: {notices[-1]}"
        loads.append(
            (
                f"PostgreSQL: build HNSW m={projection.hnsw.m}"
                f" ef_construction={projection.hnsw.ef_construction}"
                f" (maintenance_work_mem {args.maintenance_work_mem})",
                f"{build_s:.1f} s (table {sizes[0]}, index {sizes[1]}){fits}",
            )
        )
        plan = "\n".join(
            str(r[0])
            for r in conn.execute(
                "EXPLAIN SELECT run_id FROM al_memory ORDER BY embedding <=> %s::vector LIMIT 10",
                (vector_literal(queries[0]),),
            )
        )
        if "al_memory_hnsw" not in plan:
            console.print(f"[yellow]the unfiltered search does not use the HNSW index:\n{plan}")

    rows: list[SearchRow] = []
    for ef in sorted({40, args.ef_search, 200}):
        search = MemorySearch("postgres", ef_search=ef)
        spent, results = timed_searches(through(views, search), queries)
        rows.append(
            SearchRow(
                f"PostgreSQL HNSW, ef_search {ef}",
                *percentiles(spent),
                recall(results, truth, corpus),
            )
        )
        console.print(f"[dim]  {rows[-1].what}: p50 {rows[-1].p50:.2f} ms")

    exact_queries = queries[: min(len(queries), args.exact_queries)]

    def exact_scan(query: Vectors) -> list[MemoryHit]:
        with views.read() as cursor:
            cursor.execute(
                "SELECT run_id FROM al_memory ORDER BY (embedding <=> ?::vector) + 0 LIMIT ?",
                [vector_literal(query), K],
            )
            return [hit_of(str(r[0])) for r in cursor.fetchall()]

    spent, results = timed_searches(exact_scan, exact_queries, warmup=2)
    rows.append(
        SearchRow(
            "PostgreSQL exact scan (ORDER BY (embedding <=> q) + 0)",
            *percentiles(spent),
            recall(results, truth[: len(exact_queries)], corpus),
            f"{len(exact_queries)} queries",
        )
    )
    for agent in (COMMON_AGENT, RARE_AGENT):
        mask = corpus.agents == agent
        where = MemoryFilter(agent=agent)
        spent, results = timed_searches(
            through(views, MemorySearch("postgres", ef_search=args.ef_search), where),
            exact_queries,
            warmup=2,
        )
        rows.append(
            SearchRow(
                f"PostgreSQL, agent filter '{agent}' (exact scan of its rows)",
                *percentiles(spent),
                recall(results, exact_top(corpus.vectors, exact_queries, mask), corpus),
                f"{int(mask.sum()):,} rows ({mask.mean():.0%}), {len(exact_queries)} queries",
            )
        )

    # Inserts into the indexed table at this size, the projection's way (apply_batch,
    # embedding left out): what the projector pays per row once the view is this big.
    if args.append:
        batches, texts = run_batches(args.append // 2, "append", args.seed + 7, args.events_per_run)
        _, vectors = corpus.sample(texts, np.random.default_rng(args.seed + 8))
        fill = MemoryProjection(
            PrecomputedEmbedder(embedder.name, vectors), "postgres", hnsw=HnswParams()
        )
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            with views.transaction() as cursor:
                fill.apply_batch(batch, cursor)
                views.set_tracking(cursor, fill.name, i + 1)
        append_s = time.perf_counter() - t0
        loads.append(
            (
                f"PostgreSQL: apply_batch of {texts:,} more rows into the indexed"
                f" {len(corpus.rows):,}-row table (vectors precomputed)",
                f"{texts / append_s:,.0f} rows/s; all {len(corpus.rows):,} rows this way:"
                f" >= {len(corpus.rows) / (texts / append_s):.0f} s"
                f" (COPY + build: {load_s + build_s:.0f} s)",
            )
        )
    views.close()
    return rows, loads


def hit_of(run_id: str) -> MemoryHit:
    return MemoryHit(
        score=0.0,
        text="",
        role="user",
        run_id=run_id,
        task_id="",
        agent="",
        session_id=None,
        at=datetime.now(UTC),
    )


def search_sqlite(
    args: argparse.Namespace,
    root: Path,
    embedder: Embedder,
    corpus: Corpus,
    queries: Vectors,
    truth: list[set[int]],
) -> tuple[list[SearchRow], list[tuple[str, str]]]:
    settings = Settings(data_dir=root / "sqlite-search", postgres_dsn=None, log_level="WARNING")
    views = view_store_for(settings)
    projection = MemoryProjection(embedder, "sqlite")
    views.ensure(projection)
    sql = f"INSERT INTO al_memory ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    t0 = time.perf_counter()
    with views.transaction() as cursor:
        write_meta(cursor, projection)
        cursor.executemany(
            sql,
            (
                (*row, vector.tobytes())
                for row, vector in zip(corpus.rows, corpus.vectors, strict=True)
            ),
        )
    load_s = time.perf_counter() - t0
    loads = [
        (
            f"SQLite: insert {len(corpus.rows):,} rows (float32 BLOBs), one transaction",
            f"{load_s:.1f} s ({len(corpus.rows) / load_s:,.0f} rows/s)",
        )
    ]
    search = MemorySearch("sqlite")
    t0 = time.perf_counter()
    with views.read() as cursor:
        search.search(cursor, queries[0], K)
    first_ms = (time.perf_counter() - t0) * 1000
    spent, results = timed_searches(through(views, search), queries)
    rows = [
        SearchRow(
            "SQLite, numpy exact",
            *percentiles(spent),
            recall(results, truth, corpus),
            f"first search (loads {len(corpus.rows):,} rows): {first_ms:,.0f} ms",
        )
    ]
    for agent in (COMMON_AGENT, RARE_AGENT):
        mask = corpus.agents == agent
        spent, results = timed_searches(
            through(views, search, MemoryFilter(agent=agent)), queries[: args.exact_queries]
        )
        rows.append(
            SearchRow(
                f"SQLite, numpy exact, agent filter '{agent}'",
                *percentiles(spent),
                recall(
                    results, exact_top(corpus.vectors, queries[: args.exact_queries], mask), corpus
                ),
                f"{int(mask.sum()):,} rows ({mask.mean():.0%})",
            )
        )
    views.close()
    return rows, loads


# -- part 2: projection throughput --------------------------------------------------------


@dataclass
class Throughput:
    backend: str
    embedder: str
    runs: int
    texts: int
    total_s: float
    embed_s: float
    bare_texts_s: float
    raw: dict[str, float]
    """rows/s of raw inserts of the same rows, by how ("executemany", "COPY")."""

    @property
    def runs_s(self) -> float:
        return self.runs / self.total_s

    @property
    def write_s(self) -> float:
        return self.total_s - self.embed_s


def fold(views: ViewStore, projection: MemoryProjection, batches: list[list[object]]) -> float:
    """Seconds to fold every batch, each in one transaction with its tracking row."""
    views.drop(projection)
    views.ensure(projection)
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        with views.transaction() as cursor:
            projection.apply_batch(batch, cursor)
            views.set_tracking(cursor, projection.name, i + 1)
    return time.perf_counter() - t0


def raw_sqlite(
    path: Path,
    projection: MemoryProjection,
    rows: list[list[tuple[Any, ...]]],
    vectors: list[Vectors],
) -> dict[str, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in raw_ddl(projection):
            conn.execute(statement)
        sql = (
            f"INSERT INTO bench_raw ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        blobs = [[v.tobytes() for v in block] for block in vectors]
        count = sum(len(r) for r in rows)
        t0 = time.perf_counter()
        for block, vecs in zip(rows, blobs, strict=True):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, [(*r, v) for r, v in zip(block, vecs, strict=True)])
            conn.execute("COMMIT")
        spent = time.perf_counter() - t0
        for table in ("bench_raw", "bench_raw_meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        conn.close()
    return {"executemany": count / spent}


def raw_postgres(
    dsn: str,
    projection: MemoryProjection,
    rows: list[list[tuple[Any, ...]]],
    vectors: list[Vectors],
) -> dict[str, float]:
    count = sum(len(r) for r in rows)
    out = {}
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        literals = [[vector_literal(v) for v in block] for block in vectors]
        placeholders = ", ".join(["%s"] * (len(COLUMNS) - 1) + ["%s::vector"])
        sql = f"INSERT INTO bench_raw ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        copy_sql = f"COPY bench_raw ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        for how in ("executemany", "COPY"):
            with conn.transaction():
                for statement in raw_ddl(projection):
                    conn.execute(statement)
            t0 = time.perf_counter()
            for block, vecs, lits in zip(rows, vectors, literals, strict=True):
                with conn.transaction(), conn.cursor() as cur:
                    if how == "COPY":
                        with cur.copy(copy_sql) as copy:
                            copy.set_types(["text"] * (len(COLUMNS) - 1) + ["vector"])
                            for r, v in zip(block, vecs, strict=True):
                                copy.write_row((*r, v))
                    else:
                        with conn.pipeline():
                            cur.executemany(
                                sql, [(*r, v) for r, v in zip(block, lits, strict=True)]
                            )
            out[how] = count / (time.perf_counter() - t0)
            with conn.transaction():
                conn.execute("DROP TABLE bench_raw")
                conn.execute("DROP TABLE IF EXISTS bench_raw_meta")
    return out


def throughput(args: argparse.Namespace, pg: Postgres | None, root: Path) -> list[Throughput]:
    backends: list[tuple[str, Dialect, Settings, str | None]] = [
        (
            "SQLite",
            "sqlite",
            Settings(data_dir=root / "sqlite-fold", postgres_dsn=None, log_level="WARNING"),
            None,
        )
    ]
    if pg is not None:
        dsn = pg.create("fold")
        backends.append(
            (
                "PostgreSQL",
                "postgres",
                Settings(data_dir=root / "pg-fold", postgres_dsn=dsn, log_level="WARNING"),
                dsn,
            )
        )
    stores = [(name, dialect, view_store_for(s), s, dsn) for name, dialect, s, dsn in backends]
    results = []
    for embedder_name in EMBEDDERS:
        inner = load_embedder(embedder_name)
        inner.embed(["warm up the model", "and its tokenizer"] * 8)
        batches, texts = run_batches(args.runs, "bare", args.seed, args.events_per_run)
        known: dict[str, tuple[str, ...]] = {}
        rows = [batch_rows(batch, known) for batch in batches]
        t0 = time.perf_counter()
        vectors = [inner.embed([r[-1] for r in block]) for block in rows]
        bare = texts / (time.perf_counter() - t0)
        for name, dialect, views, settings, dsn in stores:
            batches, _ = run_batches(
                args.runs, f"{name}-{embedder_name}", args.seed, args.events_per_run
            )
            timed = TimedEmbedder(inner)
            projection = MemoryProjection(timed, dialect, hnsw=HnswParams())
            total = fold(views, projection, batches)
            assert timed.texts == texts, (timed.texts, texts)
            if dsn is None:
                raw = raw_sqlite(settings.views_sqlite_file, projection, rows, vectors)
            else:
                raw = raw_postgres(dsn, projection, rows, vectors)
            results.append(
                Throughput(name, embedder_name, args.runs, texts, total, timed.seconds, bare, raw)
            )
            console.print(f"[dim]  {name}, {inner.name}: {results[-1].runs_s:,.0f} runs/s")
    for _, _, views, _, _ in stores:
        views.close()
    return results


# -- main ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "[green]PASS" if ok else "[red]FAIL"


def run(args: argparse.Namespace, root: Path) -> None:
    started = time.perf_counter()
    pg = Postgres(root) if args.postgres else None
    try:
        embedder = load_embedder(DEFAULT_EMBEDDER)
        console.print(
            f"[bold]1. Search at {args.n:,} stored vectors[/] ({embedder.name}, {embedder.dim}"
            f" dims; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})"
        )
        t0 = time.perf_counter()
        corpus = build_corpus(args.n, embedder, args.centres, args.seed)
        _, queries = corpus.sample(args.queries, np.random.default_rng(args.seed + 1))
        truth = exact_top(corpus.vectors, queries)
        console.print(
            f"[dim]synthetic view: {len(corpus.centres):,} centres (minilm embeddings of"
            f" generated texts), {args.n:,} vectors, made in {time.perf_counter() - t0:.1f} s;"
            f" {cosine_stats(corpus, queries, truth)}"
        )
        search_rows: list[SearchRow] = []
        loads: list[tuple[str, str]] = []
        if pg is not None:
            found, done = search_postgres(args, pg, root, embedder, corpus, queries, truth)
            search_rows += found
            loads += done
        found, done = search_sqlite(args, root, embedder, corpus, queries, truth)
        search_rows += found
        loads += done

        table = Table(title=f"Loading the view ({args.n:,} rows, {embedder.dim} dims)")
        table.add_column("what")
        table.add_column("time", justify="right")
        for what, value in loads:
            table.add_row(what, value)
        console.print(table)
        table = Table(
            title=f"Search, k={K}, {args.queries} queries near the data, at {args.n:,} vectors"
            " (recall@10 against exact numpy search)"
        )
        for column in ("search", "p50 ms", "p99 ms", "recall@10", "note"):
            table.add_column(column, justify="left" if column in ("search", "note") else "right")
        for row in search_rows:
            table.add_row(
                row.what,
                f"{row.p50:.2f}",
                f"{row.p99:.2f}",
                "" if row.recall is None else f"{row.recall:.3f}",
                row.note,
            )
        console.print(table)

        console.print(
            f"[bold]2. Memory projection throughput[/] ({args.runs:,} runs, {args.events_per_run}"
            f" events a run, {BATCH_EVENTS} events a batch)"
        )
        folds = throughput(args, pg, root)
        table = Table(
            title=f"Memory projection: {args.runs:,} runs = {2 * args.runs:,} texts, one"
            f" transaction per {BATCH_EVENTS}-event batch"
            f" ({BATCH_EVENTS // args.events_per_run} runs); baselines on the same texts and rows"
        )
        for column in (
            "backend",
            "embedder",
            "runs/s",
            "texts/s",
            "embed s (texts/s)",
            "write s (rows/s)",
            "bare embedder texts/s",
            "raw executemany rows/s",
            *(["raw COPY rows/s"] if pg is not None else []),
            f">= {TARGET_RUNS_S:.0f} runs/s",
        ):
            table.add_column(
                column, justify="left" if column in ("backend", "embedder") else "right"
            )
        for f in folds:
            table.add_row(
                f.backend,
                f.embedder,
                f"{f.runs_s:,.0f}",
                f"{f.texts / f.total_s:,.0f}",
                f"{f.embed_s:.2f} ({f.texts / f.embed_s:,.0f})",
                f"{f.write_s:.2f} ({f.texts / f.write_s:,.0f})",
                f"{f.bare_texts_s:,.0f}",
                f"{f.raw['executemany']:,.0f}",
                *([f"{f.raw['COPY']:,.0f}" if "COPY" in f.raw else "-"] if pg is not None else []),
                verdict(f.runs_s >= TARGET_RUNS_S),
            )
        console.print(table)

        table = Table(title="Targets")
        for column in ("target", "measured", "result", "note"):
            table.add_column(column, justify="right" if column == "result" else "left")
        target = (
            f"search p50 <= {TARGET_P50_MS:g} ms, recall@10 >= {TARGET_RECALL}, {args.n:,} rows"
        )
        for row in search_rows:
            hnsw = row.what == f"PostgreSQL HNSW, ef_search {args.ef_search}"
            if hnsw or row.what == "SQLite, numpy exact":
                ok = row.p50 <= TARGET_P50_MS and (row.recall or 0) >= TARGET_RECALL
                table.add_row(
                    f"{target}: {row.what}",
                    f"p50 {row.p50:.2f} ms, recall@10 {row.recall:.3f}",
                    verdict(ok),
                    "the setting's default ef_search" if hnsw else "exact",
                )
        if pg is None:
            table.add_row(f"{target}: PostgreSQL HNSW", "skipped (--no-postgres)", "", "")
        for f in folds:
            if f.embedder == DEFAULT_EMBEDDER:
                table.add_row(
                    f"memory projection >= {TARGET_RUNS_S:.0f} runs/s"
                    f" ({2 * TARGET_RUNS_S:.0f} texts/s): {f.backend}, {f.embedder}",
                    f"{f.runs_s:,.0f} runs/s ({f.texts / f.total_s:,.0f} texts/s)",
                    verdict(f.runs_s >= TARGET_RUNS_S),
                    f"embedding {f.embed_s / f.total_s:.0%} of the time; the bare embedder"
                    f" alone: {f.bare_texts_s / 2:,.0f} runs/s",
                )
        console.print(table)
        console.print(
            f"[dim]total {time.perf_counter() - started:.0f} s; load average now"
            f" {os.getloadavg()[0]:.2f} (other processes on these CPUs skew every figure)"
        )
    finally:
        if pg is not None:
            pg.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/memory.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=100_000, help="Stored vectors to search.")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--exact-queries",
        type=int,
        default=50,
        help="Queries of the slower searches (PostgreSQL exact scan, filters).",
    )
    parser.add_argument("--ef-search", type=int, default=100, help="hnsw.ef_search (setting).")
    parser.add_argument("--centres", type=int, default=2000, help="Clusters (embedded texts).")
    parser.add_argument(
        "--append", type=int, default=2000, help="Rows inserted into the indexed table after."
    )
    parser.add_argument(
        "--maintenance-work-mem", default="1GB", help="For the HNSW build (pgvector's advice)."
    )
    parser.add_argument("--runs", type=int, default=1000, help="Runs through the projection.")
    parser.add_argument("--events-per-run", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    args = parser.parse_args(argv)
    if args.events_per_run < 2:
        parser.error("--events-per-run is at least 2 (the request and the completion)")
    configure_logging("console", "WARNING")
    root = Path(tempfile.mkdtemp(prefix="agentledger-memory-bench-"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

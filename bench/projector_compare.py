"""Our projector against eventsourcing's `ProjectionRunner`, on PostgreSQL, in one run
(issue 7 item 7).

    python bench/projector_compare.py [--runs 1500] [--live-runs 300] [--rate 40]

What it does, all against one embedded PostgreSQL (or AGENTLEDGER_POSTGRES_DSN):
1. records `--runs` calculator runs (8 events each) with the real runner;
2. rebuild: folds the whole log into the runs view, (a) with our `Projector.rebuild`
   (only the `runs` projection), (b) with a `ProjectionRunner` over a `Projection` that
   folds the same events with the same fold code (`RunsProjection.apply_batch`) into an
   identical table `es_runs`, its tracking in a `PostgresTrackingRecorder` table, view row
   and tracking row in one transaction per event (the runner hands events one at a time);
3. live lag: writers record `--live-runs` runs at `--rate` runs/s (concurrent saves from
   4 store threads) while one consumer runs; for every save, the time from the save's
   return (its commit) to the consumer's tracking row covering it (polled every 2 ms);
   with eventsourcing's db functions on (our default) and off (LOCK TABLE per insert);
   afterwards each view is checked against the event store (runs whose row is behind);
4. out-of-order commit: two transactions insert events the way the db function does (no
   table lock); the lower id commits 1 s after the higher one; does each consumer see it?
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402
from eventsourcing.persistence import Tracking  # noqa: E402
from eventsourcing.postgres import PostgresTrackingRecorder  # noqa: E402
from eventsourcing.projection import Projection as EsProjection  # noqa: E402
from eventsourcing.projection import ProjectionRunner  # noqa: E402
from eventsourcing.utils import resolve_topic  # noqa: E402
from psycopg.rows import tuple_row  # noqa: E402
from psycopg.sql import SQL  # noqa: E402

from agentledger.domain.rejection import TaskRejection  # noqa: E402
from agentledger.domain.run import AgentRun  # noqa: E402
from agentledger.domain.tasks import RunAgent  # noqa: E402
from agentledger.handlers.catalog import Catalog  # noqa: E402
from agentledger.handlers.projector import Projector  # noqa: E402
from agentledger.handlers.runner import AgentRunner  # noqa: E402
from agentledger.infra.event_store import AsyncEventStore, EventStore, _Ledger, store_env  # noqa: E402
from agentledger.infra.logging import configure_logging  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402
from agentledger.infra.view_store import PostgresViewStore, _PostgresCursor  # noqa: E402
from agentledger.projections.base import PLAIN  # noqa: E402
from agentledger.projections.runs import RunsProjection  # noqa: E402

CATALOG = ROOT / "catalog" / "example.toml"
EVENTS = "agentledger_events"
CHANNEL = "agentledger_events"


# --- eventsourcing glue start (counted as "lines of code involved") -----------------
class _Renamed:
    """Our ViewCursor, writing `es_runs` instead of `al_runs` (same fold code)."""

    def __init__(self, cursor: _PostgresCursor) -> None:
        self._c = cursor

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return self._c.execute(sql.replace("al_runs", "es_runs"), params)

    def executemany(self, sql: str, params: Any, /) -> Any:
        return self._c.executemany(sql.replace("al_runs", "es_runs"), params)

    def fetchone(self) -> Any:
        return self._c.fetchone()

    def fetchall(self) -> Any:
        return self._c.fetchall()


class EsRunsView(PostgresTrackingRecorder):
    """The runs table and its tracking record, written in one transaction."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._fold = RunsProjection(PLAIN)
        for ddl in RunsProjection.ddl:
            self.sql_create_statements.append(SQL(ddl.replace("al_runs", "es_runs")))  # type: ignore[arg-type]

    def fold(self, event: object, tracking: Tracking) -> None:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            self._fold.apply_batch([event], _Renamed(_PostgresCursor(curs)))
            self._insert_tracking(curs, tracking)  # type: ignore[arg-type]


class EsRuns(EsProjection[EsRunsView]):
    name = "esruns"
    topics: tuple[str, ...] = ()  # set from the store's topics (AgentRun + TaskRejected)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.fold(domain_event, tracking)


def start_es_runner(settings: Settings) -> ProjectionRunner[Any, EsRunsView]:
    runner = ProjectionRunner(
        application_class=_Ledger,
        projection_class=EsRuns,
        view_class=EsRunsView,
        env=store_env(settings),
    )
    return runner.__enter__()


# --- eventsourcing glue end -----------------------------------------------------------


def run_topics(dsn: str) -> tuple[str, ...]:
    with psycopg.connect(dsn) as conn:
        topics = [r[0] for r in conn.execute(f"SELECT DISTINCT topic FROM {EVENTS}")]
    kinds = (AgentRun.Event, TaskRejection.TaskRejected)
    return tuple(t for t in topics if issubclass(resolve_topic(t), kinds))


class TimedStore(EventStore):
    """An EventStore noting (last notification id, commit time) of every save."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.saves: list[tuple[int, float]] = []
        self._lock = threading.Lock()

    def save(self, *objs: Any) -> int | None:
        last = super().save(*objs)
        at = time.perf_counter()
        if last is not None:
            with self._lock:
                self.saves.append((last, at))
        return last


async def record(store: EventStore, count: int, prefix: str, rate: float | None) -> float:
    """`count` calculator runs; paced at `rate` runs/s, or 16 at a time if None."""
    catalog = Catalog.load(CATALOG)
    runner = AgentRunner(store=AsyncEventStore(store, 4), catalog=catalog)

    def task(i: int) -> RunAgent:
        return RunAgent(task_id=f"{prefix}{i}", agent="calculator", prompt=f"add {i} and 7")

    started = time.perf_counter()
    if rate is None:
        for base in range(0, count, 16):
            await asyncio.gather(
                *(
                    runner.run(task(i), first_delivery=True)
                    for i in range(base, min(count, base + 16))
                )
            )
    else:
        pending = []
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            pending.append(asyncio.create_task(runner.run(task(i), first_delivery=True)))
        await asyncio.gather(*pending)
    return time.perf_counter() - started


def tracking_sql(which: str) -> str:
    if which == "ours":
        return "SELECT notification_id FROM al_tracking WHERE projection = 'runs'"
    return "SELECT max(notification_id) FROM esruns_tracking WHERE application_name = 'agentledger'"


class LagWatch:
    """Polls a consumer's tracking row every 2 ms; notes when each position was seen."""

    def __init__(self, dsn: str, which: str) -> None:
        self.dsn, self.sql = dsn, tracking_sql(which)
        self.seen: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            last = -1
            while not self.stop.is_set():
                row = conn.execute(self.sql).fetchone()
                position = (row[0] if row else None) or 0
                if position != last:
                    self.seen.append((position, time.perf_counter()))
                    last = position
                time.sleep(0.002)

    def lags_ms(self, saves: list[tuple[int, float]]) -> tuple[list[float], int]:
        lags, unseen = [], 0
        for nid, committed in saves:
            at = next((t for pos, t in self.seen if pos >= nid), None)
            if at is None:
                unseen += 1
            else:
                lags.append(max(0.0, at - committed) * 1000)
        return lags, unseen


def current(dsn: str, which: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(tracking_sql(which)).fetchone()
    return (row[0] if row else None) or 0


def wait_for(dsn: str, which: str, target: int, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if current(dsn, which) >= target:
            return True
        time.sleep(0.005)
    return False


def wrong_rows(dsn: str, table: str) -> int:
    """Runs whose view row is missing or behind the run's last event in the store."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT originator_id::text AS id, max(originator_version) AS v"
            f" FROM {EVENTS} WHERE topic LIKE '%%AgentRun%%' GROUP BY originator_id) s"
            f" LEFT JOIN {table} r ON r.run_id = s.id WHERE r.version IS NULL OR r.version < s.v"
        ).fetchone()
    return int(row[0]) if row else -1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def our_projector(settings: Settings) -> tuple[Projector, PostgresViewStore, EventStore]:
    store = EventStore(settings)
    views = PostgresViewStore(settings.postgres_dsn.get_secret_value())  # type: ignore[union-attr]
    return Projector(store, views, [RunsProjection(views.sealer)], batch=500), views, store


def live_phase(
    settings: Settings, dsn: str, which: str, count: int, rate: float, tag: str
) -> dict[str, Any]:
    """Writers at `rate` while one consumer (already caught up) runs."""
    writer = TimedStore(settings)
    handle = runner = None
    if which == "ours":
        projector, views, pstore = our_projector(settings)
        projector.run_once()
        handle = projector.start_in_thread()
    else:
        runner = start_es_runner(settings)
    wait_for(dsn, which, writer.max_notification_id(), 120)
    watch = LagWatch(dsn, which)
    elapsed = asyncio.run(record(writer, count, f"{tag}-", rate))
    head = writer.max_notification_id()
    caught = wait_for(dsn, which, head, 30)
    time.sleep(0.05)
    watch.stop.set()
    watch.thread.join()
    if handle is not None:
        handle.stop()
        views.close()
        pstore.close()
    if runner is not None:
        runner.stop()
        runner.__exit__(None, None, None)
    lags, unseen = watch.lags_ms(writer.saves)
    writer.close()
    return {
        "saves": len(writer.saves),
        "runs_per_s": count / elapsed,
        "p50": pct(lags, 0.5),
        "p95": pct(lags, 0.95),
        "max": max(lags) if lags else float("nan"),
        "unseen": unseen,
        "caught_up": caught,
    }


def out_of_order_check(dsn: str) -> dict[str, Any]:
    """Two inserts as eventsourcing's db function does them (no table lock): id A drawn
    first, B second; B commits, A commits 1 s later. Both consumers run meanwhile."""
    settings = Settings(postgres_dsn=dsn)
    projector, views, pstore = our_projector(settings)
    handle = projector.start_in_thread()
    runner = start_es_runner(settings)
    try:
        with psycopg.connect(dsn) as conn:
            topic, state = conn.execute(
                f"SELECT topic, state FROM {EVENTS} WHERE topic LIKE '%%RunRequested%%' LIMIT 1"
            ).fetchone()  # type: ignore[misc]
        head = pstore.max_notification_id()
        wait_for(dsn, "ours", head, 30)
        wait_for(dsn, "es", head, 30)
        insert = (
            f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state)"
            " VALUES (%s, 1, %s, %s) RETURNING notification_id"
        )
        a_id, b_id = uuid.uuid4(), uuid.uuid4()
        late = psycopg.connect(dsn)
        early = psycopg.connect(dsn)
        a = late.execute(insert, (a_id, topic, state)).fetchone()[0]  # type: ignore[index]
        b = early.execute(insert, (b_id, topic, state)).fetchone()[0]  # type: ignore[index]
        early.execute(f"NOTIFY {CHANNEL}")
        early.commit()
        time.sleep(1.0)
        while_open = {w: current(dsn, w) for w in ("ours", "es")}
        late.execute(f"NOTIFY {CHANNEL}")
        late.commit()
        early.close()
        late.close()
        wait_for(dsn, "ours", b, 10)
        wait_for(dsn, "es", b, 10)
        time.sleep(1.5)  # let both consumers look again (es: on its next NOTIFY only)
        with psycopg.connect(dsn) as conn:

            def has(table: str, run: uuid.UUID) -> bool:
                return (
                    conn.execute(f"SELECT 1 FROM {table} WHERE run_id = %s", (str(run),)).fetchone()
                    is not None
                )

            seen = {
                "ours": (has("al_runs", a_id), has("al_runs", b_id)),
                "es": (has("es_runs", a_id), has("es_runs", b_id)),
            }
        return {"a": a, "b": b, "position_while_a_open": while_open, "seen_a_b": seen}
    finally:
        handle.stop()
        runner.stop()
        runner.__exit__(None, None, None)
        views.close()
        pstore.close()


def lock_serialises(dsn: str) -> float:
    """With db functions off each insert takes LOCK TABLE ... EXCLUSIVE: a second writer
    waits for the first to commit (how long it waited, s; ~1 means serialised)."""
    first = psycopg.connect(dsn)
    first.execute(f"LOCK TABLE {EVENTS} IN EXCLUSIVE MODE")
    waited: list[float] = []

    def second() -> None:
        with psycopg.connect(dsn) as conn:
            t = time.perf_counter()
            conn.execute(f"LOCK TABLE {EVENTS} IN EXCLUSIVE MODE")
            waited.append(time.perf_counter() - t)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)
    first.commit()
    first.close()
    thread.join()
    return waited[0]


def code_lines(path: Path, start: str | None = None, end: str | None = None) -> int:
    """Lines of code (no blank, comment or docstring lines), optionally between markers."""
    text = path.read_text()
    lines = text.splitlines()
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
        value = getattr(node, "value", None)
        if (  # attribute docstrings
            isinstance(node, ast.Expr)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            docs.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lo, hi = 1, len(lines)
    if start and end:
        lo = next(i for i, line in enumerate(lines, 1) if start in line)
        hi = next(i for i, line in enumerate(lines, 1) if end in line)
    return sum(
        1
        for i in range(lo, hi + 1)
        if i not in docs and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1500, help="Runs recorded before the rebuild.")
    parser.add_argument("--live-runs", type=int, default=300, help="Runs per live-lag phase.")
    parser.add_argument("--rate", type=float, default=40.0, help="Live writers, runs/s.")
    args = parser.parse_args(argv)
    configure_logging("console", "WARNING")
    postgres = None
    pg_root = Path(tempfile.mkdtemp(prefix="agentledger-bench-projcmp-"))
    external = os.environ.get("AGENTLEDGER_POSTGRES_DSN")
    try:
        if external:
            from support.postgres_server import create_database_on

            dsn = create_database_on(external, f"bench_{uuid.uuid4().hex[:8]}")
        else:
            from support.postgres_server import EmbeddedPostgres

            postgres = EmbeddedPostgres(pg_root / "data").start()
            dsn = postgres.create_database("bench_projcmp")
        settings_on = Settings(data_dir=pg_root, postgres_dsn=dsn, postgres_db_functions=True)
        settings_off = Settings(data_dir=pg_root, postgres_dsn=dsn, postgres_db_functions=False)

        store = EventStore(settings_on)
        fill_s = asyncio.run(record(store, args.runs, "fill-", None))
        head = store.max_notification_id()
        store.close()
        print(f"filled: {args.runs} runs, {head} events in {fill_s:.1f} s", flush=True)
        EsRuns.topics = run_topics(dsn)

        # Rebuild: ours.
        projector, views, pstore = our_projector(settings_on)
        projector.ensure()
        t = time.perf_counter()
        folded = projector.rebuild("runs")
        ours_rebuild = folded / (time.perf_counter() - t)
        views.close()
        pstore.close()
        print(f"ours rebuild: {folded} notifications, {ours_rebuild:,.0f}/s", flush=True)
        # The same with one event per transaction, as the ProjectionRunner does.
        store1 = EventStore(settings_on)
        views1 = PostgresViewStore(dsn)
        one = Projector(store1, views1, [RunsProjection(views1.sealer)], batch=1)
        t = time.perf_counter()
        folded1 = one.rebuild("runs")
        ours_rebuild_1 = folded1 / (time.perf_counter() - t)
        views1.close()
        store1.close()
        print(f"ours rebuild, batch=1: {ours_rebuild_1:,.0f}/s", flush=True)

        # Rebuild: eventsourcing's runner on a fresh view (until its tracking reaches head).
        t = time.perf_counter()
        runner = start_es_runner(settings_on)
        ok = wait_for(dsn, "es", head, 600)
        if not ok:
            print("es runner error:", repr(runner._thread_error), flush=True)
        es_rebuild = head / (time.perf_counter() - t)
        runner.stop()
        runner.__exit__(None, None, None)
        print(f"es rebuild: caught up={ok}, {es_rebuild:,.0f}/s", flush=True)

        live: dict[tuple[str, str], dict[str, Any]] = {}
        for mode, settings in (("on", settings_on), ("off", settings_off)):
            for which in ("ours", "es"):
                r = live_phase(settings, dsn, which, args.live_runs, args.rate, f"{which}-{mode}")
                live[(which, mode)] = r
                print(f"live {which} db-functions {mode}: {r}", flush=True)
        # Both consumers once more over the whole log (each missed the other's phases),
        # then compare each view with the store: a row behind is an event skipped.
        projector, views, pstore = our_projector(settings_on)
        while projector.run_once():
            pass
        views.close()
        pstore.close()
        runner = start_es_runner(settings_on)
        with psycopg.connect(dsn) as conn:
            last_run_event = conn.execute(
                f"SELECT max(notification_id) FROM {EVENTS} WHERE topic = ANY(%s)",
                (list(EsRuns.topics),),
            ).fetchone()[0]  # type: ignore[index]
        wait_for(dsn, "es", last_run_event, 120)
        runner.stop()
        runner.__exit__(None, None, None)
        wrong = {"ours": wrong_rows(dsn, "al_runs"), "es": wrong_rows(dsn, "es_runs")}
        print(f"runs behind the store after the live phases: {wrong}", flush=True)

        ooo = out_of_order_check(dsn)
        print(f"out-of-order check: {ooo}", flush=True)
        waited = lock_serialises(dsn)
        print(
            f"db functions off: second LOCK TABLE waited {waited:.2f} s for the first", flush=True
        )
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)

    ours_files = [
        "handlers/projector.py",
        "infra/view_store.py",
        "handlers/log_gaps.py",
        "infra/poison_log.py",
    ]
    ours_loc = sum(code_lines(ROOT / f) for f in ours_files)
    es_loc = code_lines(Path(__file__), "eventsourcing glue start", "eventsourcing glue end")
    print(f"(ours with batch=1, one event per transaction: {ours_rebuild_1:,.0f} notif/s rebuild)")
    ooo_ok = {w: ooo["seen_a_b"][w] == (True, True) for w in ("ours", "es")}
    print()
    print("command: python bench/projector_compare.py " + " ".join(sys.argv[1:]))
    print(
        f"store: {args.runs} runs / {head} events; live: {args.live_runs} runs at {args.rate:g} runs/s"
        " per phase, 4 store threads; lag = save return -> tracking row covers it (2 ms poll)"
    )
    print(
        "| approach | rebuild notif/s | lag p50/p95 ms, db fn on | lag p50/p95 ms, db fn off"
        " | runs behind after live | code lines | late-committed lower id applied |"
    )
    print("|---|---|---|---|---|---|---|")
    for which, label, rebuild, loc in (
        ("ours", "ours (Projector + LogGaps)", ours_rebuild, f"{ours_loc} (4 files)"),
        ("es", "eventsourcing ProjectionRunner", es_rebuild, f"{es_loc} glue + library"),
    ):
        on, off = live[(which, "on")], live[(which, "off")]
        print(
            f"| {label} | {rebuild:,.0f} | {on['p50']:.1f} / {on['p95']:.1f} (max {on['max']:.0f},"
            f" unseen {on['unseen']}) | {off['p50']:.1f} / {off['p95']:.1f} (max {off['max']:.0f},"
            f" unseen {off['unseen']}) | {wrong[which]} | {loc} | {'yes' if ooo_ok[which] else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

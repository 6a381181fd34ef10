#!/usr/bin/env python
"""Chaos run: tasks through real `agentledger worker` / `agentledger project` processes on
PostgreSQL while workers are SIGKILLed and nats-server and PostgreSQL are restarted.

`python bench/chaos.py [--tasks 1000] [--rate 20] [--json]` starts an embedded nats-server
and PostgreSQL, two worker processes and a projector, and offers the tasks at a steady
rate: `effect` runs (model -> tool -> model, each model call and tool effect journaled),
`calculator` runs and the turns of several `notes` sessions (a turn is published only
once the previous turn's outcome has arrived). Meanwhile it SIGKILLs a worker's process
group five times (restarting it each time), restarts nats-server once (same store and
port) and PostgreSQL once. Then it checks, and exits non-zero unless all hold:

- every published task has an outcome (live on `<prefix>.results.>`, else read back from
  the results stream), and no task got two different outcomes;
- no tool effect and no model step happened twice, except a step that was pending when a
  worker was SIGKILLed (the README: "at-least-once while in flight"). Each worker process
  journals to a file of its own, so every execution names its process: a repeated step
  counts as "repeated after a SIGKILL mid-call" only when every execution but one was
  made by a different process that was SIGKILLed while the step was pending (its
  prerequisite recorded before the kill, its result after it); any other repeat is
  unexplained. A kill waits (at most 3 s) for its victim to be inside a model call;
- no run recorded a step twice; every session's conversation view holds exactly the turns
  whose outcome was `completed`, in order, and each recall turn remembers every note;
- the projector caught up, and the views equal a rebuild (`agentledger rebuild all`).

tests/integration/test_chaos_small.py runs a small version (`run_chaos`) in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# tests/ holds the journaling agents and the process/PostgreSQL helpers (support.*).
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

import nats  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js import JetStreamContext  # noqa: E402

from agentledger.domain.ids import run_id_for  # noqa: E402
from agentledger.domain.run import AgentRun  # noqa: E402
from agentledger.domain.subjects import (  # noqa: E402
    dead_stream,
    results_stream,
    results_subject,
    task_subject,
)
from agentledger.domain.tasks import RunAgent, RunOutcome  # noqa: E402
from agentledger.handlers.queries import QueryError, answer  # noqa: E402
from agentledger.infra.event_store import EventStore  # noqa: E402
from agentledger.infra.nats import nats_connect_kwargs  # noqa: E402
from agentledger.infra.nats_server import EmbeddedNats  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402
from agentledger.infra.view_store import view_store_for  # noqa: E402
from agentledger.projections.views import ALL_PROJECTIONS  # noqa: E402
from support.agents import JOURNAL_ENV, MODEL_PAUSE_ENV, write_catalog  # noqa: E402
from support.harness import (  # noqa: E402
    cli,
    settings_env,
    start_worker_process,
    table_contents,
    wait_for,
)
from support.postgres_server import EmbeddedPostgres  # noqa: E402

__all__ = ["ChaosPlan", "ChaosReport", "run_chaos"]

KILL, NATS_RESTART, POSTGRES_RESTART = "worker SIGKILL", "nats-server restart", "PostgreSQL restart"


@dataclass(frozen=True, kw_only=True)
class ChaosPlan:
    """What to run and what to break."""

    tasks: int = 1000
    rate: float = 20.0
    """Tasks offered per second (the run lasts about tasks / rate seconds)."""
    session_share: float = 0.15
    """Share of the tasks that are `notes` session turns."""
    sessions: int = 10
    effect_share: float = 0.6
    """Share of the other tasks that are `effect` runs (the rest are `calculator`)."""
    workers: int = 2
    worker_kills: int = 5
    nats_restarts: int = 1
    postgres_restarts: int = 1
    nats_down_s: float = 1.0
    postgres_down_s: float = 3.0
    """Well under `store_retry_s` (20 s): a save caught by the outage is retried with the
    same events until the database is back, so no tool has to run again."""
    model_pause_s: float = 0.05
    """The effect model's first call sleeps this long: runs stay in flight a little."""
    ack_wait_s: float = 5.0
    max_deliveries: int = 50
    timeout_s: float = 300.0
    """How long to wait for outcomes after the last planned publish."""
    seed: int = 7

    @property
    def window_s(self) -> float:
        return self.tasks / self.rate


@dataclass(frozen=True, kw_only=True)
class PlannedTask:
    task: RunAgent
    at_s: float
    """Offset from the start at which it is published (a session turn also waits for the
    previous turn's outcome)."""
    note: str | None = None
    """The note a `remember` turn saves; None for a recall turn and other agents."""


@dataclass(kw_only=True)
class Disruption:
    kind: str
    target: str
    planned_s: float
    done_s: float | None = None
    took_s: float | None = None
    before: datetime | None = None
    """Wall clock just before the kill (kills only)."""
    after: datetime | None = None
    """Wall clock once the killed process group was reaped."""
    journal: str | None = None
    """The killed process's own journal (each worker process journals to its own file)."""
    in_model_call: int = 0
    """Effect runs the killed process was inside the first model call of."""


@dataclass(kw_only=True)
class Repeats:
    """Steps of one kind (tool effects or model steps) executed more than once."""

    executions: int = 0
    duplicated: int = 0
    """Distinct steps executed more than once."""
    after_sigkill: int = 0
    """Of those, steps whose every repeat follows a SIGKILL while the step was pending."""
    explained: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ChaosReport:
    plan: dict[str, Any]
    tasks_planned: int = 0
    tasks_published: int = 0
    with_outcome: int = 0
    without_outcome: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    outcome_messages: int = 0
    read_from_stream: list[str] = field(default_factory=list)
    """Tasks whose outcome this client missed live (published while it was reconnecting)
    and read back from the results stream."""
    changed_outcomes: list[str] = field(default_factory=list)
    publish_retries: int = 0
    duplicate_acks: int = 0
    tool_effects: Repeats = field(default_factory=Repeats)
    model_steps: Repeats = field(default_factory=Repeats)
    recorded_twice: list[str] = field(default_factory=list)
    sessions: int = 0
    session_turns: int = 0
    lost_turns: list[str] = field(default_factory=list)
    recall_mismatches: list[str] = field(default_factory=list)
    projector_caught_up: bool = False
    views_equal_rebuild: bool = False
    dead_letters: int = 0
    disruptions: list[Disruption] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    """First publish to last outcome."""
    total_s: float = 0.0

    def done(self, kind: str) -> int:
        return sum(1 for d in self.disruptions if d.kind == kind and d.done_s is not None)

    def problems(self) -> list[str]:
        """Every must-be-zero figure that is not zero, in words."""
        found = []
        checks = [
            (self.without_outcome, "tasks without an outcome"),
            (self.changed_outcomes, "tasks with two different outcomes"),
            (self.tool_effects.unexplained, "unexplained duplicated tool effects"),
            (self.model_steps.unexplained, "unexplained duplicated model steps"),
            (self.recorded_twice, "runs that recorded a step twice"),
            (self.lost_turns, "sessions with lost turns"),
            (self.recall_mismatches, "recall turns that forgot a note"),
            (self.unexpected_exits, "processes that died on their own"),
        ]
        for items, what in checks:
            if items:
                found.append(f"{len(items)} {what}: {', '.join(items[:10])}")
        if self.tasks_published < self.tasks_planned:
            found.append(f"{self.tasks_planned - self.tasks_published} tasks never published")
        if not self.projector_caught_up:
            found.append("the projector did not catch up")
        if not self.views_equal_rebuild:
            found.append("the views differ from a rebuild")
        undone = [d for d in self.disruptions if d.done_s is None]
        if undone:
            found.append(f"{len(undone)} disruptions not done: {[d.kind for d in undone]}")
        return found


# -- plan -----------------------------------------------------------------------------


def plan_tasks(plan: ChaosPlan) -> list[PlannedTask]:
    """The tasks with their publish times, spread evenly over the window in a seeded
    shuffle (a session's turns keep their order)."""
    rng = random.Random(plan.seed)
    turns_total = min(plan.tasks, max(2 * plan.sessions, round(plan.tasks * plan.session_share)))
    sessions = min(plan.sessions, turns_total // 2)
    entries: list[tuple[str, RunAgent, str | None]] = []
    for s in range(sessions):
        count = turns_total // sessions + (1 if s < turns_total % sessions else 0)
        session_id = f"chaos-s{s:02d}"
        for k in range(1, count + 1):
            recall = k > 1 and (k % 4 == 0 or k == count)
            note = None if recall else f"n{s}x{k}"
            prompt = "what do you remember?" if recall else f"remember {note}"
            task_id = f"notes-s{s:02d}-t{k:03d}"
            task = RunAgent(task_id=task_id, agent="notes", prompt=prompt, session_id=session_id)
            entries.append((session_id, task, note))
    for i in range(plan.tasks - len(entries)):
        agent = "effect" if rng.random() < plan.effect_share else "calculator"
        task_id = f"{agent}-{i:05d}"
        prompt = f"job-{task_id}" if agent == "effect" else f"add {i} and {rng.randint(1, 99)}"
        entries.append(("", RunAgent(task_id=task_id, agent=agent, prompt=prompt), None))
    rng.shuffle(entries)
    slots = [i / plan.rate for i in range(len(entries))]
    # Give each session its slots in turn order.
    by_session: dict[str, list[int]] = {}
    for index, (session_id, _, _) in enumerate(entries):
        if session_id:
            by_session.setdefault(session_id, []).append(index)
    ordered = {sid: sorted((e for e in entries if e[0] == sid), key=_turn) for sid in by_session}
    for sid, indexes in by_session.items():
        for index, entry in zip(indexes, ordered[sid], strict=True):
            entries[index] = entry
    return [
        PlannedTask(task=task, at_s=slot, note=note)
        for slot, (_, task, note) in zip(slots, entries, strict=True)
    ]


def _turn(entry: tuple[str, RunAgent, str | None]) -> str:
    return entry[1].task_id


def plan_disruptions(plan: ChaosPlan) -> list[Disruption]:
    """Kills and restarts at evenly spaced moments of the window: kills spread over it,
    the nats-server restarts near its first third, PostgreSQL's near its second."""
    wanted: list[tuple[float, str, str]] = []
    for j in range(plan.worker_kills):
        wanted.append(((j + 0.5) / plan.worker_kills, KILL, f"worker-{j % plan.workers}"))
    for j in range(plan.nats_restarts):
        wanted.append(((j + 1 / 3) / plan.nats_restarts, NATS_RESTART, "nats-server"))
    for j in range(plan.postgres_restarts):
        wanted.append(((j + 2 / 3) / plan.postgres_restarts, POSTGRES_RESTART, "postgres"))
    wanted.sort()
    return [
        Disruption(kind=kind, target=target, planned_s=(i + 1) / (len(wanted) + 1) * plan.window_s)
        for i, (_, kind, target) in enumerate(wanted)
    ]


# -- processes ------------------------------------------------------------------------


class Fleet:
    """The worker and projector subprocesses (each in its own process group)."""

    def __init__(self, env: dict[str, str], logs: Path, workers: int) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.names = [f"worker-{i}" for i in range(workers)]
        self.journals = logs / "journals"
        """One journal per worker process (`worker-0.2.log`: worker-0's second process),
        so a journal line names the process that executed it."""
        self.journal_of: dict[str, Path] = {}
        self.lock = asyncio.Lock()
        """Held while a process is killed or started, so the watch does not restart it."""

    def start(self, name: str) -> None:
        """Start `name` and return once it serves (blocking)."""
        log = self.logs / f"{name}.log"
        if name.startswith("worker"):
            self.journals.mkdir(exist_ok=True)
            generation = 1 + sum(1 for f in self.journals.glob(f"{name}.*.log"))
            journal = self.journals / f"{name}.{generation}.log"
            journal.touch()
            self.journal_of[name] = journal
            env = {**self.env, JOURNAL_ENV: str(journal)}
            self.processes[name] = start_worker_process(env, log, ready_timeout=120)
            return
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from agentledger.handlers.cli import main; main()",
                    "project",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{log.read_text()[-3000:]}")
            return b"projector started" in log.read_bytes()[offset:]

        wait_for(ready, 120, f"{name} to start", every=0.1)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def dead(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.processes.items() if p.poll() is not None]

    def stop(self) -> None:
        """SIGTERM (workers drain) and wait; SIGKILL what does not stop."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# -- outcomes -------------------------------------------------------------------------


class OutcomeBook:
    """Outcomes as they arrive on `<prefix>.results.>`, read back from the results stream
    for a task whose outcome was published while this client was reconnecting."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.received: dict[str, list[RunOutcome]] = {}
        self.from_stream: set[str] = set()
        self.last_at = 0.0
        self._arrived: dict[str, asyncio.Event] = {}

    def _event(self, task_id: str) -> asyncio.Event:
        return self._arrived.setdefault(task_id, asyncio.Event())

    def record(self, outcome: RunOutcome) -> None:
        assert outcome.task_id is not None
        self.received.setdefault(outcome.task_id, []).append(outcome)
        self.last_at = time.monotonic()
        self._event(outcome.task_id).set()

    async def on_message(self, msg: Msg) -> None:
        self.record(RunOutcome.model_validate_json(msg.data))

    async def read_stored(self, js: JetStreamContext, task_id: str) -> bool:
        try:
            msg = await js.get_last_msg(
                results_stream(self.prefix), results_subject(self.prefix, task_id)
            )
        except Exception:  # not there yet, or NATS is restarting
            return False
        if task_id not in self.received:
            self.from_stream.add(task_id)
            assert msg.data is not None
            self.record(RunOutcome.model_validate_json(msg.data))
        return True

    async def wait(self, js: JetStreamContext, task_id: str, deadline: float) -> bool:
        event = self._event(task_id)
        while not event.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), 3.0)
                break
            await self.read_stored(js, task_id)
        return event.is_set()


@dataclass(kw_only=True)
class Publisher:
    js: JetStreamContext
    prefix: str
    retries: int = 0
    duplicate_acks: int = 0
    published: list[str] = field(default_factory=list)

    async def publish(self, task: RunAgent, deadline: float) -> bool:
        """JetStream publish with `Nats-Msg-Id` = task id, retried (same id) while NATS is
        away; a retry of a publish that was stored is acked as a duplicate."""
        body = task.model_dump_json(exclude_none=True).encode()
        while True:
            try:
                ack = await self.js.publish(
                    task_subject(self.prefix, task.agent),
                    body,
                    timeout=2.0,
                    headers={"Nats-Msg-Id": task.task_id},
                )
            except Exception:  # timeout, no responders, connection lost: NATS restarting
                self.retries += 1
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.5)
                continue
            self.duplicate_acks += bool(ack.duplicate)
            self.published.append(task.task_id)
            return True


# -- the run --------------------------------------------------------------------------


def _quiet(line: str) -> None:
    pass


async def run_chaos(
    plan: ChaosPlan,
    *,
    nats_server: EmbeddedNats,
    postgres: EmbeddedPostgres,
    workdir: Path,
    progress: Callable[[str], None] = _quiet,
) -> ChaosReport:
    """Run `plan` against the running servers (which it stops and starts again) with
    worker and projector subprocesses, then check what happened. `workdir` receives the
    catalog, the journal and the processes' logs."""
    started = time.monotonic()
    settings, env = await asyncio.to_thread(_prepare, plan, nats_server, postgres, workdir)
    prefix = settings.subject_prefix
    planned = plan_tasks(plan)
    report = ChaosReport(
        plan=asdict(plan), tasks_planned=len(planned), disruptions=plan_disruptions(plan)
    )
    fleet = Fleet(env, workdir, plan.workers)
    try:
        # One at a time: the first one creates the schema.
        for name in [*fleet.names, "projector"]:
            await asyncio.to_thread(fleet.start, name)
        progress(f"{plan.workers} workers and a projector up; offering {len(planned)} tasks")
        nc = await nats.connect(
            **nats_connect_kwargs(settings, "chaos-client"), error_cb=_expected_while_away
        )
        try:
            chaos = Chaos(plan, report, fleet, nats_server, postgres, progress)
            finals = await chaos.drive(nc, prefix, planned)
        finally:
            await nc.close()
        progress("outcomes in; checking the store, the journal and the views")
        report.projector_caught_up = await asyncio.to_thread(_wait_caught_up, settings, 120)
        await asyncio.to_thread(fleet.stop)
        await asyncio.to_thread(_check_store, report, settings, planned, finals, fleet.journals)
        report.views_equal_rebuild = await asyncio.to_thread(_views_equal_rebuild, settings, env)
    finally:
        await asyncio.to_thread(fleet.stop)
    report.total_s = time.monotonic() - started
    return report


async def _expected_while_away(error: Exception) -> None:
    """Connection errors while nats-server restarts are the point (the disconnect and
    reconnect are still logged); nats-py would print a traceback for each."""


def _prepare(
    plan: ChaosPlan, nats_server: EmbeddedNats, postgres: EmbeddedPostgres, workdir: Path
) -> tuple[Settings, dict[str, str]]:
    """A fresh database and subject prefix; the settings and the processes' environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = "chaos" + uuid.uuid4().hex[:8]
    settings = Settings(
        nats_url=nats_server.url,
        subject_prefix=prefix,
        postgres_dsn=postgres.create_database(prefix),
        sqlite_path=None,
        data_dir=workdir,
        catalog=str(write_catalog(workdir)),
        ack_wait_s=plan.ack_wait_s,
        max_deliveries=plan.max_deliveries,
        log_level="INFO",  # start_worker_process waits for the "worker started" line
    )
    env = settings_env(settings)
    env[MODEL_PAUSE_ENV] = str(plan.model_pause_s)
    return settings, env


class Chaos:
    """Publishes on schedule, breaks things on schedule, collects the outcomes."""

    def __init__(
        self,
        plan: ChaosPlan,
        report: ChaosReport,
        fleet: Fleet,
        nats_server: EmbeddedNats,
        postgres: EmbeddedPostgres,
        progress: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.report = report
        self.fleet = fleet
        self.nats_server = nats_server
        self.postgres = postgres
        self.progress = progress
        self.t0 = 0.0

    async def _at(self, offset: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + offset - time.monotonic()))

    async def drive(
        self, nc: Client, prefix: str, planned: list[PlannedTask]
    ) -> dict[str, RunOutcome]:
        """Run the schedule; the last outcome of each published task that has one."""
        js = nc.jetstream()
        book = OutcomeBook(prefix)
        await nc.subscribe(f"{prefix}.results.>", cb=book.on_message)
        publisher = Publisher(js=js, prefix=prefix)
        self.t0 = time.monotonic()
        deadline = self.t0 + self.plan.window_s + self.plan.timeout_s

        async def solo(item: PlannedTask) -> None:
            await self._at(item.at_s)
            await publisher.publish(item.task, deadline)

        async def session(turns: list[PlannedTask]) -> None:
            for item in turns:
                await self._at(item.at_s)
                if not await publisher.publish(item.task, deadline):
                    return
                if not await book.wait(js, item.task.task_id, deadline):
                    return  # no outcome: the later turns are not published

        sessions: dict[str, list[PlannedTask]] = {}
        for item in planned:
            if item.task.session_id is not None:
                sessions.setdefault(item.task.session_id, []).append(item)
        watcher = asyncio.create_task(self._watch())
        breaker = asyncio.create_task(self._break())
        try:
            await asyncio.gather(
                *(solo(i) for i in planned if i.task.session_id is None),
                *(session(turns) for turns in sessions.values()),
            )
            while True:
                missing = [t for t in publisher.published if t not in book.received]
                if not missing or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(2.0)
                # Outcomes published while this client was reconnecting never arrive live.
                await asyncio.gather(*(book.read_stored(js, t) for t in missing))
            await breaker
        finally:
            for task in (watcher, breaker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return await self._tally(js, prefix, book, publisher)

    async def _break(self) -> None:
        for d in self.report.disruptions:
            await self._at(d.planned_s)
            begun = time.monotonic()
            self.progress(f"{begun - self.t0:6.1f} s  {d.kind} ({d.target})")
            async with self.fleet.lock:
                if d.kind == KILL:
                    journal = self.fleet.journal_of[d.target]
                    await self._busy_moment(journal)
                    d.before = datetime.now(UTC)
                    await asyncio.to_thread(self.fleet.kill, d.target)
                    d.after = datetime.now(UTC)
                    d.journal = journal.name
                    d.in_model_call = _inside_model_call(journal)
                    await asyncio.to_thread(self.fleet.start, d.target)
                elif d.kind == NATS_RESTART:
                    server = self.nats_server
                    await asyncio.to_thread(
                        _restart, server.stop, server.start, self.plan.nats_down_s
                    )
                else:
                    postgres = self.postgres
                    await asyncio.to_thread(
                        _restart, postgres.stop, postgres.start, self.plan.postgres_down_s
                    )
            d.done_s = begun - self.t0
            d.took_s = time.monotonic() - begun

    async def _busy_moment(self, journal: Path, wait_s: float = 3.0) -> None:
        """Wait (at most `wait_s`) until the process of `journal` is inside an effect
        run's first model call, so that its kill lands mid-run, not between runs."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not _inside_model_call(journal):
            await asyncio.sleep(0.005)

    async def _watch(self) -> None:
        """A worker or the projector that dies without being killed is a finding; it is
        restarted so the run can go on."""
        while True:
            await asyncio.sleep(1.0)
            async with self.fleet.lock:
                for name, code in self.fleet.dead():
                    self.report.unexpected_exits.append(f"{name} (exit {code})")
                    self.progress(f"{name} exited on its own ({code}); restarting it")
                    await asyncio.to_thread(self.fleet.start, name)

    async def _tally(
        self, js: JetStreamContext, prefix: str, book: OutcomeBook, publisher: Publisher
    ) -> dict[str, RunOutcome]:
        report = self.report
        report.wall_s = (book.last_at or time.monotonic()) - self.t0
        report.tasks_published = len(publisher.published)
        report.publish_retries = publisher.retries
        report.duplicate_acks = publisher.duplicate_acks
        report.read_from_stream = sorted(book.from_stream)
        report.outcome_messages = sum(len(v) for v in book.received.values())
        finals: dict[str, RunOutcome] = {}
        for task_id in publisher.published:
            outcomes = book.received.get(task_id)
            if not outcomes:
                report.without_outcome.append(task_id)
                continue
            finals[task_id] = outcomes[-1]
            if len({_gist(o) for o in outcomes}) > 1:
                report.changed_outcomes.append(task_id)
        report.with_outcome = len(finals)
        report.statuses = dict(Counter(o.status for o in finals.values()))
        with contextlib.suppress(Exception):
            report.dead_letters = (await js.stream_info(dead_stream(prefix))).state.messages
        return finals


def _gist(outcome: RunOutcome) -> str:
    kind = outcome.error.kind if outcome.error else ""
    return f"{outcome.status}|{kind}|{json.dumps(outcome.output, sort_keys=True, default=str)}"


def _inside_model_call(journal: Path) -> int:
    """Effect runs whose first model call has started and whose tool has not."""
    started: set[str] = set()
    for kind, label in _journal(journal):
        if kind == "model-call-1":
            started.add(label)
        elif kind == "tool-start":
            started.discard(label)
    return len(started)


def _restart(stop: Callable[[], Any], start: Callable[[], Any], down_s: float) -> None:
    stop()
    time.sleep(down_s)
    start()


# -- checks ---------------------------------------------------------------------------


def _wait_caught_up(settings: Settings, timeout: float) -> bool:
    """Has every projection applied the log's last event (within `timeout`)?"""
    store = EventStore(settings)
    views = view_store_for(settings)
    names = [p.name for p in ALL_PROJECTIONS]
    try:
        deadline = time.monotonic() + timeout
        while views.lowest_tracking(names) < store.max_notification_id():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True
    finally:
        views.close()
        store.close()


def _check_store(
    report: ChaosReport,
    settings: Settings,
    planned: list[PlannedTask],
    finals: dict[str, RunOutcome],
    journals: Path,
) -> None:
    store = EventStore(settings)
    try:
        runs = {
            item.task.task_id: store.events(run_id_for(item.task.task_id))
            for item in planned
            if item.task.task_id in finals
        }
    finally:
        store.close()
    report.recorded_twice = sorted(t for t, events in runs.items() if _recorded_twice(events))
    by_label = {
        i.task.prompt: runs.get(i.task.task_id, []) for i in planned if i.task.agent == "effect"
    }
    kills = {d.journal: d for d in report.disruptions if d.kind == KILL and d.journal}
    lines = [
        (f.name, kind, label) for f in sorted(journals.glob("*.log")) for kind, label in _journal(f)
    ]
    report.tool_effects = _repeats(lines, {"tool-effect"}, by_label, kills)
    report.model_steps = _repeats(lines, {"model-call-1", "model-call-2"}, by_label, kills)
    _check_sessions(report, settings, planned, finals)


def _recorded_twice(events: list[Any]) -> bool:
    """Did the run record a model step, a tool result, its request or its end twice?"""
    keys: Counter[tuple[str, object]] = Counter()
    for e in events:
        if isinstance(e, AgentRun.ModelRequestSent | AgentRun.ModelResponseReceived):
            keys[(type(e).__name__, e.step)] += 1
        elif isinstance(
            e, AgentRun.ToolCallStarted | AgentRun.ToolCallFinished | AgentRun.ToolCallFailed
        ):
            keys[(type(e).__name__, e.tool_call_id)] += 1
        elif isinstance(e, AgentRun.RunRequested):
            keys[("requested", None)] += 1
        elif isinstance(e, AgentRun.RunCompleted | AgentRun.RunFailed):
            keys[("ended", None)] += 1
    return any(count > 1 for count in keys.values())


def _journal(path: Path) -> list[tuple[str, str]]:
    """(kind, label) of each line of a journal: `tool-effect job-effect-00042`."""
    text = path.read_text() if path.exists() else ""
    return [(kind, label) for kind, _, label in (line.partition(" ") for line in text.splitlines())]


def _pending(kind: str, events: list[Any]) -> tuple[datetime | None, datetime | None]:
    """When the step's prerequisite was recorded, and when its result was (None: never).
    Between the two the step is pending: a worker killed then may have been running it."""

    def first(match: Callable[[Any], bool]) -> datetime | None:
        return next((e.timestamp for e in events if match(e)), None)

    def response(step: int) -> Callable[[Any], bool]:
        return lambda e: isinstance(e, AgentRun.ModelResponseReceived) and e.step == step

    def tool_result(e: Any) -> bool:
        return isinstance(e, AgentRun.ToolCallFinished | AgentRun.ToolCallFailed)

    if kind == "model-call-1":
        return first(lambda e: isinstance(e, AgentRun.RunRequested)), first(response(1))
    if kind == "tool-effect":
        return first(response(1)), first(tool_result)
    return first(tool_result), first(response(2))


def _repeats(
    lines: list[tuple[str, str, str]],
    kinds: set[str],
    runs_by_label: dict[str, list[Any]],
    kills: dict[str, Disruption],
) -> Repeats:
    """Count the executions of `kinds` (journal lines: process journal, kind, label) and
    classify the steps executed more than once. Such a step counts as repeated after a
    SIGKILL mid-call when every execution but one was made by a different process that
    was SIGKILLed while the step was pending (its prerequisite recorded, its result not
    yet: the run's recorded timestamps against the kill's); anything else is unexplained.
    """
    seen: dict[tuple[str, str], list[str]] = {}
    for journal, kind, label in lines:
        if kind in kinds:
            seen.setdefault((kind, label), []).append(journal)
    result = Repeats(executions=sum(len(v) for v in seen.values()))
    for (kind, label), journals in seen.items():
        if len(journals) < 2:
            continue
        result.duplicated += 1
        recorded_at, result_at = _pending(kind, runs_by_label.get(label, []))
        killed_mid_call = [
            j for j in journals if j in kills and _while_pending(kills[j], recorded_at, result_at)
        ]
        if len(set(journals)) == len(journals) and len(killed_mid_call) >= len(journals) - 1:
            result.after_sigkill += 1
            result.explained.append(f"{kind} {label} by {', '.join(journals)}")
        else:
            result.unexplained.append(f"{kind} {label} by {', '.join(journals)}")
    return result


def _while_pending(
    kill: Disruption, recorded_at: datetime | None, result_at: datetime | None
) -> bool:
    """Did `kill` fall after the step's prerequisite was recorded and before its result
    was (or the result never was)?"""
    assert kill.before is not None and kill.after is not None
    return (
        recorded_at is not None
        and recorded_at < kill.after
        and (result_at is None or result_at > kill.before)
    )


def _check_sessions(
    report: ChaosReport,
    settings: Settings,
    planned: list[PlannedTask],
    finals: dict[str, RunOutcome],
) -> None:
    """Each conversation view holds exactly the completed turns, in order; each recall
    turn lists every note saved by the completed turns before it."""
    sessions: dict[str, list[PlannedTask]] = {}
    for item in planned:
        if item.task.session_id is not None:
            sessions.setdefault(item.task.session_id, []).append(item)
    report.sessions = len(sessions)
    report.session_turns = sum(len(turns) for turns in sessions.values())
    views = view_store_for(settings)
    try:
        for session_id, turns in sessions.items():
            completed = [
                t.task.task_id
                for t in turns
                if t.task.task_id in finals and finals[t.task.task_id].status == "completed"
            ]
            try:
                view = answer(views, "conversation", {"session_id": session_id})
            except QueryError:
                view = {"turns": []}
            got = [turn["task_id"] for turn in view["turns"]]
            numbers = [turn["turn"] for turn in view["turns"]]
            if got != completed or numbers != list(range(1, len(got) + 1)):
                report.lost_turns.append(
                    f"{session_id} (view {got}, completed {completed}, turns {numbers})"
                )
            notes: list[str] = []
            for t in turns:
                outcome = finals.get(t.task.task_id)
                if outcome is None or outcome.status != "completed":
                    continue
                if t.note is not None:
                    notes.append(t.note)
                    continue
                expected = (
                    f"You told me: {'; '.join(notes)}."
                    if notes
                    else "I don't remember anything yet."
                )
                if outcome.output != expected:
                    report.recall_mismatches.append(f"{t.task.task_id} ({outcome.output!r})")
    finally:
        views.close()


def _views_equal_rebuild(settings: Settings, env: dict[str, str]) -> bool:
    """Every view table's rows, then `agentledger rebuild all`, then the rows again."""

    def contents() -> dict[str, list[tuple[Any, ...]]]:
        views = view_store_for(settings)
        try:
            rows: dict[str, list[tuple[Any, ...]]] = table_contents(views)
            return rows
        finally:
            views.close()

    live = contents()
    rebuilt = cli("rebuild", "all", env=env, timeout=600)
    if rebuilt.returncode != 0:
        raise RuntimeError(f"agentledger rebuild all failed:\n{rebuilt.stderr[-3000:]}")
    return contents() == live


# -- command line ---------------------------------------------------------------------


def _figures(report: ChaosReport) -> list[tuple[str, str, bool | None]]:
    """(figure, value, must-be-zero holds? or None when it is only informative)."""
    te, ms = report.tool_effects, report.model_steps
    kills, nats_r, pg_r = (report.done(k) for k in (KILL, NATS_RESTART, POSTGRES_RESTART))
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items()))
    return [
        ("tasks published", f"{report.tasks_published} of {report.tasks_planned}", None),
        (
            "outcomes received / published",
            f"{report.with_outcome} / {report.tasks_published}"
            f" ({len(report.read_from_stream)} read back from the results stream,"
            f" {report.outcome_messages} outcome messages)",
            None,
        ),
        ("tasks without an outcome", str(len(report.without_outcome)), not report.without_outcome),
        ("outcomes by status", statuses, None),
        (
            "tasks with two different outcomes",
            str(len(report.changed_outcomes)),
            not report.changed_outcomes,
        ),
        (
            "duplicated tool effects",
            f"{te.duplicated} of {te.executions} effect lines"
            f" ({te.after_sigkill} repeated after a SIGKILL mid-call)",
            None,
        ),
        ("  unexplained", str(len(te.unexplained)), not te.unexplained),
        (
            "duplicated model steps",
            f"{ms.duplicated} of {ms.executions} model calls"
            f" ({ms.after_sigkill} repeated after a SIGKILL mid-call)",
            None,
        ),
        ("  unexplained", str(len(ms.unexplained)), not ms.unexplained),
        (
            "runs that recorded a step twice",
            str(len(report.recorded_twice)),
            not report.recorded_twice,
        ),
        (
            f"sessions with lost turns ({report.sessions} sessions, {report.session_turns} turns)",
            str(len(report.lost_turns)),
            not report.lost_turns,
        ),
        (
            "recall turns that forgot a note",
            str(len(report.recall_mismatches)),
            not report.recall_mismatches,
        ),
        (
            "projector caught up",
            "yes" if report.projector_caught_up else "no",
            report.projector_caught_up,
        ),
        (
            "views equal to a rebuild",
            "yes" if report.views_equal_rebuild else "no",
            report.views_equal_rebuild,
        ),
        (
            "processes that died on their own",
            str(len(report.unexpected_exits)),
            not report.unexpected_exits,
        ),
        (
            "effect runs the killed process was inside a model call of",
            " + ".join(str(d.in_model_call) for d in report.disruptions if d.kind == KILL),
            None,
        ),
        (
            "kills / restarts done",
            f"{kills} worker SIGKILLs, {nats_r} nats-server, {pg_r} PostgreSQL",
            None,
        ),
        (
            "publish retries (NATS away)",
            f"{report.publish_retries} ({report.duplicate_acks} acked as duplicates)",
            None,
        ),
        ("dead letters", str(report.dead_letters), None),
        ("wall time, first publish -> last outcome", f"{report.wall_s:.1f} s", None),
        ("total, setup and checks included", f"{report.total_s:.1f} s", None),
    ]


def _print(report: ChaosReport, as_json: bool) -> None:
    if as_json:
        data = asdict(report)
        data["problems"] = report.problems()
        print(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Chaos run")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("must be 0")
    for name, value, holds in _figures(report):
        mark = "" if holds is None else ("[green]ok[/]" if holds else "[red]NO[/]")
        table.add_row(name, value, mark)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    moments = Table(title="Disruptions (seconds after the first publish)")
    for column in ("what", "target", "planned", "done", "took"):
        moments.add_column(column)
    for d in report.disruptions:
        moments.add_row(
            d.kind,
            d.target,
            f"{d.planned_s:.1f}",
            "-" if d.done_s is None else f"{d.done_s:.1f}",
            "-" if d.took_s is None else f"{d.took_s:.1f}",
        )
    console.print(moments)
    for problem in report.problems():
        console.print(f"[red]problem:[/] {problem}")


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosPlan()
    parser = argparse.ArgumentParser(
        prog="python bench/chaos.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="tasks offered per second"
    )
    parser.add_argument("--sessions", type=int, default=defaults.sessions)
    parser.add_argument("--kills", type=int, default=defaults.worker_kills, help="worker SIGKILLs")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--nats-restarts", type=int, default=defaults.nats_restarts)
    parser.add_argument("--postgres-restarts", type=int, default=defaults.postgres_restarts)
    parser.add_argument(
        "--ack-wait", type=float, default=defaults.ack_wait_s, help="AGENTLEDGER_ACK_WAIT_S"
    )
    parser.add_argument("--nats-down", type=float, default=defaults.nats_down_s, help="seconds")
    parser.add_argument(
        "--postgres-down", type=float, default=defaults.postgres_down_s, help="seconds"
    )
    parser.add_argument(
        "--model-pause", type=float, default=defaults.model_pause_s, help="effect's first call"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout_s,
        help="wait for outcomes after the last publish",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (logs, journal)")
    args = parser.parse_args(argv)
    plan = ChaosPlan(
        tasks=args.tasks,
        rate=args.rate,
        sessions=args.sessions,
        worker_kills=args.kills,
        workers=args.workers,
        nats_restarts=args.nats_restarts,
        postgres_restarts=args.postgres_restarts,
        ack_wait_s=args.ack_wait,
        nats_down_s=args.nats_down,
        postgres_down_s=args.postgres_down,
        model_pause_s=args.model_pause,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    from rich.console import Console

    from agentledger.infra.logging import configure_logging

    configure_logging("console", "WARNING")
    err = Console(stderr=True)
    root = Path(tempfile.mkdtemp(prefix="agentledger-chaos-"))
    # Outside root's private folders: as root the server runs as the `pgserver` user.
    pg_root = Path(tempfile.mkdtemp(prefix="agentledger-chaos-pg-"))
    nats_server = EmbeddedNats(store_dir=root / "nats", sync_always=True)
    postgres = EmbeddedPostgres(pg_root / "data")
    err.print(
        f"[bold]agentledger chaos run[/]: {plan.tasks} tasks at {plan.rate}/s; data in {root}"
    )
    try:
        nats_server.start()
        postgres.start()
        report = asyncio.run(
            run_chaos(
                plan,
                nats_server=nats_server,
                postgres=postgres,
                workdir=root / "run",
                progress=lambda line: err.print(f"[dim]{line}[/]"),
            )
        )
    finally:
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _print(report, args.json)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())

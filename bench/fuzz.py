"""Hostile task messages against a real worker: every case gets exactly one clear outcome.

`python bench/fuzz.py [--cases 10000] [--seed 7] [--json]` starts a nats-server, runs a
worker and the projections in this process (SQLite, or PostgreSQL with --postgres),
publishes generated cases (payload, `Nats-Msg-Id`, `Agentledger-Reply-To` and subject
mutations of a valid `RunAgent`) and checks:

- every case ends one clear way: refused by JetStream at publish (a subject no stream
  takes), or answered on its results subject, or (when no task id can be read from it)
  recorded as one `TaskRejected`; never twice, never retried for ever;
- no payload that the published JSON schema (contracts/RunAgent.schema.json) forbids is
  run: those are all rejected;
- a canary task finished before the fuzz keeps its stored outcome, and one published
  after it completes; the projector has folded everything.

It exits non-zero when a check fails. tests/integration/test_fuzz_small.py runs a small
version in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from nats.js.errors import NoStreamResponseError

from agentledger.domain.ids import rejection_id_for, run_id_for
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.bootstrap import ProjectorService, WorkerService, connect_nats
from agentledger.handlers.client import LedgerClient
from agentledger.infra.nats_server import EmbeddedNats
from agentledger.infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO_ROOT / "contracts" / "RunAgent.schema.json").read_text())
REPLY_HEADER = "Agentledger-Reply-To"


@dataclass(frozen=True, kw_only=True)
class Case:
    """One hostile message."""

    key: str
    """Its `Nats-Msg-Id` (unique), or the task id it carries."""
    subject: str
    body: bytes
    headers: dict[str, str]
    task_id: str | None
    """The task id a reader can take from the body, if any."""
    schema_valid: bool


@dataclass(kw_only=True)
class Report:
    cases: int = 0
    refused_at_publish: int = 0
    answered: int = 0
    rejected_unanswered: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    without_outcome: list[str] = field(default_factory=list)
    more_than_one: list[str] = field(default_factory=list)
    forbidden_but_run: list[str] = field(default_factory=list)
    canary_unchanged: bool = False
    canary_after_ok: bool = False
    projector_caught_up: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.without_outcome
            and not self.more_than_one
            and not self.forbidden_but_run
            and self.canary_unchanged
            and self.canary_after_ok
            and self.projector_caught_up
        )


# -- case generation --------------------------------------------------------------------

_STRINGS = [
    "",
    " ",
    "a b",
    "x" * 5000,
    "dot.ted",
    "star*",
    "\u0000",
    "nul\u0000inside",
    "\ud800",
    "emoji \U0001f600",
    "é",
    "\t\n",
    "$JS.API",
    "ledger.results.canary",
    "../../etc",
    "<script>",
]
_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    10**30,
    "5",
    [],
    {},
    [1, 2],
    {"a": {"b": {"c": 1}}},
    *_STRINGS,
]


def _valid(task_id: str, agent: str = "calculator") -> dict[str, Any]:
    return {"task_id": task_id, "agent": agent, "prompt": "add 1 and 2"}


def _mutate(rng: random.Random, task_id: str) -> tuple[dict[str, Any] | Any, str]:
    """A mutated payload and the agent it names."""
    data: dict[str, Any] = _valid(task_id, rng.choice(["calculator", "greeter", "nosuch"]))
    kind = rng.randrange(12)
    if kind == 0:  # a field of a wrong type or a hostile string
        data[rng.choice(["prompt", "agent", "session_id"])] = rng.choice(_VALUES)
    elif kind == 1:  # a field missing
        data.pop(rng.choice(["agent", "prompt"]))
    elif kind == 2:  # an extra field
        data[rng.choice(["extra", "TASK_ID", "__proto__"])] = rng.choice(_VALUES)
    elif kind == 3:  # metadata abuse
        size = rng.choice([1, 64, 65, 500])
        value = rng.choice(["v", "x" * 5000, "\u0000", 5, None])
        data["metadata"] = {f"k{i}": value for i in range(size)}
    elif kind == 4:  # usage limits of every type
        data["usage_limits"] = {
            rng.choice(["request_limit", "tool_calls_limit", "bogus"]): rng.choice(_VALUES)
        }
    elif kind == 5:  # deadlines
        data["deadline"] = rng.choice(
            [1700000000, 1.5, "2001-01-01T00:00:00Z", "2100-01-01T00:00:00", "soon", None]
        )
    elif kind == 6:  # a session id
        data["session_id"] = rng.choice(["s-1", *_STRINGS])
    elif kind == 7:  # the prompt
        data["prompt"] = rng.choice(["x" * 40_000, "hi", *_STRINGS])
    elif kind == 8:  # not an object
        return rng.choice([[data], "text", 5, None]), data["agent"]
    elif kind == 9:  # a hostile task id (the message id still names the case)
        data["task_id"] = rng.choice(_STRINGS)
    return data, str(data["agent"]) if isinstance(data.get("agent"), str) else "calculator"


def _raw_body(rng: random.Random, task_id: str) -> bytes:
    """Bytes that are not a clean JSON object."""
    good = json.dumps(_valid(task_id)).encode()
    return rng.choice(
        [
            b"",
            b"{",
            good[: len(good) // 2],
            b"[" * 50_000,
            b'{"task_id": "' + task_id.encode() + b'", "x": ' + b"9" * 5000 + b"}",
            b"\xff\xfe\x00garbage",
            good.replace(b'"add 1 and 2"', b"NaN"),
            good.replace(b"add 1 and 2", b"\\ud800 lone"),
            good.replace(b"add 1 and 2", b"nul \\u0000 here"),
            "é".encode("latin-1") + good,
        ]
    )


def _subject(rng: random.Random, prefix: str, agent: str) -> str:
    if rng.random() < 0.9:
        return f"{prefix}.tasks.run.{agent if rng.random() < 0.9 else 'greeter'}"
    return rng.choice(
        [f"{prefix}.tasks.run", f"{prefix}.tasks.other", f"{prefix}.tasks.run.{agent}.extra"]
    )


def _headers(rng: random.Random, prefix: str, key: str) -> dict[str, str]:
    headers = {"Nats-Msg-Id": key}
    if rng.random() < 0.25:
        headers[REPLY_HEADER] = rng.choice(
            [
                f"{prefix}.results.canary",
                f"{prefix}.tasks.run.calculator",
                "_INBOX." + "x" * 5000,
                "_INBOX.a b",
                "$JS.API.STREAM.DELETE.X",
                "_INBOX.fine.one",
                "*",
                "a..b",
            ]
        )
    return headers


def _schema_valid(body: bytes) -> bool:
    try:
        data = json.loads(body.decode("utf-8"))
        jsonschema.validate(data, SCHEMA)
    except Exception:
        return False
    return True


def generate(n: int, seed: int, prefix: str) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        key = f"fz-{seed}-{i}"
        if rng.random() < 0.2:
            body = _raw_body(rng, key)
            agent = "calculator"
        else:
            data, agent = _mutate(rng, key)
            body = json.dumps(data, ensure_ascii=rng.random() < 0.5).encode(
                "utf-8", errors="surrogatepass"
            )
        task_id = key if f'"task_id": "{key}"'.encode() in body else None
        cases.append(
            Case(
                key=key,
                # A publisher cannot send a subject over NATS's control line (4 KiB): the
                # server would close its own connection. Long agent names stay in bodies.
                subject=_subject(
                    rng, prefix, agent if agent.isidentifier() and len(agent) < 64 else "calculator"
                ),
                body=body,
                headers=_headers(rng, prefix, key),
                task_id=task_id,
                schema_valid=_schema_valid(body),
            )
        )
    return cases


# -- the run ----------------------------------------------------------------------------


async def run(settings: Settings, n: int, seed: int) -> Report:
    """Publish `n` cases to a worker of `settings` (servers running) and check them."""
    report = Report(cases=n)
    prefix = settings.subject_prefix
    started = time.monotonic()
    cases = generate(n, seed, prefix)
    worker = await WorkerService(settings=settings).start()
    projector = await ProjectorService(settings=settings, relay=False, queries=False).start()
    nc = await connect_nats(settings, "fuzz")
    ledger = LedgerClient(nc, prefix=prefix)
    try:
        _, canary = await ledger.run(
            RunAgent(task_id="canary", agent="calculator", prompt="add 2 and 40"), timeout=60
        )
        outcomes: dict[str, list[RunOutcome]] = {}

        async def collect(msg: Any) -> None:
            outcome = RunOutcome.model_validate_json(msg.data)
            outcomes.setdefault(msg.subject.removeprefix(f"{prefix}.results."), []).append(outcome)

        await nc.subscribe(f"{prefix}.results.>", cb=collect)
        js = nc.jetstream()
        refused: set[str] = set()

        async def publish(case: Case) -> None:
            try:
                await js.publish(case.subject, case.body, headers=case.headers, timeout=60)
            except NoStreamResponseError:
                refused.add(case.key)

        for start in range(0, n, 64):  # pipelined, 64 in flight (some are megabytes)
            await asyncio.gather(*(publish(c) for c in cases[start : start + 64]))
        await _settled(ledger, settings, timeout=max(120.0, n / 20))
        await asyncio.sleep(1.0)  # the last outcomes' messages

        assert worker.store is not None
        store = worker.store.sync
        for case in cases:
            if case.key in refused:
                report.refused_at_publish += 1
                continue
            if case.subject.count(".") != 3 or not case.subject.startswith(f"{prefix}.tasks.run."):
                report.without_outcome.append(f"{case.key}: taken on {case.subject}")
                continue
            answered = outcomes.get(case.task_id or "", []) if case.task_id else []
            rejections = await asyncio.to_thread(store.events, rejection_id_for(case.key))
            runs = (
                await asyncio.to_thread(store.events, run_id_for(case.task_id))
                if case.task_id
                else []
            )
            requested = [e for e in runs if type(e).__name__ == "RunRequested"]
            if answered:
                report.answered += 1
                status = answered[-1].status
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if not case.schema_valid and status != "rejected":
                    report.forbidden_but_run.append(f"{case.key}: {status}")
            elif rejections:
                report.rejected_unanswered += 1
                report.statuses["rejected"] = report.statuses.get("rejected", 0) + 1
            elif not requested:
                report.without_outcome.append(case.key)
            if len(rejections) + len(requested) > 1 or len(answered) > 1:
                report.more_than_one.append(case.key)
            if not case.schema_valid and requested:
                report.forbidden_but_run.append(f"{case.key}: run created")
        report.canary_unchanged = await ledger.outcome("canary") == canary
        _, after = await ledger.run(
            RunAgent(task_id="canary-after", agent="calculator", prompt="add 1 and 1"),
            timeout=60,
        )
        report.canary_after_ok = after.status == "completed"
        last = await asyncio.to_thread(store.max_notification_id)
        report.projector_caught_up = await asyncio.to_thread(projector.wait_until, last, 60.0)
    finally:
        await nc.drain()
        await projector.stop()
        await worker.stop(grace_s=2)
    report.seconds = time.monotonic() - started
    return report


async def _settled(ledger: LedgerClient, settings: Settings, timeout: float) -> None:
    """Until the workers' consumer has nothing pending or unacknowledged."""
    js = ledger.nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(settings.tasks_stream, f"{settings.subject_prefix}-workers")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the worker did not settle within {timeout:g}s")


def _print(report: Report, as_json: bool) -> None:
    data = {
        "cases": report.cases,
        "refused at publish (no stream takes the subject)": report.refused_at_publish,
        "answered on the results subject": report.answered,
        "rejected, no task id to answer": report.rejected_unanswered,
        "by status": report.statuses,
        "without an outcome (must be 0)": len(report.without_outcome),
        "more than one outcome (must be 0)": len(report.more_than_one),
        "forbidden by the schema but run (must be 0)": len(report.forbidden_but_run),
        "canary outcome unchanged": report.canary_unchanged,
        "canary after the fuzz completed": report.canary_after_ok,
        "projector caught up": report.projector_caught_up,
        "seconds": round(report.seconds, 1),
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fuzzing the task intake through a real worker")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in data.items():
        table.add_row(key, str(value))
    Console().print(table)
    for label, items in (
        ("without outcome", report.without_outcome),
        ("more than one", report.more_than_one),
        ("forbidden but run", report.forbidden_but_run),
    ):
        if items:
            print(f"{label}: {items[:20]}", file=sys.stderr)


async def _main(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="agentledger-fuzz-")
        )
        server = EmbeddedNats(store_dir=Path(tmp) / "nats")
        await asyncio.to_thread(server.start)
        try:
            settings = Settings(
                nats_url=server.url,
                data_dir=Path(tmp) / "data",
                subject_prefix="fuzz",
                log_level="ERROR",
                max_deliveries=5,
            )
            if args.postgres_dsn:
                settings = settings.model_copy(update={"postgres_dsn": args.postgres_dsn})
            report = await run(settings, args.cases, args.seed)
        finally:
            await asyncio.to_thread(server.stop)
    _print(report, args.json)
    return 0 if report.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres-dsn", default=None, help="Use this PostgreSQL database.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--workdir", default=None, help="Keep the servers' files here.")
    args = parser.parse_args()
    from agentledger.infra.logging import configure_logging

    configure_logging("console", "ERROR")
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()

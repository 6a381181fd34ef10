"""Terminal rendering of outcomes, conversations, metrics and event timelines (rich)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from agentledger.domain.divergence import Divergence
from agentledger.domain.tasks import RunOutcome
from agentledger.domain.timeline import EventRecord

__all__ = [
    "conversation_table",
    "divergence_text",
    "event_summary",
    "metrics_table",
    "outcomes_table",
    "replay_table",
    "runs_table",
    "size_table",
    "timeline_table",
]


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def outcomes_table(outcomes: Iterable[RunOutcome], title: str = "Outcomes") -> Table:
    table = Table(title=title)
    for column in ("task", "agent", "status", "output / error", "tokens in/out", "cost $", "ms"):
        table.add_column(column)
    for o in outcomes:
        style = {"completed": "green", "failed": "red", "rejected": "yellow"}[o.status]
        # An error is shown whole (the cell wraps); only outputs are abbreviated.
        detail = _short(o.output, 70) if o.error is None else f"{o.error.kind}: {o.error.message}"
        table.add_row(
            o.task_id or "-",
            o.agent or "-",
            Text(o.status, style=style),
            detail,
            f"{o.usage.input_tokens}/{o.usage.output_tokens}",
            "-" if o.cost_usd is None else f"{o.cost_usd:.6f}",
            _ms(o.duration_ms),
        )
    return table


def conversation_table(view: dict[str, Any]) -> Table:
    table = Table(title=f"Conversation {view['session_id']}")
    table.add_column("turn", justify="right")
    table.add_column("role")
    table.add_column("content")
    for turn in view["turns"]:
        for entry in turn["transcript"]:
            role = entry["role"]
            content = entry["content"]
            if entry.get("tool_name"):
                content = f"{entry['tool_name']}: {content}"
            table.add_row(str(turn["turn"]), role, _short(content, 90))
    return table


def metrics_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Metrics per agent")
    columns = ("agent", "runs", "failed", "rejected", "p50 ms", "p95 ms", "p99 ms")
    for column in (*columns, "tokens in", "tokens out", "tools", "cost $"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for m in rows:
        table.add_row(
            m["agent"],
            str(m["runs"]),
            str(m["failed"]),
            str(m["rejected"]),
            _ms(m.get("latency_p50_ms")),
            _ms(m.get("latency_p95_ms")),
            _ms(m.get("latency_p99_ms")),
            str(m["input_tokens"]),
            str(m["output_tokens"]),
            str(m["tool_calls"]),
            f"{m['cost_usd']:.6f}",
        )
    return table


def runs_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Runs")
    for column in ("task", "agent", "session", "status", "output / error", "ms"):
        table.add_column(column)
    for r in rows:
        detail = r.get("error_message") or _short(r.get("output"))  # errors whole
        table.add_row(
            r.get("task_id") or "-",
            r.get("agent") or "-",
            r.get("session_id") or "-",
            r["status"],
            detail,
            _ms(r.get("duration_ms")),
        )
    return table


def event_summary(record: EventRecord) -> str:
    """One line saying what an event did (the timeline's detail column)."""
    data = record.data
    name = record.name
    if name == "RunRequested":
        fork = ""
        if data.get("parent_run_id"):
            fork = f"  (fork of {data['parent_run_id'][:8]} at {data['fork_at']})"
        return f"{data['agent']}: {_short(data['prompt'], 50)}{fork}"
    if name in ("ModelRequestSent", "ModelResponseReceived"):
        parts = data["message"].get("parts", [])
        kinds = ", ".join(p.get("part_kind", "?") for p in parts)
        usage = ""
        if name == "ModelResponseReceived":
            usage = f"  ({data['input_tokens']} in / {data['output_tokens']} out)"
        return f"step {data['step']}: {kinds}{usage}"
    if name.startswith("ToolCall"):
        extra = data.get("args", data.get("result", data.get("error")))
        return f"{data['tool_name']}({data['tool_call_id'][-8:]}) {_short(extra, 40)}"
    if name == "ToolDecisionMade":
        waited = f" after {data['waited_ms']:.0f} ms" if data.get("waited_ms") else ""
        return (
            f"{data['tool_name']}({data['tool_call_id'][-8:]}) {data['decision']}{waited}"
            f" {_short(data['detail'], 30)}"
        )
    if name == "RunCompleted":
        return f"output={_short(data['output'], 40)} ms={data['duration_ms']:.1f}"
    if name == "RunFailed":
        return f"{data['error_kind']}: {data['message']}"
    if name == "TurnRecorded":
        return f"turn {data['turn']} run {data['run_id'][:8]} ({len(data['messages'])} msgs)"
    if name == "TaskRejected":
        return f"{data['error_kind']}: {data['reason']}"
    return _short(data, 60)


def timeline_table(records: Sequence[EventRecord], title: str = "Event timeline") -> Table:
    table = Table(title=title)
    for column in ("v", "time (UTC)", "aggregate", "event", "detail"):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record.version),
            record.timestamp[11:23],
            record.aggregate_type,
            record.name,
            event_summary(record),
        )
    return table


def replay_table(reports: Sequence[Any], title: str = "Replay") -> Table:
    """One row per replayed run (`agentledger.handlers.replay.ReplayReport`)."""
    table = Table(title=title)
    for column in ("task", "agent", "verdict", "events rec/rep", "first divergence / note"):
        table.add_column(column)
    for r in reports:
        style = "green" if r.identical else "red"
        detail = r.divergence.summary() if r.divergence else (r.note or "")
        table.add_row(
            r.task_id,
            r.agent,
            Text(r.verdict, style=style),
            f"{r.recorded_events}/{r.replayed_events}",
            _short(detail, 80),
        )
    return table


def divergence_text(divergence: Divergence) -> Text:
    """The divergence's summary line and its diff, coloured."""
    text = Text(divergence.summary() + "\n", style="bold red")
    for line in divergence.diff:
        style = "red" if line.startswith("-") else "green" if line.startswith("+") else "dim"
        if line.startswith("@@"):
            style = "cyan"
        text.append(line + "\n", style=style)
    return text


def size_table(sizes: Sequence[Any], title: str = "Event store size") -> Table:
    """One row per aggregate type (`agentledger.handlers.retention.AggregateSize`), then the total."""
    table = Table(title=title)
    for column in ("aggregate type", "aggregates", "events", "bytes", "bytes/event"):
        table.add_column(column, justify="left" if column == "aggregate type" else "right")
    for s in sizes:
        per = f"{s.bytes / s.events:,.0f}" if s.events else "-"
        table.add_row(s.aggregate_type, f"{s.aggregates:,}", f"{s.events:,}", f"{s.bytes:,}", per)
    total_events = sum(s.events for s in sizes)
    total_bytes = sum(s.bytes for s in sizes)
    table.add_row(Text("total", style="bold"), "", f"{total_events:,}", f"{total_bytes:,}", "")
    return table

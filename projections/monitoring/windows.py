"""Each agent's finished runs in a window, read from the runs view (`al_runs`).

The runs view holds one row per run and per rejected task with its agent, status,
duration, cost, tokens and `finished_at`; a window is the rows finished since a time.
Reading the view, not the log, keeps a monitor restart-proof (no window to refill) and
costs one query per window per check."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agentledger.domain.monitoring.rules import WindowStats
from agentledger.projections.base import ViewCursor

__all__ = ["window_stats"]


def window_stats(cursor: ViewCursor, since: str) -> dict[str, WindowStats]:
    """Per agent: its runs finished (or tasks rejected) at `since` (ISO text) or later."""
    cursor.execute(
        "SELECT agent, status, duration_ms, cost_usd, input_tokens, output_tokens"
        " FROM al_runs WHERE finished_at >= ? AND agent IS NOT NULL",
        (since,),
    )
    counts: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "completed": 0,
            "failed": 0,
            "rejected": 0,
            "durations": [],
            "cost": 0.0,
            "tokens": 0,
        }
    )
    for agent, status, duration_ms, cost_usd, input_tokens, output_tokens in cursor.fetchall():
        entry = counts[agent]
        if status not in ("completed", "failed", "rejected"):
            continue
        entry[status] += 1
        if status != "rejected":
            if duration_ms is not None:
                entry["durations"].append(float(duration_ms))
            entry["cost"] += float(cost_usd or 0.0)
            entry["tokens"] += int(input_tokens or 0) + int(output_tokens or 0)
    return {
        agent: WindowStats(
            completed=c["completed"],
            failed=c["failed"],
            rejected=c["rejected"],
            durations_ms=tuple(c["durations"]),
            cost_usd=c["cost"],
            tokens=c["tokens"],
        )
        for agent, c in counts.items()
    }

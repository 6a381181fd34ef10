"""Alert rules over rolling windows of an agent's runs, and the decision to raise or clear.

A rule watches one metric of one agent (or of every agent, `agent = "*"`) over a window
of 1 minute, 5 minutes or 1 hour, and fires when the value goes above `above` with at
least `min_samples` runs in the window. It clears only when the value falls to
`clear_below` or under (hysteresis: a value hovering at the threshold does not raise and
clear in turn), or when the window has no runs left at all. Metrics:

- `error_rate`: failed runs / finished runs (completed + failed);
- `p95_latency_ms`: the 95th percentile of finished runs' durations;
- `cost_per_hour`: the window's cost, scaled to an hour (USD);
- `tokens_per_minute`: input + output tokens, scaled to a minute;
- `rejections`: tasks rejected in the window (a count).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "WINDOWS_S",
    "AlertMessage",
    "AlertRule",
    "Metric",
    "WindowStats",
    "decide",
    "percentile",
]

Metric = Literal["error_rate", "p95_latency_ms", "cost_per_hour", "tokens_per_minute", "rejections"]
Window = Literal["1m", "5m", "1h"]
WINDOWS_S: dict[str, float] = {"1m": 60.0, "5m": 300.0, "1h": 3600.0}

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class AlertRule(BaseModel):
    """`[alerts.<name>]` in the catalog, or an entry of `AGENTLEDGER_ALERT_RULES` (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME.pattern)
    agent: str = "*"
    """An agent name, or `*` for each agent on its own."""
    metric: Metric
    window: Window = "5m"
    above: float = Field(ge=0)
    clear_below: float | None = Field(default=None, ge=0)
    """Clears at or under this (default: 80 % of `above`)."""
    min_samples: int = Field(default=5, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertRule:
        if self.clear_below is not None and self.clear_below > self.above:
            raise ValueError(
                f"clear_below ({self.clear_below}) must not exceed above ({self.above})"
            )
        return self

    @property
    def clear_at(self) -> float:
        return self.above * 0.8 if self.clear_below is None else self.clear_below

    def applies_to(self, agent: str) -> bool:
        return self.agent in ("*", agent)


class WindowStats(BaseModel):
    """One agent's runs in one window."""

    model_config = ConfigDict(frozen=True)

    completed: int = 0
    failed: int = 0
    rejected: int = 0
    durations_ms: tuple[float, ...] = ()
    cost_usd: float = 0.0
    tokens: int = 0

    def plus(self, other: WindowStats) -> WindowStats:
        return WindowStats(
            completed=self.completed + other.completed,
            failed=self.failed + other.failed,
            rejected=self.rejected + other.rejected,
            durations_ms=self.durations_ms + other.durations_ms,
            cost_usd=self.cost_usd + other.cost_usd,
            tokens=self.tokens + other.tokens,
        )

    def value(self, metric: Metric, window_s: float) -> tuple[float | None, int]:
        """(the metric's value, the samples it rests on); None when there is nothing to
        measure."""
        finished = self.completed + self.failed
        if metric == "error_rate":
            return (self.failed / finished if finished else None), finished
        if metric == "p95_latency_ms":
            return percentile(self.durations_ms, 95), len(self.durations_ms)
        if metric == "cost_per_hour":
            return (self.cost_usd * 3600 / window_s if finished else None), finished
        if metric == "tokens_per_minute":
            return (self.tokens * 60 / window_s if finished else None), finished
        total = finished + self.rejected
        return (float(self.rejected) if total else None), total


def percentile(values: tuple[float, ...] | list[float], q: float) -> float | None:
    """The `q`th percentile (nearest rank) of `values`, None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def decide(
    rule: AlertRule, value: float | None, samples: int, active: bool
) -> Literal["raise", "clear"] | None:
    """Whether the rule's alert must be raised or cleared now (None: stays as it is)."""
    if not active:
        if value is not None and samples >= rule.min_samples and value > rule.above:
            return "raise"
        return None
    if samples == 0 or (value is not None and value <= rule.clear_at):
        return "clear"
    return None


class AlertMessage(BaseModel):
    """Published on `<prefix>.alerts.<agent>.<metric>` when an alert is raised or cleared."""

    model_config = ConfigDict(frozen=True)

    state: Literal["raised", "cleared"]
    rule: str
    agent: str
    metric: Metric
    window: Window
    value: float | None
    threshold: float
    samples: int
    at: datetime

"""Reads for live monitoring: rolling windows of each agent's runs, from the runs view;
and the alerts view (what the monitor raised and cleared)."""

from agentledger.projections.monitoring.alerts import (
    AlertsProjection,
    AlertState,
    AlertView,
    list_alerts,
)
from agentledger.projections.monitoring.windows import window_stats

__all__ = ["AlertState", "AlertView", "AlertsProjection", "list_alerts", "window_stats"]

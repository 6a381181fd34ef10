"""Reads for live monitoring: rolling windows of each agent's runs, from the runs view."""

from agentledger.projections.monitoring.windows import window_stats

__all__ = ["window_stats"]

"""Evaluation reports in the dashboard: `/evaluations/<evaluation id or task id>/report.html`
serves the evaluation feature's self-contained HTML report
(`agentledger.handlers.evaluation.report_html`), with a policy of its own: no script runs
in it at all (`sandbox`), its styles may be inline."""

from __future__ import annotations

from agentledger.handlers.evaluation import report_html
from agentledger.infra.view_store import ViewStore

__all__ = ["REPORT_POLICY", "evaluation_report_html"]

REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
"""The Content-Security-Policy of a report page."""


def evaluation_report_html(views: ViewStore, evaluation_id: str) -> str | None:
    """The HTML report of an evaluation, or None (no such evaluation). Blocking: call it
    off the event loop."""
    return report_html.evaluation_report_html(views, evaluation_id)

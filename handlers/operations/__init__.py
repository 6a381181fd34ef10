"""Operations endpoints of the worker and projector processes: liveness, readiness and
Prometheus metrics over a tiny in-process HTTP server (off unless
`AGENTLEDGER_HTTP_PORT` is set)."""

from __future__ import annotations

from agentledger.handlers.operations.http import OperationsServer, Response
from agentledger.handlers.operations.metrics import ProjectorMetrics, WorkerMetrics
from agentledger.handlers.operations.readiness import Readiness

__all__ = ["OperationsServer", "ProjectorMetrics", "Readiness", "Response", "WorkerMetrics"]

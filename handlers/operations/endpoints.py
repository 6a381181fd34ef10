"""The operations endpoints of a process (`/healthz`, `/readyz`, `/metrics`) and
starting their server from settings.

- `GET /healthz`: 200 `{"status": "ok"}` whenever the event loop answers (liveness).
- `GET /readyz`: 200 when ready, else 503; the body is `Readiness` as JSON.
- `GET /metrics`: the process's registry in the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CollectorRegistry, generate_latest

from agentledger.handlers.operations.http import OperationsServer, Response, Route
from agentledger.handlers.operations.readiness import Readiness
from agentledger.infra.settings import Settings

__all__ = ["METRICS_CONTENT_TYPE", "OperationsPortUnavailable", "routes", "start_operations"]

log = structlog.get_logger("agentledger.operations")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What `generate_latest` writes; every Prometheus version reads it."""
_JSON = "application/json"


class OperationsPortUnavailable(Exception):
    """The operations endpoints cannot listen on the configured address."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(
            f"cannot serve the operations endpoints on {host}:{port} ({error.strerror or error});"
            " set AGENTLEDGER_HTTP_PORT to a free port (or unset it to turn them off)"
        )


def routes(
    *,
    readiness: Callable[[], Awaitable[Readiness]],
    registry: CollectorRegistry,
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Route]:
    """The three endpoints; `refresh` updates gauges measured on demand before a scrape."""

    async def healthz() -> Response:
        return Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def readyz() -> Response:
        state = await readiness()
        return Response(
            status=200 if state.ready else 503,
            body=json.dumps(dataclasses.asdict(state)).encode(),
            content_type=_JSON,
        )

    async def metrics() -> Response:
        if refresh is not None:
            await refresh()
        return Response(body=generate_latest(registry), content_type=METRICS_CONTENT_TYPE)

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


async def start_operations(
    settings: Settings, endpoints: dict[str, Route], process: str
) -> OperationsServer | None:
    """The endpoints' server, listening, if `AGENTLEDGER_HTTP_PORT` is set (else None)."""
    if settings.http_port is None:
        return None
    server = OperationsServer(endpoints, host=settings.http_host, port=settings.http_port)
    try:
        await server.start()
    except OSError as e:
        raise OperationsPortUnavailable(settings.http_host, settings.http_port, e) from None
    log.info("http endpoints", url=server.url, process=process, paths=sorted(endpoints))
    return server

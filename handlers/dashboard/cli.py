"""`agentledger dashboard`: the web dashboard on its own (see
`agentledger.handlers.dashboard.service`)."""

from __future__ import annotations

import typer

from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    run,
    settings_from_env,
    until_signal,
)

__all__ = ["register"]


@one_line_errors
def dashboard(
    host: str = typer.Option(
        None, help="Interface to listen on (AGENTLEDGER_DASHBOARD_HOST; default 127.0.0.1)."
    ),
    port: int = typer.Option(
        None,
        min=0,
        max=65535,
        help="Port (AGENTLEDGER_DASHBOARD_PORT; default 8765; 0: any free port).",
    ),
    token: str = typer.Option(
        None,
        help="Require this bearer token (AGENTLEDGER_DASHBOARD_TOKEN); needed on any"
        " non-loopback --host.",
    ),
) -> None:
    """Serve the web dashboard (live metrics, runs, replays, graphs, alerts).

    Per-agent metrics, recent runs with their event timelines and a replay button, graph
    runs and workflows drawn as Mermaid, active and recent alerts, evaluation reports.

    Live updates come from the event relay of `agentledger project` over NATS (the
    database is not polled): run a projector too. The views and the event store are
    read from the same settings as the other commands.

    Prints its URL; with a token, the URL carries `?token=`, which signs the browser in.
    Without a token it listens on a loopback address only.
    """
    from agentledger.handlers.bootstrap import NatsUnreachable
    from agentledger.handlers.dashboard.service import DashboardService

    settings = settings_from_env(announce_store=True)
    service = DashboardService(settings=settings, host=host, port=port, token=token)
    service.check()

    async def serve() -> None:
        try:
            await service.start()
        except NatsUnreachable as e:
            unset = settings.nats_url is None
            raise CliError(
                f"the dashboard needs NATS, where `agentledger project`'s event relay"
                f" publishes: {e}"
                + ("; AGENTLEDGER_NATS_URL is not set, so the default was tried" if unset else "")
            ) from None
        console.print(
            f"dashboard at {service.login_url} (Ctrl-C stops it)", markup=False, soft_wrap=True
        )
        try:
            await until_signal()
        finally:
            await service.stop()

    run(serve())


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)

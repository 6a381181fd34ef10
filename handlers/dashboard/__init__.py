"""The web dashboard (`agentledger dashboard`, or `agentledger project` with
AGENTLEDGER_DASHBOARD_PORT): live per-agent metrics, runs and their timelines and
replays, graphs and workflows as Mermaid, alerts and evaluation reports, pushed to the
browser as server-sent events fed by the event relay."""

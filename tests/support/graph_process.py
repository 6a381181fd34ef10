"""Runs one graph task in a process of its own (for SIGKILL tests):

    python -m support.graph_process <task_id> <graph> <inputs as JSON>

Settings come from `AGENTLEDGER_*` (the catalog names the graphs); prints the outcome
as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

from agentledger.domain.graphs.tasks import RunGraph
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.graphs.runner import GraphRunner
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings


async def main(task_id: str, graph: str, inputs: str) -> None:
    settings = Settings()
    store = AsyncEventStore(EventStore(settings), 4)
    catalog = Catalog.load(settings.catalog)
    runner = GraphRunner(
        store=store, catalog=catalog, agents=AgentRunner(store=store, catalog=catalog)
    )
    try:
        outcome = await runner.run(
            RunGraph(task_id=task_id, graph=graph, inputs=json.loads(inputs))
        )
    finally:
        store.close()
    print(outcome.model_dump_json(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""Durable pydantic-graph workflows: what a graph author imports from agentledger.

Graphs are written with pydantic-graph's own API (`pydantic_graph.GraphBuilder`); inside
a step, `agent_step` runs a catalog agent as a recorded agent run and `wait_for_input`
pauses the run for human input. See `handlers/graphs/executor.py` for the determinism
rules.
"""

from agentledger.handlers.graphs.executor import agent_step, wait_for_input

__all__ = ["agent_step", "wait_for_input"]

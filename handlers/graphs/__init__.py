"""Durable pydantic-graph workflows: what a graph author imports from agentledger.

Graphs are written with pydantic-graph's own API (`pydantic_graph.GraphBuilder`); inside
a step, `agent_step` runs a catalog agent as a recorded agent run and `wait_for_input`
pauses the run for human input; `call_agents` runs agents as child tasks over NATS
(in parallel, on any worker) while the run waits without holding a worker. See `handlers/graphs/executor.py` for the determinism
rules.
"""

from agentledger.handlers.graphs.executor import agent_step, call_agents, wait_for_input

__all__ = ["agent_step", "call_agents", "wait_for_input"]

"""Streaming runs: pydantic-ai's own stream events, through the agent's processors, out
on `<prefix>.stream.<task_id>` with flow control (`agentledger.domain.streaming`)."""

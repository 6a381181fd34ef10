"""Tool middleware around an agent's tools: rate limit, cache, log, retry, timeout and a
circuit breaker, each decision recorded on the run (`agentledger.domain.tools`)."""

from agentledger.handlers.tools.middleware import (
    ToolMiddleware,
    ToolRefused,
    ToolTimedOut,
    reset_circuit_breakers,
    tool_state,
    use_tool_state,
    with_middleware,
)

__all__ = [
    "ToolMiddleware",
    "ToolRefused",
    "ToolTimedOut",
    "reset_circuit_breakers",
    "tool_state",
    "use_tool_state",
    "with_middleware",
]

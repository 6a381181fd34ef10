"""Tool patterns: middleware around an agent's tools (rate limit, cache, log, retry,
timeout, circuit breaker; each decision recorded on the run), composite tools whose
sub-calls are recorded, and side-effecting tools with a crash policy and idempotency
keys."""

from agentledger.handlers.tools.composite import composite, sub_call
from agentledger.handlers.tools.effects import idempotency_key, side_effect
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
    "composite",
    "idempotency_key",
    "reset_circuit_breakers",
    "side_effect",
    "sub_call",
    "tool_state",
    "use_tool_state",
    "with_middleware",
]

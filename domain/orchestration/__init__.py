"""Multi-agent orchestration: the message envelope and the shared scratchpad."""

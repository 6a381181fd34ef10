"""Streaming a run's output as it happens: the chunk contract and the flow control."""

"""Shared state for the tool middleware: the result cache and the rate limits."""

"""Application and entrypoints: agent runner, worker, relay, queries, CLI."""

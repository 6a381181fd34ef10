"""Pure domain model of agentledger: task contracts, aggregates and their events, maths.

Nothing here performs I/O or imports the broker, the database drivers, structlog or
pydantic-ai (import-linter enforces it in CI).
"""

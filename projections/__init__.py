"""Read models folded from the event log, each applied exactly once under tracking.

Pure: projections import only `domain`, the standard library and pydantic. Their SQL
is written once for SQLite and PostgreSQL; `agentledger.infra.view_store` supplies the cursor.
"""

"""Adapters: settings, event store, NATS and embedded servers, PostgreSQL, logging."""

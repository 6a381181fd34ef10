"""Multi-agent orchestration over the bus: child tasks dispatched by graph runs."""

"""Semantic routing: the router (catalog routes + embedder + fit), the route worker,
and the `agentledger route` commands."""

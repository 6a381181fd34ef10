"""`RunLeases.acquire` when the lease it meets lapses in the middle of nats-py's create.

nats-py's `KeyValue.create`, refused because the key exists, reads the key to see whether
it is a delete marker; when the lease's TTL removes it in between, that read raises
`KeyNotFoundError` out of `create`. CI met it (test_run_leases, 2026-12-06): the lease is
free by then, so acquiring must take it, not fail the delivery."""

from __future__ import annotations

from typing import Any

from nats.js.errors import KeyNotFoundError

from agentledger.infra.leases import Lease, RunLeases


class LapsingKv:
    """A key-value bucket whose first create meets a lease that lapses meanwhile."""

    def __init__(self) -> None:
        self.creates = 0

    async def create(self, key: str, value: bytes) -> int:
        self.creates += 1
        if self.creates == 1:
            raise KeyNotFoundError()
        return 7

    async def get(self, key: str) -> Any:  # pragma: no cover - not reached
        raise AssertionError("acquire read a key it could create")


async def test_a_lease_that_lapses_during_create_is_taken() -> None:
    kv = LapsingKv()
    leases = RunLeases(kv, 5.0, "worker-a")  # type: ignore[arg-type]
    got = await leases.acquire("run-1")
    assert isinstance(got, Lease) and got.revision == 7
    assert kv.creates == 2

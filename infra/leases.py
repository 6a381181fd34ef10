"""Run leases: one driver per run across worker processes, in a NATS KV bucket.

JetStream redelivers a task whose AckWait passes without a heartbeat. The first worker
may still be driving the run (a stalled process, a connection that dropped heartbeats
but not the model calls), and without a guard both workers then call the model and run
tools until the first save of one conflicts with the other's. A lease closes that
window:

- a worker takes the run's lease (`<PREFIX>_LEASES`, key `run.<run id>`, created only
  if absent) before it drives the run, renews it with every heartbeat, and deletes it
  when it lets the run go;
- another worker that receives the same task while the lease is held does not drive
  the run: it hands the message back with a delay (or, on the last delivery, waits for
  the lease), and later finds the run finished or takes it over;
- the bucket's TTL (`AGENTLEDGER_LEASE_TTL_S`, default the AckWait) ends the lease of a
  worker that died or stopped renewing; a driver checks its lease before every model
  request and tool step (`Lease.check`), and stops (`LeaseLost`) once it has not renewed
  it for 3/4 of the TTL or another worker has taken it. A model call already under way
  when the lease lapses can still finish, and its save then conflicts with the new
  driver's (the version check).

The bucket's TTL is set when it is created; a worker reads it from the bucket, so a
changed setting takes effect only on a new bucket.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from agentledger.infra.event_store import RunSuperseded

__all__ = ["Held", "Lease", "LeaseLost", "RunLeases", "lease_bucket", "worker_holder"]

log = structlog.get_logger("agentledger.leases")

CHECK_FRACTION = 0.75
"""A lease not renewed for this fraction of the TTL no longer lets its holder drive."""


class LeaseLost(RunSuperseded):
    """This worker may no longer drive the run: another worker holds its lease, or the
    lease was not renewed in time."""


def lease_bucket(prefix: str) -> str:
    return f"{prefix.upper()}_LEASES"


def worker_holder() -> str:
    """Who holds a lease: host, process and a random part (a restarted process with
    the same pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Lease:
    """A held run lease. `renewed_at` and `lost` are written by the renewing thread."""

    run_id: str
    key: str
    holder: str
    ttl_s: float
    revision: int
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False
    released: bool = False

    def check(self) -> None:
        """Raise `LeaseLost` unless this worker may still drive the run."""
        if self.lost:
            raise LeaseLost(f"run {self.run_id}: another worker took over its lease")
        stale = time.monotonic() - self.renewed_at
        if stale > self.ttl_s * CHECK_FRACTION:
            raise LeaseLost(
                f"run {self.run_id}: lease not renewed for {stale:.1f} s (TTL {self.ttl_s:g} s)"
            )


@dataclass(frozen=True)
class Held:
    """Another worker holds the lease."""

    holder: str
    remaining_s: float
    """How long the lease may last if its holder stops renewing it (an upper bound)."""


class RunLeases:
    """Leases of one worker process (`holder`) in the prefix's bucket."""

    def __init__(self, kv: KeyValue, ttl_s: float, holder: str) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.holder = holder
        self._serial = 0

    @classmethod
    async def open(
        cls, js: JetStreamContext, prefix: str, ttl_s: float, holder: str, replicas: int = 1
    ) -> RunLeases:
        """Bind the bucket, creating it (with `ttl_s`) if missing; the TTL in force is
        the bucket's."""
        bucket = lease_bucket(prefix)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    description="agentledger run leases: one driver per run",
                    history=1,
                    ttl=ttl_s,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    max_value_size=1024,
                )
            )
        status = await kv.status()
        actual = float(status.ttl or ttl_s)
        if abs(actual - ttl_s) > 1e-6:
            log.warning(
                "the lease bucket's TTL differs from AGENTLEDGER_LEASE_TTL_S; using the bucket's",
                bucket=bucket,
                bucket_ttl_s=actual,
                setting_ttl_s=ttl_s,
            )
        return cls(kv, actual, holder)

    def _holder(self) -> str:
        """This process's holder name for one more lease (each delivery its own)."""
        self._serial += 1
        return f"{self.holder}#{self._serial}"

    def _value(self, run_id: str, holder: str) -> bytes:
        return json.dumps({"holder": holder, "run_id": run_id, "ttl_s": self.ttl_s}).encode()

    async def acquire(self, run_id: str) -> Lease | Held:
        """Take the run's lease, or say who holds it."""
        key = f"run.{run_id}"
        holder = self._holder()
        value = self._value(run_id, holder)
        for _ in range(3):
            try:
                revision = await self.kv.create(key, value)
                return Lease(run_id, key, holder, self.ttl_s, revision)
            except KeyWrongLastSequenceError:
                pass
            except KeyNotFoundError:
                # nats-py's create, refused because the key exists, reads it to see
                # whether it is a delete marker; a lease that lapsed (its TTL) in between
                # is gone by then. Free again: try again.
                continue
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                continue  # released or expired in between: try again
            try:
                other = str(json.loads(entry.value or b"{}").get("holder", "?"))
            except ValueError:
                other = "?"
            return Held(other, self.ttl_s)  # at most: the entry does not say its age
        return Held("?", self.ttl_s)

    async def renew(self, lease: Lease) -> None:
        """Write the lease again (its TTL starts over); mark it lost if another worker
        took it. Other failures leave it as it was (it goes stale by itself)."""
        if lease.lost or lease.released:
            return
        started = time.monotonic()
        try:
            lease.revision = await self.kv.update(
                lease.key, self._value(lease.run_id, lease.holder), last=lease.revision
            )
            lease.renewed_at = started
        except KeyWrongLastSequenceError:
            lease.lost = True
            log.warning("run lease taken over by another worker", run_id=lease.run_id)

    async def release(self, lease: Lease) -> None:
        """Delete the lease if this worker still holds it."""
        if lease.released or lease.lost:
            return
        lease.released = True
        try:
            await self.kv.delete(lease.key, last=lease.revision)
        except KeyWrongLastSequenceError:
            pass  # taken over meanwhile: it is the other worker's now

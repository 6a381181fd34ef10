"""Where the tool middleware keeps what every worker must share: cached results and the
rate limits' logs.

`NatsToolState` keeps both in NATS JetStream KV buckets (`<PREFIX>_TOOL_CACHE`,
`<PREFIX>_TOOL_RATES`), created on first use: a cached result survives a worker restart
and is seen by every worker; a rate limit holds across every worker process, because a
start is only taken by a compare-and-set on the limit's key (`kv.update(last=...)`).
`MemoryToolState` is the same in one process, for tests and for agents run outside a
worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

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

from agentledger.domain.tools.policies import MAX_CACHE_TTL_S, admit

__all__ = ["MemoryToolState", "NatsToolState", "ToolState", "cache_bucket", "rate_bucket"]

log = structlog.get_logger("agentledger.tools")

_MISS = object()
_CAS_TRIES = 50
"""Compare-and-set attempts per start before the limiter gives up (contention)."""


class ToolState(Protocol):
    async def cache_get(self, key: str) -> tuple[bool, Any]:
        """(True, value) for a live entry, else (False, None)."""
        ...

    async def cache_put(self, key: str, value: Any, ttl_s: float) -> None: ...

    async def take(self, key: str, calls: int, per_s: float) -> float:
        """Take one start of the limit at `key`: 0 when taken, else the seconds until
        one may be free (nothing taken)."""
        ...


def cache_bucket(prefix: str) -> str:
    return f"{prefix.upper()}_TOOL_CACHE"


def rate_bucket(prefix: str) -> str:
    return f"{prefix.upper()}_TOOL_RATES"


class MemoryToolState:
    """Cache and rate limits in this process only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}
        self._starts: dict[str, list[float]] = {}

    async def cache_get(self, key: str) -> tuple[bool, Any]:
        found = self._cache.get(key)
        if found is None or found[0] <= self._clock():
            self._cache.pop(key, None)
            return False, None
        return True, found[1]

    async def cache_put(self, key: str, value: Any, ttl_s: float) -> None:
        self._cache[key] = (self._clock() + ttl_s, value)

    async def take(self, key: str, calls: int, per_s: float) -> float:
        starts, wait = admit(self._starts.get(key, []), self._clock(), calls, per_s)
        if starts is not None:
            self._starts[key] = starts
        return wait


class NatsToolState:
    """Cache and rate limits in NATS KV buckets, shared by every worker of a prefix."""

    def __init__(
        self,
        js: JetStreamContext,
        prefix: str,
        *,
        replicas: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self._prefix = prefix
        self._replicas = replicas
        self._clock = clock
        self._buckets: dict[str, KeyValue] = {}
        self._opening = asyncio.Lock()

    async def _bucket(self, name: str, description: str, ttl_s: float) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is not None:
            return kv
        async with self._opening:
            if name not in self._buckets:
                try:
                    kv = await self._js.key_value(name)
                except BucketNotFoundError:
                    kv = await self._js.create_key_value(
                        KeyValueConfig(
                            bucket=name,
                            description=description,
                            history=1,
                            ttl=ttl_s,
                            storage=StorageType.FILE,
                            replicas=self._replicas,
                        )
                    )
                self._buckets[name] = kv
        return self._buckets[name]

    async def _cache(self) -> KeyValue:
        return await self._bucket(
            cache_bucket(self._prefix), "agentledger tool results (cache)", MAX_CACHE_TTL_S
        )

    async def _rates(self) -> KeyValue:
        return await self._bucket(
            rate_bucket(self._prefix), "agentledger tool rate limits", 86_400.0
        )

    async def cache_get(self, key: str) -> tuple[bool, Any]:
        kv = await self._cache()
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False, None
        try:
            data = json.loads(entry.value or b"")
            expires, value = float(data["expires"]), data["value"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable tool cache entry; ignored", key=key)
            return False, None
        if expires <= self._clock():
            return False, None
        return True, value

    async def cache_put(self, key: str, value: Any, ttl_s: float) -> None:
        kv = await self._cache()
        payload = json.dumps(
            {"expires": self._clock() + ttl_s, "value": value}, ensure_ascii=False
        ).encode("utf-8", "surrogatepass")
        await kv.put(key, payload)

    async def take(self, key: str, calls: int, per_s: float) -> float:
        kv = await self._rates()
        for _ in range(_CAS_TRIES):
            try:
                entry = await kv.get(key)
                revision: int | None = entry.revision
                starts = _starts(entry.value)
            except (KeyNotFoundError, KeyDeletedError):
                revision, starts = None, []
            taken, wait = admit(starts, self._clock(), calls, per_s)
            if taken is None:
                return wait
            payload = json.dumps(taken).encode()
            try:
                if revision is None:
                    await kv.create(key, payload)
                else:
                    await kv.update(key, payload, last=revision)
                return 0.0
            except KeyWrongLastSequenceError:
                continue  # another worker took a start meanwhile: read again
        return 0.01  # heavy contention: the caller waits a little and tries again


def _starts(value: bytes | None) -> list[float]:
    try:
        data = json.loads(value or b"[]")
        return [float(t) for t in data] if isinstance(data, list) else []
    except (ValueError, TypeError):
        return []

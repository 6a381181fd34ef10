"""Heartbeats for in-flight task messages, sent from a thread with its own NATS connection.

A run keeps its message alive by telling JetStream it is in progress (`+WPI` on the
message's ack subject) more often than AckWait. Sent from the worker's event loop, those
beats come late when the loop is saturated (hundreds of runs on two busy cores: the
chaos bench reproduced it with a 2 s AckWait), and JetStream then redelivers a task that
a worker still holds. An ack is a plain publish to the ack subject, which any connection
may send, so the beats go out from a thread of their own, whatever the runs are doing.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import nats
import structlog

from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings

__all__ = ["Heartbeats"]

log = structlog.get_logger("agentledger.worker")

_IN_PROGRESS = b"+WPI"


class Heartbeats:
    """Beats every `interval` seconds for each registered ack subject."""

    def __init__(self, settings: Settings, name: str, interval: float) -> None:
        self._settings = settings
        self._name = name
        self._interval = interval
        self._subjects: dict[int, str] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Connect (in the thread) and start beating; raises if the connection fails."""
        self._thread = threading.Thread(
            target=self._run, name="agentledger-heartbeats", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the heartbeat connection did not come up")
        if self._error is not None:
            raise self._error

    def add(self, ack_subject: str) -> int:
        """Keep this message alive until `remove(token)`."""
        token = next(self._tokens)
        with self._lock:
            self._subjects[token] = ack_subject
        return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._subjects.pop(token, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._beat())
        except BaseException as e:  # reported to start(), or logged once running
            self._error = e
            if self._ready.is_set():
                log.error("heartbeat thread stopped", error=str(e))
            self._ready.set()

    async def _beat(self) -> None:
        nc = await nats.connect(**nats_connect_kwargs(self._settings, f"{self._name}-heartbeats"))
        self._ready.set()
        try:
            loop = asyncio.get_running_loop()
            while not self._stop.is_set():
                beat_at = loop.time() + self._interval
                while not self._stop.is_set() and loop.time() < beat_at:
                    await asyncio.sleep(0.05)  # wakes up soon after stop()
                with self._lock:
                    subjects = list(self._subjects.values())
                for subject in subjects:
                    try:
                        await nc.publish(subject, _IN_PROGRESS)
                    except Exception as e:  # the next beat may get through
                        log.warning("heartbeat failed; AckWait may expire", error=str(e))
                        break
        finally:
            await nc.close()

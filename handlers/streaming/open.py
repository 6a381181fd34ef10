"""Opening a task's stream on the worker's NATS connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.streaming.processors import build_processors
from agentledger.handlers.streaming.publisher import StreamPublisher
from agentledger.infra.settings import Settings

if TYPE_CHECKING:
    from agentledger.handlers.catalog import CatalogEntry

__all__ = ["stream_opener"]


def stream_opener(
    connection: Callable[[], Any], settings: Settings
) -> Callable[[RunAgent, CatalogEntry], Awaitable[StreamPublisher]]:
    """Opens streams on `connection()` (the worker's NATS client, once connected). What
    the task sets explicitly wins over the agent's `[agents.<name>.stream]` defaults."""

    async def open_stream(task: RunAgent, entry: CatalogEntry) -> StreamPublisher:
        spec = entry.stream
        chosen = task.model_fields_set

        def pick(field: str, default: Any) -> Any:
            if field in chosen or spec is None:
                return getattr(task, field)
            return default if default is not None else getattr(task, field)

        return await StreamPublisher(
            connection(),
            settings.subject_prefix,
            task,
            processors=build_processors(spec),
            stall_s=settings.stream_stall_s,
            backpressure=pick("stream_backpressure", spec.backpressure if spec else None),
            window=pick("stream_window", spec.window if spec else None),
            buffer=pick("stream_buffer", spec.buffer if spec else None),
        ).start()

    return open_stream

"""Route task messages (`<prefix>.tasks.route`), checked like agent tasks before anything
is scored: UTF-8 JSON, no NUL or lone surrogate anywhere, bounded nesting, strict fields,
a prompt within AGENTLEDGER_MAX_PROMPT_CHARS."""

from __future__ import annotations

from agentledger.domain.errors import ErrorKind
from agentledger.domain.routing.tasks import RouteTask
from agentledger.handlers.intake import RawTask, Rejection, parse_model

__all__ = ["parse_route_task"]


def parse_route_task(raw: RawTask, *, max_prompt_chars: int) -> RouteTask:
    """The route task in `raw`, or a `Rejection` saying exactly what is wrong."""
    task = parse_model(raw, RouteTask, "RouteTask")
    key = task.task_id
    if len(task.prompt) > max_prompt_chars:
        raise Rejection(
            ErrorKind.PROMPT_TOO_LARGE,
            f"prompt has {len(task.prompt)} characters; the limit is {max_prompt_chars}"
            " (AGENTLEDGER_MAX_PROMPT_CHARS)",
            key=key,
            task_id=task.task_id,
        )
    return task

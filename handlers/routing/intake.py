"""Route task messages (`<prefix>.tasks.route`), checked like agent tasks before anything
is scored: UTF-8 JSON, no NUL or lone surrogate anywhere, bounded nesting, strict fields,
a prompt within AGENTLEDGER_MAX_PROMPT_CHARS."""

from __future__ import annotations

import json

from pydantic import ValidationError

from agentledger.domain.errors import ErrorKind
from agentledger.domain.rejection import valid_id_or_none
from agentledger.domain.routing.tasks import RouteTask
from agentledger.handlers.intake import (
    RawTask,
    Rejection,
    content_problem,
    describe_errors,
    load_json,
)

__all__ = ["parse_route_task"]


def parse_route_task(raw: RawTask, *, max_prompt_chars: int) -> RouteTask:
    """The route task in `raw`, or a `Rejection` saying exactly what is wrong."""
    key = valid_id_or_none(raw.msg_id) or raw.fallback_key
    _, data = load_json(raw.body, key, what="RouteTask")
    if not isinstance(data, dict):
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload must be a JSON object (RouteTask), got {type(data).__name__}",
            key=key,
        )
    task_id = valid_id_or_none(data.get("task_id"))
    if task_id is not None:
        key = task_id
    problem = content_problem(data, what="RouteTask")
    if problem:
        raise Rejection(ErrorKind.INVALID_PAYLOAD, problem, key=key, task_id=task_id)
    try:
        task = RouteTask.model_validate_json(json.dumps(data))
    except ValidationError as e:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"invalid RouteTask: {describe_errors(e)}",
            key=key,
            task_id=task_id,
        ) from None
    if len(task.prompt) > max_prompt_chars:
        raise Rejection(
            ErrorKind.PROMPT_TOO_LARGE,
            f"prompt has {len(task.prompt)} characters; the limit is {max_prompt_chars}"
            " (AGENTLEDGER_MAX_PROMPT_CHARS)",
            key=key,
            task_id=task.task_id,
        )
    return task

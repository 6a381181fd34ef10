"""Graph task messages: what arrives on `<prefix>.tasks.graph.*`, checked like agent
tasks (UTF-8 JSON, no NUL or lone surrogate anywhere, bounded nesting and size, strict
fields) before anything runs.

- `<prefix>.tasks.graph.<graph>`: a `RunGraph` whose `graph` is that name;
- `<prefix>.tasks.graph.resume`: a `ResumeGraph` (its `resume_id` defaults to the
  message's `Nats-Msg-Id`);
- `<prefix>.tasks.graph.cancel`: a `CancelGraph`;
- `<prefix>.tasks.graph.child`: a `ChildDone` (a dispatched child task ended; sent by
  the worker that ran it).
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.tasks import CancelGraph, ChildDone, ResumeGraph, RunGraph
from agentledger.domain.rejection import valid_id_or_none
from agentledger.handlers.intake import (
    RawTask,
    Rejection,
    content_problem,
    describe_errors,
    load_json,
)

__all__ = ["GRAPH_MAX_BODY_BYTES", "GRAPH_MAX_NESTING", "GraphMessage", "parse_graph_message"]

GRAPH_MAX_NESTING = 32
"""Objects and arrays nest at most this deep in a graph message (inputs are JSON)."""
GRAPH_MAX_BODY_BYTES = 256 * 1024
"""The largest graph message accepted (inputs are stored with the run)."""

GraphMessage = RunGraph | ResumeGraph | CancelGraph | ChildDone


def parse_graph_message(raw: RawTask) -> GraphMessage:
    """The graph message in `raw`, or a `Rejection` saying exactly what is wrong."""
    key = valid_id_or_none(raw.msg_id) or raw.fallback_key
    kind = raw.subject.rsplit(".", 1)[-1]
    models: dict[str, type[GraphMessage]] = {
        "resume": ResumeGraph,
        "cancel": CancelGraph,
        "child": ChildDone,
    }
    model = models.get(kind, RunGraph)
    what = model.__name__
    if len(raw.body) > GRAPH_MAX_BODY_BYTES:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload has {len(raw.body)} bytes; a {what} has at most {GRAPH_MAX_BODY_BYTES}",
            key=key,
        )
    _, data = load_json(raw.body, key, what=what, max_nesting=GRAPH_MAX_NESTING)
    if not isinstance(data, dict):
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload must be a JSON object ({what}), got {type(data).__name__}",
            key=key,
        )
    task_id = valid_id_or_none(data.get("task_id"))
    if model is RunGraph and task_id is not None:
        key = task_id
    problem = content_problem(data, max_nesting=GRAPH_MAX_NESTING, what=what, why="")
    if problem:
        raise Rejection(ErrorKind.INVALID_PAYLOAD, problem, key=key, task_id=task_id)
    if model is ResumeGraph and "resume_id" not in data and valid_id_or_none(raw.msg_id):
        data["resume_id"] = raw.msg_id
    try:
        # As JSON, so strictness means what the schema says.
        message = model.model_validate_json(json.dumps(data))
    except ValidationError as e:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"invalid {what}: {describe_errors(e)}",
            key=key,
            task_id=task_id,
        ) from None
    if isinstance(message, RunGraph) and message.graph != kind:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"subject names graph {kind[:40]!r} but the payload names {message.graph!r}",
            key=key,
            task_id=message.task_id,
        )
    return message

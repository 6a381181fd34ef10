"""A workflow's messages, read from its graph run's events.

A workflow is a graph run that dispatches child tasks (`call_agents`). Its messages are
not stored twice: the events that drive the run are the record of them.

- `ChildrenDispatched` holds one request (or handoff) message per child: its
  `message_id`, the child's agent (the receiver) and prompt (the content). The sender
  is the workflow's graph. Children dispatched as a broadcast share one message
  instead: its id is their `broadcast_id`, its receiver `all`.
- `ChildFinished` is the child's response: its id is the request's with `res-` for
  `req-` (`response_id`), the sender the child's agent, the receiver the graph, the
  content the child's output (or `{"error": {...}}` for a child that did not complete),
  and the causation id the request's (the broadcast's, for a broadcast).

Both carry the event's timestamp as `at`. `workflow_messages` gives them in the order
they were recorded; the same function serves the read side (`workflow messages`) and
the worker that publishes each response on `<prefix>.messages.<workflow>.<receiver>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.orchestration.messages import (
    BROADCAST,
    MAX_CONTENT_CHARS,
    AgentMessage,
    MessageKind,
)

__all__ = [
    "answer_message",
    "bounded",
    "caused_by",
    "request_message",
    "response_id",
    "response_message",
    "workflow_messages",
]


PREVIEW_CHARS = 4_000


def bounded(content: Any) -> Any:
    """`content` if it fits a message; else a preview of its JSON and its length (a
    prompt or an output may be longer than a message's content)."""
    text = json.dumps(content, ensure_ascii=False, default=str)
    if len(text) <= MAX_CONTENT_CHARS:
        return content
    return {"truncated": True, "chars": len(text), "preview": text[:PREVIEW_CHARS]}


def response_id(request_id: str) -> str:
    """The response's message id for the request `request_id` (`req-x` -> `res-x`)."""
    return "res-" + request_id.removeprefix("req-")


def caused_by(child: dict[str, Any]) -> str:
    """The message a dispatched child answers: its broadcast's, or its own request."""
    return str(child.get("broadcast_id") or child["message_id"])


def request_message(
    workflow_task_id: str, graph: str, child: dict[str, Any], at: Any = None
) -> AgentMessage:
    """The request (or handoff, or broadcast) message a dispatched child entry stands
    for (children of one broadcast stand for the same message)."""
    kind = MessageKind(child.get("kind", MessageKind.REQUEST))
    broadcast = kind == MessageKind.BROADCAST
    fields: dict[str, Any] = {
        "message_id": caused_by(child),
        "correlation_id": workflow_task_id,
        "causation_id": child.get("causation_id"),
        "sender": graph,
        "receiver": BROADCAST if broadcast else child["agent"],
        "kind": kind,
        "content": bounded(child["prompt"]),
    }
    if at is not None:
        fields["at"] = at
    return AgentMessage(**fields)


def response_message(
    workflow_task_id: str,
    graph: str,
    child: dict[str, Any],
    outcome: dict[str, Any],
    at: Any = None,
) -> AgentMessage:
    """The response of a child (`outcome`: its `RunOutcome` as JSON)."""
    return answer_message(
        workflow_task_id,
        graph,
        child["agent"],
        response_id(child["message_id"]),
        caused_by(child),
        outcome,
        at,
    )


def answer_message(
    workflow_task_id: str,
    graph: str,
    agent: str,
    message_id: str,
    causation_id: str,
    outcome: dict[str, Any],
    at: Any = None,
) -> AgentMessage:
    """A child's response `message_id` to the message `causation_id`: its output, or
    `{"error": ...}` when it did not complete."""
    if outcome.get("status") == "completed":
        content: Any = outcome.get("output")
    else:
        content = {"error": outcome.get("error") or {"kind": str(outcome.get("status"))}}
    fields: dict[str, Any] = {
        "message_id": message_id,
        "correlation_id": workflow_task_id,
        "causation_id": causation_id,
        "sender": agent,
        "receiver": graph,
        "kind": MessageKind.RESPONSE,
        "content": bounded(content),
    }
    if at is not None:
        fields["at"] = at
    return AgentMessage(**fields)


def workflow_messages(events: Iterable[object]) -> list[AgentMessage]:
    """Every message of the workflow whose graph run recorded `events`, in order."""
    messages: list[AgentMessage] = []
    task_id, graph = "", ""
    children: dict[str, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, GraphRun.GraphStarted):
            task_id, graph = e.task_id, e.graph
        elif isinstance(e, GraphRun.ChildrenDispatched):
            sent: set[str] = set()
            for child in e.children:
                children[child["task_id"]] = child
                if caused_by(child) not in sent:  # a broadcast is one message
                    sent.add(caused_by(child))
                    messages.append(request_message(task_id, graph, child, e.timestamp))
        elif isinstance(e, GraphRun.ChildFinished):
            found = children.get(e.child_task_id)
            if found is not None:
                outcome = e.outcome if isinstance(e.outcome, dict) else {}
                messages.append(response_message(task_id, graph, found, outcome, e.timestamp))
    return messages

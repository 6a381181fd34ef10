"""The published contract: JSON schemas of the task messages, an AsyncAPI document and
the catalogue of event shapes.

`agentledger schema` writes them to `contracts/`; CI checks the committed copies are
current, so a contract change is always a reviewed diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from agentledger.domain.evaluation.tasks import (
    EvaluationOutcome,
    EvaluationProgress,
    RunEvaluation,
)
from agentledger.domain.event_registry import event_shapes
from agentledger.domain.graphs.tasks import CancelGraph, GraphOutcome, ResumeGraph, RunGraph
from agentledger.domain.monitoring.rules import AlertMessage
from agentledger.domain.orchestration.messages import AgentMessage
from agentledger.domain.routing.tasks import RouteOutcome, RouteTask
from agentledger.domain.streaming.chunks import StreamAck, StreamChunk
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.queries import VIEWS

__all__ = ["asyncapi_document", "json_schemas", "write_contracts"]


def json_schemas() -> dict[str, Any]:
    return {
        "RunAgent": RunAgent.model_json_schema(),
        "RunOutcome": RunOutcome.model_json_schema(),
        "RunGraph": RunGraph.model_json_schema(),
        "ResumeGraph": ResumeGraph.model_json_schema(),
        "CancelGraph": CancelGraph.model_json_schema(),
        "GraphOutcome": GraphOutcome.model_json_schema(),
        "RouteTask": RouteTask.model_json_schema(),
        "RouteOutcome": RouteOutcome.model_json_schema(),
        "AgentMessage": AgentMessage.model_json_schema(),
        "StreamChunk": StreamChunk.model_json_schema(),
        "StreamAck": StreamAck.model_json_schema(),
        "AlertMessage": AlertMessage.model_json_schema(),
        "RunEvaluation": RunEvaluation.model_json_schema(),
        "EvaluationOutcome": EvaluationOutcome.model_json_schema(),
        "EvaluationProgress": EvaluationProgress.model_json_schema(),
    }


def asyncapi_document(prefix: str = "ledger") -> dict[str, Any]:
    """AsyncAPI 3.0 of the task, result and query subjects (spec-only broker, no I/O)."""
    broker = NatsBroker()

    @broker.subscriber(
        f"{prefix}.tasks.run.{{agent}}",
        title="RunAgent",
        description="Run an agent. Header Nats-Msg-Id must be the task_id (idempotency key); "
        "optional header Agentledger-Reply-To names a subject that also gets the outcome "
        "(at most 256 printable ASCII characters, no whitespace or wildcards, not a $ "
        "subject and not under the prefix; otherwise it is ignored).",
    )
    @broker.publisher(
        f"{prefix}.results.{{task_id}}",
        title="RunOutcome",
        description="The outcome of a task, published once its events are committed.",
    )
    async def run_agent(task: RunAgent) -> RunOutcome:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    graph_reply = (
        " Optional header Agentledger-Reply-To as for RunAgent; the outcome (a"
        " GraphOutcome) also goes to <prefix>.results.<task_id>."
    )

    @broker.subscriber(
        f"{prefix}.tasks.graph.{{graph}}",
        title="RunGraph",
        description="Run a catalog graph. Header Nats-Msg-Id must be the task_id. The"
        " names resume and cancel are the two subjects below, not graphs." + graph_reply,
    )
    async def run_graph(task: RunGraph) -> GraphOutcome:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    @broker.subscriber(
        f"{prefix}.tasks.graph.resume",
        title="ResumeGraph",
        description="Give a paused graph run its input; applied once per resume_id (which"
        " defaults to the Nats-Msg-Id). A rejected resume is answered on the reply subject"
        " only, never over the run's own outcome.",
    )
    async def resume_graph(task: ResumeGraph) -> GraphOutcome:  # pragma: no cover
        raise RuntimeError("specification only")

    @broker.subscriber(
        f"{prefix}.tasks.graph.cancel",
        title="CancelGraph",
        description="End a running or paused graph run as failed (cancelled).",
    )
    async def cancel_graph(task: CancelGraph) -> GraphOutcome:  # pragma: no cover
        raise RuntimeError("specification only")

    @broker.subscriber(
        f"{prefix}.tasks.route",
        title="RouteTask",
        description="Route a prompt to the catalog route that fits it by meaning, record the"
        " decision (every score, the thresholds, the chosen route, the method), then run the"
        " route's agent or graph as a run with the same task_id. Header Nats-Msg-Id must be"
        " the task_id. The RouteOutcome names the route; no fitting route and no fallback:"
        " status failed, error kind no_route."
        + graph_reply.replace("GraphOutcome", "RouteOutcome"),
    )
    async def route_task(task: RouteTask) -> RouteOutcome:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    @broker.subscriber(
        f"{prefix}.tasks.eval.{{dataset}}",
        title="RunEvaluation",
        description="Evaluate the catalog dataset `dataset`: every case runs as a RunAgent"
        " task (task id `<task_id>:case-<n>`, metadata evaluation/eval_case) on any worker,"
        " at most `concurrency` at once, and is scored with the dataset's evaluators."
        " Header Nats-Msg-Id must be the task_id. A worker crash resumes the evaluation"
        " without re-running finished cases. Unknown dataset: rejected, error kind"
        " unknown_dataset; unreadable dataset: dataset_invalid."
        + graph_reply.replace("GraphOutcome", "EvaluationOutcome"),
    )
    async def run_evaluation(task: RunEvaluation) -> EvaluationOutcome:  # pragma: no cover
        raise RuntimeError("specification only")

    @broker.publisher(
        f"{prefix}.evaluations.{{task_id}}.progress",
        title="EvaluationProgress",
        description="Best-effort progress of a running evaluation (core NATS): cases done"
        " and passed, after each scored case, and once when it finishes.",
    )
    async def evaluation_progress() -> EvaluationProgress:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    @broker.publisher(
        f"{prefix}.stream.{{task_id}}",
        title="StreamChunk",
        description="The chunks of a task published with stream: true, in order (seq 1, 2,"
        " ...): text, tool_call, tool_result, json, gap (chunks dropped before it) and a"
        " last end chunk with the run's status. Kept a while in the <PREFIX>_STREAMS"
        " JetStream stream, so a subscriber may join late or resume after a reconnect.",
    )
    @broker.subscriber(
        f"{prefix}.stream.{{task_id}}.ack",
        title="StreamAck",
        description="Flow control for stream_backpressure slow_down and drop_oldest: the"
        ' subscriber publishes {"ack": <seq>} for the chunks it has processed; at most'
        " stream_window chunks are in flight without an ack.",
    )
    async def stream_chunks(ack: StreamAck) -> StreamChunk:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    @broker.publisher(
        f"{prefix}.alerts.{{agent}}.{{metric}}",
        title="AlertMessage",
        description="An alert rule's alert raised or cleared for an agent (agent `_unknown`:"
        " names the catalog does not have), published by `agentledger project` once"
        " recorded (Alert events).",
    )
    async def alerts() -> AlertMessage:  # pragma: no cover - spec only
        raise RuntimeError("specification only")

    for view, query in VIEWS.items():

        def responder(arguments: Any) -> dict[str, Any]:  # pragma: no cover - spec only
            raise RuntimeError("specification only")

        responder.__annotations__ = {"arguments": query, "return": dict[str, Any]}
        broker.subscriber(
            f"{prefix}.query.{view}",
            title=f"query.{view}",
            description=f"Request-reply query of the {view} view; "
            'replies {"ok": true, "data": ...} or {"ok": false, "error": ...}.',
        )(responder)

    spec = AsyncAPI(
        broker,
        title="agentledger",
        version="0.1.0",
        description="Event-sourced backend for pydantic-ai agents on NATS JetStream.",
        schema_version="3.0.0",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document


def write_contracts(directory: Path, prefix: str = "ledger") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(prefix), indent=2, sort_keys=True) + "\n")
    written.append(path)
    # The events the relay publishes on <prefix>.events.<Aggregate>.<Event>: topic,
    # class version and fields of each.
    path = directory / "events.json"
    path.write_text(json.dumps(event_shapes(), indent=2, sort_keys=True) + "\n")
    written.append(path)
    return written

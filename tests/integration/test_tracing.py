"""OpenTelemetry traces of the write path, on a real nats-server: one trace per task
delivery (FastStream's consumer span, carrying the task's ids), with pydantic-ai's agent
run, model request and tool spans under it. Off by default."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
from conftest import MakeSettings
from faststream.opentelemetry.middleware import TelemetryMiddleware
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentledger.domain.ids import run_id_for
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.bootstrap import WorkerService
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from agentledger.infra.telemetry import TelemetryUnavailable
from support.harness import nats_client, running_worker

pytestmark = pytest.mark.asyncio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


async def _finished_process_span(
    exporter: InMemorySpanExporter, task_id: str, timeout: float = 10
) -> ReadableSpan:
    """The delivery's consumer span: it ends after the ack, just after the outcome is out."""
    async with asyncio.timeout(timeout):
        while True:
            found = [
                s
                for s in exporter.get_finished_spans()
                if s.kind is trace.SpanKind.CONSUMER
                and (s.attributes or {}).get("agentledger.task_id") == task_id
            ]
            if found:
                assert len(found) == 1, [s.name for s in found]
                return found[0]
            await asyncio.sleep(0.02)


def _descendants(root: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    assert root.context is not None
    below = []
    for span in spans:
        parent = span.parent
        while parent is not None:
            if parent.span_id == root.context.span_id:
                below.append(span)
                break
            ancestor = by_id.get(parent.span_id)
            parent = ancestor.parent if ancestor is not None else None
    return below


async def test_a_task_is_one_trace_with_its_model_requests_and_tool_calls(
    make_settings: MakeSettings, exporter: InMemorySpanExporter
) -> None:
    settings = make_settings("sqlite")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    task = RunAgent(task_id="traced-1", agent="calculator", prompt="add 2 and 40")
    service = await WorkerService(settings=settings, tracer_provider=provider).start()
    try:
        async with nats_client(settings) as nc:
            outcome = await submit(nc, settings.subject_prefix, task, timeout=20)
        assert outcome is not None and outcome.status == "completed"
        process = await _finished_process_span(exporter, task.task_id)
    finally:
        await service.stop(grace_s=2)

    assert process.name == f"{settings.subject_prefix}.tasks.run.calculator process"
    assert (
        dict(process.attributes or {}).items()
        >= {
            "agentledger.task_id": "traced-1",
            "agentledger.run_id": str(run_id_for("traced-1")),
            "agentledger.agent": "calculator",
            "agentledger.delivery": 1,
            "agentledger.status": "completed",
            "messaging.system": "nats",
        }.items()
    )
    spans = exporter.get_finished_spans()
    below = _descendants(process, spans)
    assert process.context is not None
    assert {s.context.trace_id for s in below if s.context} == {process.context.trace_id}
    names = sorted(s.name for s in below)
    assert names == [
        "chat calculator-fn",
        "chat calculator-fn",
        "execute_tool add",
        "invoke_agent calculator",
    ]
    # The agent run hangs straight off the delivery; requests and the tool call off the run.
    (agent_run,) = (s for s in below if s.name == "invoke_agent calculator")
    assert agent_run.parent is not None and agent_run.parent.span_id == process.context.span_id
    assert agent_run.context is not None
    for span in below:
        if span is not agent_run:
            assert span.parent is not None and span.parent.span_id == agent_run.context.span_id


async def test_tracing_is_off_by_default(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite")
    assert settings.otel_enabled is False
    async with running_worker(settings) as service, nats_client(settings) as nc:
        outcome = await submit(
            nc,
            settings.subject_prefix,
            RunAgent(task_id="untraced-1", agent="calculator", prompt="add 2 and 40"),
            timeout=20,
        )
        assert outcome is not None and outcome.status == "completed"
        assert service.tracer_provider is None
        assert service.worker is not None
        assert not any(
            isinstance(m, TelemetryMiddleware) for m in service.worker.broker.middlewares
        )
    # Nothing installed a provider: every span anywhere in the process is a no-op one.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_tracing_on_without_the_sdk_fails_at_start(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings("sqlite", otel_enabled=True)
    for module in ("opentelemetry.sdk.resources", "opentelemetry.sdk.trace"):
        monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when absent
    with pytest.raises(TelemetryUnavailable, match=r"pip install 'agentledger\[otel\]'"):
        await WorkerService(settings=settings).start()

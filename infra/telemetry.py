"""OpenTelemetry tracing for a worker: the SDK tracer provider and its OTLP exporter.

Built only when `AGENTLEDGER_OTEL_ENABLED` is set. The SDK and the exporter are the
optional `otel` extra, imported here and nowhere else, so the base install runs without
them. The exporter configures itself from the standard `OTEL_EXPORTER_OTLP_*` variables,
and the resource from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from agentledger.infra.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["TelemetryUnavailable", "tracer_provider_for"]

log = structlog.get_logger("agentledger.telemetry")


class TelemetryUnavailable(Exception):
    """Tracing is switched on but the OpenTelemetry SDK is not installed."""


def tracer_provider_for(settings: Settings, service_name: str) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP, or None when tracing is off.

    `service_name` names the service unless `OTEL_SERVICE_NAME` (or `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`) does. Without the OTLP exporter installed, spans are
    made but not exported (a warning says so). The caller shuts the provider down,
    which flushes the spans not exported yet.
    """
    if not settings.otel_enabled:
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TelemetryUnavailable(
            "AGENTLEDGER_OTEL_ENABLED is set but the OpenTelemetry SDK is not installed:"
            " pip install 'agentledger[otel]'"
        ) from None
    # `Resource.create` reads the OTEL_* resource variables; our name only fills the gap
    # it leaves ("unknown_service:python").
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "tracing is on but no exporter is installed; spans are dropped",
            fix="pip install 'agentledger[otel]'",
        )
    else:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider

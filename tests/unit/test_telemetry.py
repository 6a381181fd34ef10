"""The worker's tracer provider: none unless AGENTLEDGER_OTEL_ENABLED, named from the
standard OTEL_* variables first, a clear error when the SDK is missing."""

from __future__ import annotations

import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agentledger.infra.settings import Settings
from agentledger.infra.telemetry import TelemetryUnavailable, tracer_provider_for


def test_off_by_default_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTLEDGER_OTEL_ENABLED", raising=False)
    assert Settings().otel_enabled is False
    assert tracer_provider_for(Settings(), "agentledger-worker") is None


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_OTEL_ENABLED", "true")
    assert Settings().otel_enabled is True


@pytest.mark.parametrize(
    ("env", "expected"), [(None, "agentledger-worker"), ("billing-workers", "billing-workers")]
)
def test_on_builds_a_provider_named_by_otel_service_name_first(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: str
) -> None:
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    if env is None:
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    else:
        monkeypatch.setenv("OTEL_SERVICE_NAME", env)
    provider = tracer_provider_for(Settings(otel_enabled=True), "agentledger-worker")
    assert isinstance(provider, TracerProvider)
    try:
        assert provider.resource.attributes["service.name"] == expected
    finally:
        provider.shutdown()


def test_on_without_the_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)
    with pytest.raises(TelemetryUnavailable) as raised:
        tracer_provider_for(Settings(otel_enabled=True), "agentledger-worker")
    assert "AGENTLEDGER_OTEL_ENABLED" in str(raised.value)
    assert "pip install 'agentledger[otel]'" in str(raised.value)

"""The real HTTP provider path: a catalog agent on an OpenAI-compatible server (a local
stub), through the worker, recorded like any other run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from support.harness import nats_client, run_events, running_worker
from support.openai_stub import openai_stub

pytestmark = pytest.mark.asyncio


def _catalog(tmp_path: Path, base_url: str) -> str:
    path = tmp_path / "http-catalog.toml"
    path.write_text(
        f"""
[agents.remote]
ref = "agentledger.catalog.example_agents:calculator"
model = "openai:stub-model"
base_url = "{base_url}"
price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
"""
    )
    return str(path)


async def test_agent_on_an_openai_compatible_server(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with openai_stub() as (base_url, stub):
        settings: Settings = make_settings(
            "sqlite", catalog=_catalog(tmp_path, base_url), model_api_key="sk-test-secret"
        )
        async with running_worker(settings), nats_client(settings) as nc:
            outcome = await submit(
                nc,
                settings.subject_prefix,
                RunAgent(task_id="http-1", agent="remote", prompt="add 2 and 40"),
            )
    assert outcome is not None and outcome.status == "completed", outcome
    assert outcome.output == "The stub says 42.0."
    assert outcome.usage.requests == 2 and outcome.usage.input_tokens > 0
    assert outcome.cost_usd is not None and outcome.cost_usd > 0
    assert len(stub.requests) == 2
    assert stub.requests[0]["model"] == "stub-model"
    assert any(t["function"]["name"] == "add" for t in stub.requests[0]["tools"])
    assert Counter(run_events(settings, "http-1"))["ToolCallFinished"] == 1


async def test_provider_503_is_retried_not_failed(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with openai_stub(fail_first=2) as (base_url, stub):
        settings: Settings = make_settings("sqlite", catalog=_catalog(tmp_path, base_url))
        async with running_worker(settings), nats_client(settings) as nc:
            outcome = await submit(
                nc,
                settings.subject_prefix,
                RunAgent(task_id="http-2", agent="remote", prompt="add 1 and 1"),
                timeout=60,
            )
    assert outcome is not None and outcome.status == "completed", outcome
    assert outcome.output == "The stub says 2.0."
    # Two 503s, each ending a delivery (the SDK's own retries are off), then two answers.
    assert len(stub.requests) == 4
    assert Counter(run_events(settings, "http-2"))["RunRequested"] == 1

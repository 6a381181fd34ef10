"""Alerts on real NATS, on both stores (issue 13): injected failures trip an error-rate
rule, the alert arrives once; recovery clears it once. Recorded as Alert events and shown
in the projector's Prometheus gauges."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from conftest import Backend, MakeSettings

from agentledger.domain.monitoring.alert import Alert, alert_id
from agentledger.domain.monitoring.rules import AlertMessage
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.event_store import EventStore
from support.harness import nats_client, running_projector, running_worker

CATALOG = """
[agents.moody]
ref = "support.agents:moody"
[agents.echo]
ref = "support.agents:echo"

[alerts.moody_errors]
agent = "moody"
metric = "error_rate"
window = "1m"
above = 0.5
clear_below = 0.2
min_samples = 4
"""


def test_failures_raise_an_error_rate_alert_once_and_recovery_clears_it_once(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    # Every agent, from settings too: `echo` never fails, so this one never fires.
    rules = [{"name": "any_errors", "metric": "error_rate", "window": "1m", "above": 0.9}]
    settings = make_settings(backend, catalog=str(catalog), alert_rules=rules, alert_interval_s=0.2)
    prefix = settings.subject_prefix

    async def scenario() -> tuple[list[AlertMessage], Any]:
        messages: list[AlertMessage] = []
        async with (
            running_worker(settings),
            running_projector(settings) as projector,
            nats_client(settings) as nc,
        ):

            async def on_alert(msg: Any) -> None:
                messages.append(AlertMessage.model_validate_json(msg.data))

            await nc.subscribe(f"{prefix}.alerts.>", cb=on_alert)

            async def run_all(prompts: list[str], tag: str) -> None:
                await asyncio.gather(
                    *(
                        submit(
                            nc,
                            prefix,
                            RunAgent(task_id=f"{tag}-{i}", agent="moody", prompt=p),
                            timeout=30,
                        )
                        for i, p in enumerate(prompts)
                    )
                )

            async def wait_for(state: str) -> None:
                for _ in range(150):
                    if any(m.state == state for m in messages):
                        return
                    await asyncio.sleep(0.1)
                raise AssertionError(f"no alert {state}: {messages}")

            await run_all([f"fail {i}" for i in range(4)] + ["fine"], "bad")
            await wait_for("raised")
            await asyncio.sleep(1.0)  # more checks: no second alert
            await run_all([f"ok {i}" for i in range(20)], "good")
            await wait_for("cleared")
            await asyncio.sleep(1.0)
            registry = projector.metrics.registry
            active = registry.get_sample_value(
                "agentledger_alert_active",
                {"rule": "moody_errors", "agent": "moody", "metric": "error_rate"},
            )
        return messages, active

    messages, active = asyncio.run(scenario())
    assert [(m.state, m.rule, m.agent) for m in messages] == [
        ("raised", "moody_errors", "moody"),
        ("cleared", "moody_errors", "moody"),
    ]
    raised, cleared = messages
    assert raised.value == 0.8 and raised.samples == 5 and raised.threshold == 0.5
    assert cleared.value is not None and cleared.value <= 0.2 and cleared.threshold == 0.2
    assert active == 0
    store = EventStore(settings)
    try:
        names = [type(e).__name__ for e in store.events(alert_id("moody_errors", "moody"))]
        assert store.get(alert_id("any_errors", "moody"), Alert) is None
    finally:
        store.close()
    assert names == ["AlertOpened", "AlertRaised", "AlertCleared"]
    assert json.loads(raised.model_dump_json())["metric"] == "error_rate"

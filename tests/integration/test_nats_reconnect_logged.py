"""A NATS client built from settings logs losing and regaining its server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from structlog.testing import capture_logs

from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.nats_server import EmbeddedNats, NatsAuth
from agentledger.infra.settings import Settings

PASSWORD = "s3cret-pw"


@pytest.mark.slow
async def test_a_reconnect_is_logged_without_credentials(tmp_path: Path) -> None:
    server = EmbeddedNats(
        store_dir=tmp_path / "nats", auth=NatsAuth(user="ledger", password=PASSWORD)
    )
    server.start()
    settings = Settings(
        nats_url=f"nats://ledger:{PASSWORD}@127.0.0.1:{server.port}", data_dir=tmp_path
    )
    try:
        with capture_logs() as logs:
            nc = await nats.connect(**nats_connect_kwargs(settings, "reconnect-test"))
            try:
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # same store_dir: same port
                async with asyncio.timeout(30):
                    while not any(e["event"] == "nats reconnected" for e in logs):
                        await asyncio.sleep(0.05)
                assert nc.is_connected
            finally:
                await nc.close()
            await asyncio.sleep(0.05)  # a report deferred by the close would land here
    finally:
        server.stop()
    reports = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("nats")]
    # Exactly one disconnect warning: the deliberate close at the end is not one.
    assert reports[:2] == [("nats disconnected", "warning"), ("nats reconnected", "info")]
    assert reports.count(("nats disconnected", "warning")) == 1
    reconnected = next(e for e in logs if e["event"] == "nats reconnected")
    assert reconnected["url"] == f"nats://***@127.0.0.1:{server.port}"
    assert reconnected["client"] == "reconnect-test"
    assert PASSWORD not in repr(logs)

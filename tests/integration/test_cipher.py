"""With AGENTLEDGER_CIPHER_KEY set, prompts and outputs are not readable in the database
(AES-GCM on event payloads), and the system works as before."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import psycopg
import pytest
from eventsourcing.cipher import AESCipher

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.handlers.queries import answer
from agentledger.infra.settings import Settings
from support.agents import write_catalog
from support.harness import nats_client, run_events, running_projector, running_worker

pytestmark = pytest.mark.asyncio

PROMPT_MARKER = "zebra-quartz-7781"


def _stored_text(settings: Settings) -> str:
    """Everything the event store holds, as text, straight from the database."""
    if settings.postgres_dsn is None:
        with sqlite3.connect(settings.sqlite_file) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            rows = [str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]
        return "\n".join(rows)
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            )
        ]
        rows = [
            bytes(state).decode("latin-1")
            for t in tables
            if t.endswith("events")
            for (state,) in db.execute(f'SELECT state FROM "{t}"')
        ]
    return "\n".join(rows)


@pytest.mark.parametrize("encrypted", [True, False], ids=["cipher", "plaintext-control"])
async def test_cipher_key_hides_prompts_and_outputs_at_rest(
    make_settings,
    backend,
    tmp_path,
    encrypted: bool,  # type: ignore[no-untyped-def]
) -> None:
    key = AESCipher.create_key(32) if encrypted else None
    settings: Settings = make_settings(
        backend, catalog=str(write_catalog(tmp_path)), cipher_key=key
    )
    async with (
        running_worker(settings),
        running_projector(settings, relay=False, queries=False) as projector,
        nats_client(settings) as nc,
    ):
        task = RunAgent(
            task_id="secret-1", agent="echo", prompt=f"my code is {PROMPT_MARKER}", session_id="s"
        )
        outcome = await submit(nc, settings.subject_prefix, task, timeout=20)
        again = await submit(
            nc,
            settings.subject_prefix,
            RunAgent(task_id="secret-2", agent="echo", prompt="and now?", session_id="s"),
            timeout=20,
        )
        assert projector.store is not None and projector.views is not None
        assert await asyncio.to_thread(
            projector.wait_until, projector.store.max_notification_id(), 10
        )
        # The views are sealed too, and read back in clear through the query API.
        run = answer(projector.views, "run", {"task_id": "secret-1"})
        conversation = answer(projector.views, "conversation", {"session_id": "s"})
    assert run["prompt"] == f"my code is {PROMPT_MARKER}" and PROMPT_MARKER in run["output"]
    assert PROMPT_MARKER in json.dumps(conversation["turns"][0]["messages"])
    assert outcome is not None and outcome.status == "completed"
    assert PROMPT_MARKER in str(outcome.output)
    # The session's history was decrypted and used: this is its second turn.
    assert again is not None and str(again.output).startswith("turn 2")
    assert "RunCompleted" in run_events(settings, "secret-1")
    stored = _stored_text(settings)
    assert stored, "nothing found in the database"
    assert (PROMPT_MARKER in stored) is (not encrypted)

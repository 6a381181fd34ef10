"""Streaming a run over real NATS, on both stores (issue 12): chunks in order with their
sequence numbers, the stored run the same streamed or not, backpressure (drop_oldest,
slow_down) against a slow subscriber, a subscriber that vanishes, and resuming after a
reconnect."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.divergence import first_divergence
from agentledger.domain.ids import run_id_for
from agentledger.domain.streaming.chunks import StreamChunk
from agentledger.domain.subjects import stream_ack_subject
from agentledger.domain.tasks import RunAgent
from agentledger.domain.timeline import event_record
from agentledger.handlers.client import LedgerClient
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.harness import cli, nats_client, running_worker, settings_env, start_worker_process
from support.streaming import DELAY_ENV, PIECES_ENV

CATALOG = """
[agents.streamer]
ref = "support.streaming:streamer"

[agents.careful]
ref = "support.streaming:streamer"
[agents.careful.stream]
processors = ["sentences", "redact", "tokens"]
redact = ["w1[0-4]"]

[agents.buggy]
ref = "support.streaming:streamer"
[agents.buggy.stream]
processors = ["support.streaming:Exploding"]
"""


def _settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path, **kw: Any) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    return make_settings(backend, catalog=str(catalog), **kw)


async def _collect(
    client: LedgerClient, task: RunAgent, *, per_chunk_s: float = 0.0, stop_after: int | None = None
) -> list[StreamChunk]:
    """Publish the task and read its stream (slowly, or only its first chunks)."""
    chunks: list[StreamChunk] = []
    reader = client.stream(task.task_id, idle_timeout=30)
    await client.submit(task)
    async for chunk in reader:
        chunks.append(chunk)
        if stop_after is not None and len(chunks) >= stop_after:
            await reader.aclose()
            break
        if per_chunk_s:
            await asyncio.sleep(per_chunk_s)
    return chunks


def _stored(settings: Settings, task_id: str) -> list[Any]:
    store = EventStore(settings)
    try:
        return store.events(run_id_for(task_id))
    finally:
        store.close()


def _text(chunks: list[StreamChunk]) -> str:
    return "".join(c.text or "" for c in chunks if c.kind == "text")


def test_a_streamed_run_sends_its_steps_in_order_and_is_stored_as_if_not_streamed(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings = _settings(make_settings, backend, tmp_path)
    streamed = RunAgent(task_id="st-1", agent="streamer", prompt="cats", stream=True)
    plain = RunAgent(task_id="st-2", agent="streamer", prompt="cats")

    async def scenario() -> tuple[list[StreamChunk], Any]:
        async with running_worker(settings), nats_client(settings) as nc:
            client = LedgerClient(nc, prefix=settings.subject_prefix)
            chunks = await _collect(client, streamed)
            _, outcome = await client.run(plain, timeout=30)
            return chunks, outcome

    chunks, plain_outcome = asyncio.run(scenario())
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    kinds = [c.kind for c in chunks]
    assert kinds[:2] == ["tool_call", "tool_result"] and kinds[-1] == "end"
    assert set(kinds[2:-1]) == {"text"} and len(kinds) == 2 + 21 + 1  # a chunk per word
    assert chunks[0].data["tool_name"] == "lookup" and chunks[1].data["content"] == "notes on cats"
    end = chunks[-1]
    assert end.data["status"] == "completed" and end.dropped == 0
    assert _text(chunks) == end.data["output"] == plain_outcome.output
    # The stored runs are the same event for event (but their task ids).
    one, two = ([event_record(e) for e in _stored(settings, t)][1:] for t in ("st-1", "st-2"))
    assert first_divergence(one, two) is None


def test_the_agents_processors_shape_the_text(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings = _settings(make_settings, backend, tmp_path)
    task = RunAgent(task_id="st-proc", agent="careful", prompt="dogs", stream=True)

    async def scenario() -> list[StreamChunk]:
        async with running_worker(settings), nats_client(settings) as nc:
            return await _collect(LedgerClient(nc, prefix=settings.subject_prefix), task)

    texts = [c for c in asyncio.run(scenario()) if c.kind == "text"]
    # Whole sentences, the pattern redacted, a running token count.
    assert [c.text for c in texts][:2] == ["notes on dogs: w0 w1 w2 w3 w4.", "w5 w6 w7 w8 w9."]
    assert texts[2].text == "[redacted] [redacted] [redacted] [redacted] [redacted]."
    assert [c.tokens for c in texts] == sorted(c.tokens or 0 for c in texts)
    assert texts[-1].tokens and texts[-1].tokens > 20
    stored = _stored(settings, "st-proc")  # processors shape the stream, not the record
    assert "w10 w11" in json.dumps(stored[-1].output)


def test_a_slow_subscriber_under_drop_oldest_sees_a_gap_count_and_the_run_is_not_held(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIECES_ENV, "200")
    settings = _settings(make_settings, backend, tmp_path)
    task = RunAgent(
        task_id="st-drop",
        agent="streamer",
        prompt="fish",
        stream=True,
        stream_backpressure="drop_oldest",
        stream_window=2,
        stream_buffer=4,
    )

    async def scenario() -> list[StreamChunk]:
        async with running_worker(settings), nats_client(settings) as nc:
            return await _collect(
                LedgerClient(nc, prefix=settings.subject_prefix), task, per_chunk_s=0.02
            )

    chunks = asyncio.run(scenario())
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    gaps = [c.dropped for c in chunks if c.kind == "gap"]
    end = chunks[-1]
    assert gaps and end.kind == "end" and end.data["status"] == "completed"
    assert end.dropped == sum(gaps) > 100
    # Every chunk that arrived is a true piece, in order; the record has them all.
    assert len(end.data["output"].split()) == 3 + 200
    assert _text(chunks) != end.data["output"]


@pytest.mark.parametrize(
    ("buffer", "stall_s"),
    [(4, 5.0), (64, 0.3)],
    ids=["small-buffer", "buffer-outlasting-the-stall-timeout"],
)
def test_a_slow_subscriber_under_slow_down_gets_every_chunk_in_order(
    make_settings: MakeSettings,
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    buffer: int,
    stall_s: float,
) -> None:
    """With a buffer that takes longer to read than the stall timeout, the end of the
    run still waits for a reader that keeps acking (regression: it gave up after one
    stall timeout in all and dropped the rest)."""
    monkeypatch.setenv(PIECES_ENV, "60")
    settings = _settings(make_settings, backend, tmp_path, stream_stall_s=stall_s)
    task = RunAgent(
        task_id="st-slow",
        agent="streamer",
        prompt="owls",
        stream=True,
        stream_backpressure="slow_down",
        stream_window=2,
        stream_buffer=buffer,
    )

    async def scenario() -> tuple[list[StreamChunk], float]:
        async with running_worker(settings), nats_client(settings) as nc:
            started = time.monotonic()
            chunks = await _collect(
                LedgerClient(nc, prefix=settings.subject_prefix), task, per_chunk_s=0.02
            )
            return chunks, time.monotonic() - started

    chunks, _ = asyncio.run(scenario())
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert "gap" not in [c.kind for c in chunks] and chunks[-1].dropped == 0
    assert _text(chunks) == chunks[-1].data["output"]
    if buffer == 4:  # the run waited for the reader: it ended after most were read
        stored = _stored(settings, "st-slow")
        assert (stored[-1].timestamp - stored[0].timestamp).total_seconds() > 0.02 * 40


def test_a_subscriber_that_goes_away_does_not_stall_the_run(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIECES_ENV, "100")
    settings = _settings(make_settings, backend, tmp_path, stream_stall_s=0.5)
    task = RunAgent(
        task_id="st-gone",
        agent="streamer",
        prompt="bees",
        stream=True,
        stream_backpressure="slow_down",
        stream_window=2,
        stream_buffer=2,
    )

    async def scenario() -> tuple[list[StreamChunk], Any, list[StreamChunk]]:
        async with running_worker(settings), nats_client(settings) as nc:
            client = LedgerClient(nc, prefix=settings.subject_prefix)
            first = await _collect(client, task, stop_after=3)  # then it stops reading
            # A run held until its reader came back would never end: 100 chunks, 2 in
            # flight, no acks. It ends after one stall timeout (0.5 s).
            outcome = await client.wait(task.task_id, timeout=30)
            rest = [c async for c in client.stream(task.task_id, after=3, ack=False)]
            return first, outcome, rest

    first, outcome, rest = asyncio.run(scenario())
    assert len(first) == 3
    assert outcome.status == "completed" and len(outcome.output.split()) == 3 + 100
    end = rest[-1]
    assert end.kind == "end" and end.data["status"] == "completed" and end.dropped > 50
    stored = _stored(settings, "st-gone")
    assert type(stored[-1]).__name__ == "RunCompleted"


def test_a_client_resumes_from_a_sequence_number_after_a_reconnect(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY_ENV, "0.005")
    settings = _settings(make_settings, backend, tmp_path)
    task = RunAgent(task_id="st-resume", agent="streamer", prompt="yaks", stream=True)

    async def scenario() -> tuple[list[StreamChunk], list[StreamChunk]]:
        async with running_worker(settings):
            async with nats_client(settings) as nc:  # a first connection, dropped
                before = await _collect(
                    LedgerClient(nc, prefix=settings.subject_prefix), task, stop_after=5
                )
            async with nats_client(settings) as nc:
                client = LedgerClient(nc, prefix=settings.subject_prefix)
                after = [c async for c in client.stream(task.task_id, after=before[-1].seq)]
            return before, after

    before, after = asyncio.run(scenario())
    seqs = [c.seq for c in before + after]
    assert seqs == list(range(1, len(seqs) + 1)) and after[-1].kind == "end"
    assert _text(before + after) == after[-1].data["output"]


def test_hostile_acks_are_ignored(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings = _settings(make_settings, backend, tmp_path)
    task = RunAgent(
        task_id="st-acks",
        agent="streamer",
        prompt="ants",
        stream=True,
        stream_backpressure="slow_down",
    )

    async def scenario() -> list[StreamChunk]:
        async with running_worker(settings), nats_client(settings) as nc:
            ack = stream_ack_subject(settings.subject_prefix, task.task_id)
            client = LedgerClient(nc, prefix=settings.subject_prefix)
            reader = client.stream(task.task_id, idle_timeout=30)
            await client.submit(task)
            chunks = []
            async for chunk in reader:
                for junk in (b"", b"\x00\xff", b'{"ack": "x"}', b'{"ack": 1e308}', b"[" * 5000):
                    await nc.publish(ack, junk)
                chunks.append(chunk)
            return chunks

    chunks = asyncio.run(scenario())
    assert chunks[-1].kind == "end" and chunks[-1].data["status"] == "completed"


def test_publish_stream_prints_the_text_live(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = _settings(make_settings, "sqlite", tmp_path)
    env = settings_env(settings)
    worker = start_worker_process(env, tmp_path / "worker.log")
    try:
        shown = cli("publish", "streamer", "cats", "--stream", "--task-id", "cli-1", env=env)
        lines = cli(
            "publish", "streamer", "dogs", "--stream", "--json", "--task-id", "cli-2", env=env
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("notes on cats: w0 w1") and "w19." in shown.stdout
    assert '[tool_call] {"tool_name": "lookup"' in shown.stderr
    assert lines.returncode == 0, lines.stderr
    chunks = [StreamChunk.model_validate_json(line) for line in lines.stdout.splitlines()]
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[-1].kind == "end" and chunks[-1].data["status"] == "completed"


def test_a_stream_processor_that_raises_ends_the_stream_not_the_run(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = _settings(make_settings, "sqlite", tmp_path)
    task = RunAgent(task_id="st-bug", agent="buggy", prompt="rats", stream=True)

    async def scenario() -> tuple[list[StreamChunk], Any]:
        async with running_worker(settings), nats_client(settings) as nc:
            client = LedgerClient(nc, prefix=settings.subject_prefix)
            chunks = await _collect(client, task)
            return chunks, await client.wait(task.task_id, timeout=30)

    chunks, outcome = asyncio.run(scenario())
    assert outcome.status == "completed" and len(outcome.output.split()) == 3 + 20
    assert [c.kind for c in chunks].count("text") == 4  # the stream stopped at the bug
    assert chunks[-1].kind == "end" and chunks[-1].dropped > 0


@pytest.mark.slow
def test_a_run_resumed_after_a_sigkill_streams_on_with_a_restart_chunk(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = _settings(make_settings, "sqlite", tmp_path, ack_wait_s=2, lease_ttl_s=2)
    env = settings_env(settings) | {DELAY_ENV: "0.05", PIECES_ENV: "60"}
    log = tmp_path / "workers.log"
    doomed = start_worker_process(env, log)
    survivor = None
    task = RunAgent(task_id="st-kill", agent="streamer", prompt="moths", stream=True)

    async def scenario() -> list[StreamChunk]:
        nonlocal survivor
        chunks: list[StreamChunk] = []
        async with nats_client(settings) as nc:
            client = LedgerClient(nc, prefix=settings.subject_prefix)
            reader = client.stream(task.task_id, idle_timeout=60)
            await client.submit(task)
            async for chunk in reader:
                chunks.append(chunk)
                if [c.kind for c in chunks].count("text") == 10 and survivor is None:
                    os.killpg(doomed.pid, signal.SIGKILL)
                    doomed.wait(10)
                    survivor = start_worker_process(env, log)
        return chunks

    try:
        chunks = asyncio.run(scenario())
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
    seqs = [c.seq for c in chunks]
    assert seqs == sorted(set(seqs)), "a sequence number came twice"
    restart = next(c for c in chunks if c.kind == "restart")
    assert restart.data["after"] == restart.seq - 1
    end = chunks[-1]
    assert end.kind == "end" and end.data["status"] == "completed", log.read_text()[-2000:]
    after_restart = chunks[chunks.index(restart) + 1 :]
    assert _text(after_restart) == end.data["output"]  # the resumed step, streamed whole

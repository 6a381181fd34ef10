"""The operations endpoints (/healthz, /readyz, /metrics) of a real worker and projector,
fetched with the real `curl` binary, and the endpoint server under hostile input."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.bootstrap import WorkerService
from agentledger.handlers.client import submit
from agentledger.handlers.operations import http as operations_http
from agentledger.handlers.operations.endpoints import OperationsPortUnavailable
from agentledger.infra.nats_server import free_port
from agentledger.infra.settings import Settings
from support.harness import nats_client, running_projector, running_worker

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary"),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def curl(url: str, *options: str) -> tuple[int, str]:
    """(HTTP status, body) of one request made by curl (in a thread: the servers under
    test share this event loop)."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *options, url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (n, ls), value in found.items() if n == name and wanted <= ls)


async def eventually(check: Callable[[], Awaitable[None]], timeout: float = 15.0) -> None:
    """Retry an async check (raising AssertionError) until it passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_worker_and_projector_report_health_readiness_and_metrics(
    make_settings,  # type: ignore[no-untyped-def]
    backend,
) -> None:
    worker_settings: Settings = make_settings(backend, http_port=free_port())
    projector_settings: Settings = make_settings(backend, http_port=free_port())
    worker_url = f"http://127.0.0.1:{worker_settings.http_port}"
    projector_url = f"http://127.0.0.1:{projector_settings.http_port}"
    prefix = worker_settings.subject_prefix
    suffix = uuid.uuid4().hex[:8]
    async with (
        running_worker(worker_settings) as worker,
        running_projector(projector_settings) as projector,
        nats_client(worker_settings) as nc,
    ):
        assert worker.operations is not None and worker.operations.url == worker_url
        assert projector.operations is not None and projector.operations.url == projector_url
        sum_ = await submit(
            nc, prefix, RunAgent(task_id=f"sum-{suffix}", agent="calculator", prompt="add 2 and 40")
        )
        hello = await submit(
            nc, prefix, RunAgent(task_id=f"hi-{suffix}", agent="greeter", prompt="hello")
        )
        assert sum_ is not None and sum_.status == "completed"
        assert hello is not None and hello.status == "completed"
        # Poison: an agent no catalog has, published by a plain nats-py client.
        bad_id = f"nosuch-{suffix}"
        sub = await nc.subscribe(f"{prefix}.results.{bad_id}", max_msgs=1)
        await nc.jetstream().publish(
            f"{prefix}.tasks.run.nosuch",
            json.dumps({"task_id": bad_id, "agent": "nosuch", "prompt": "hi"}).encode(),
            headers={"Nats-Msg-Id": bad_id},
        )
        rejected = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
        assert rejected.status == "rejected"

        assert await curl(f"{worker_url}/healthz") == (200, '{"status":"ok"}')
        status, body = await curl(f"{worker_url}/readyz")
        ready = json.loads(body)
        assert status == 200, body
        assert ready["ready"] is True and ready["nats"] is True and ready["store"] is True
        assert isinstance(ready["consumer_pending"], int)
        assert ready["projection_lag"] is None

        async def worker_metrics_settled() -> None:
            status, text = await curl(f"{worker_url}/metrics")
            assert status == 200
            found = samples(text)
            # Counted after the ack / termination, a moment after the outcome is out.
            assert total(found, "agentledger_tasks_received_total") == 3
            assert total(found, "agentledger_runs_in_flight") == 0
            assert total(found, "agentledger_tasks_rejected_total") == 1

        await eventually(worker_metrics_settled)
        found = samples((await curl(f"{worker_url}/metrics"))[1])
        completed = total(found, "agentledger_tasks_completed_total")
        failed = total(found, "agentledger_tasks_failed_total")
        assert total(found, "agentledger_tasks_completed_total", agent="calculator") == 1
        assert total(found, "agentledger_tasks_completed_total", agent="greeter") == 1
        assert completed == 2 and failed == 0
        assert total(found, "agentledger_tasks_received_total", agent="unknown") == 1
        assert total(found, "agentledger_tasks_rejected_total", agent="unknown") == 1
        assert total(found, "agentledger_run_duration_seconds_count") == completed + failed
        assert total(found, "agentledger_run_duration_seconds_count", agent="calculator") == 1
        # A recorded rejection is not a dead letter (those are what could not be recorded).
        assert total(found, "agentledger_dead_letters_total") == 0
        assert total(found, "agentledger_redeliveries_total") == 0
        # Label values stay bounded: catalog names and `unknown`, never the payload's.
        agents = {dict(labels).get("agent") for (_, labels) in found} - {None}
        assert agents <= {*worker.catalog.names(), "unknown"}  # type: ignore[union-attr]

        assert await curl(f"{projector_url}/healthz") == (200, '{"status":"ok"}')

        async def projector_caught_up() -> None:
            status, body = await curl(f"{projector_url}/readyz")
            ready = json.loads(body)
            assert status == 200, body
            assert ready["nats"] is True and ready["store"] is True
            assert isinstance(ready["projection_lag"], int)
            assert ready["projection_lag"] == 0

        await eventually(projector_caught_up)
        status, text = await curl(f"{projector_url}/metrics")
        assert status == 200
        assert ("agentledger_projection_lag_events", frozenset()) in samples(text)
        assert samples(text)[("agentledger_projection_lag_events", frozenset())] == 0

        # The rest of HTTP: other paths, other methods, HEAD, a query string.
        assert (await curl(f"{worker_url}/nope"))[0] == 404
        assert (await curl(f"{worker_url}/healthz", "-X", "POST"))[0] == 405
        assert (await curl(f"{worker_url}/healthz?verbose=1"))[0] == 200
        head = await _head_of(f"{worker_url}/healthz")
        assert head.startswith("HTTP/1.1 200 OK") and "content-length: 15" in head.lower()

    # The servers stop with their services.
    for url in (worker_url, projector_url):
        refused = await asyncio.to_thread(
            subprocess.run, ["curl", "-sS", f"{url}/healthz"], capture_output=True, timeout=30
        )
        assert refused.returncode == 7, refused  # curl: failed to connect


async def _head_of(url: str) -> str:
    """The response curl prints for a HEAD request."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "-I", "--max-time", "10", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _exchange(port: int, data: bytes, *, eof: bool = False, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the server (then, with `eof`, close the sending side) and read
    whatever it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
            if eof:
                writer.write_eof()
        except ConnectionError:
            pass  # the server may answer and close before reading everything
        try:
            return await asyncio.wait_for(reader.read(), timeout)
        except ConnectionError:
            return b""
    finally:
        writer.close()


async def test_hostile_http_input_does_not_stop_the_endpoints(
    make_settings,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operations_http, "READ_TIMEOUT_S", 0.5)
    settings: Settings = make_settings("sqlite", http_port=free_port())
    port = settings.http_port
    assert port is not None
    url = f"http://127.0.0.1:{port}/healthz"
    async with running_worker(settings):
        assert (await _exchange(port, b"\x00\xff\xfe\x16\x03\x01garbage\r\n\r\n")).startswith(
            b"HTTP/1.1 400 "
        )
        assert (await _exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")).startswith(
            b"HTTP/1.1 400 "
        )
        assert (await _exchange(port, b"GET http://evil/healthz HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 400 "
        )
        big_line = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert (await _exchange(port, big_line)).startswith(b"HTTP/1.1 431 ")
        # Past what the server discards to let the client read its answer, the connection
        # may just be reset: either way the server goes on.
        huge_line = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 10_000_000 + b"\r\n\r\n"
        assert (await _exchange(port, huge_line))[:13] in (b"HTTP/1.1 431 ", b"")
        many_headers = b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n"
        assert (await _exchange(port, many_headers)).startswith(b"HTTP/1.1 431 ")
        huge_target = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"
        assert (await _exchange(port, huge_target)).startswith(b"HTTP/1.1 431 ")
        assert await _exchange(port, b"", eof=True) == b""  # connect, then close at once
        assert await _exchange(port, b"GET /heal", eof=True) == b""  # closed mid request line

        # A request that never finishes holds its connection only until the read timeout,
        # and the server answers others meanwhile.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await curl(url) == (200, '{"status":"ok"}')
        stalled = await asyncio.wait_for(reader.read(), 10)
        assert stalled.startswith(b"HTTP/1.1 408 ")
        writer.close()

        # A request whose body is never read, and a client that never reads the answer.
        assert (
            await _exchange(port, b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        ).startswith(b"HTTP/1.1 200 ")
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, w in silent:
            w.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        assert await curl(url) == (200, '{"status":"ok"}')
        for _, w in silent:
            w.close()

        # A flood of stalled connections: those past the limit are closed at once; the
        # limit frees up as the stalled ones time out.
        monkeypatch.setattr(operations_http, "MAX_CONNECTIONS", 3)
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, w in flood:
            w.write(b"GET /healthz HTTP/1.1\r\n")
        await asyncio.sleep(0.1)
        assert await _exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
        for r, _ in flood:
            assert (await asyncio.wait_for(r.read(), 10)).startswith(b"HTTP/1.1 408 ")
        for _, w in flood:
            w.close()
        assert await curl(url) == (200, '{"status":"ok"}')

        # Stopping the service ends a connection still waiting for its request.
        monkeypatch.setattr(operations_http, "READ_TIMEOUT_S", 60)
        lingering_reader, lingering = await asyncio.open_connection("127.0.0.1", port)
        lingering.write(b"GET /healthz HTTP/1.1\r\n")
    assert await asyncio.wait_for(lingering_reader.read(), 10) == b""
    lingering.close()


async def test_endpoints_are_off_unless_a_port_is_set(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings("sqlite")
    assert settings.http_port is None
    async with running_worker(settings) as worker:
        assert worker.operations is None


async def test_a_port_in_use_is_one_clear_start_up_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings: Settings = make_settings("sqlite", http_port=port)
        with pytest.raises(OperationsPortUnavailable, match=f"127.0.0.1:{port}"):
            await WorkerService(settings=settings).start()

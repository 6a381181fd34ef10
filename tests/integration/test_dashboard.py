"""The web dashboard on real NATS and real stores: served by a real projector, it follows
the event relay (server-sent events), shows what the views hold, replays a run; token
authentication; and hostile requests that it refuses without stopping."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

import pytest
from conftest import Backend, MakeSettings

import support.dashboard as support_dashboard
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.bootstrap import ProjectorService
from agentledger.handlers.client import submit
from agentledger.handlers.dashboard import http as dashboard_http
from agentledger.handlers.dashboard.auth import DashboardConfigError
from agentledger.handlers.dashboard.service import DashboardPortUnavailable, DashboardService
from agentledger.handlers.evaluation import report_html
from agentledger.handlers.operations import http as operations_http
from agentledger.handlers.queries import answer
from agentledger.infra.nats_server import EmbeddedNats, free_port
from agentledger.infra.settings import Settings
from support.dashboard import (
    CATALOG,
    XSS_PROMPT,
    event_stream,
    exchange,
    request,
)
from support.harness import cli, nats_client, running_projector, running_worker, settings_env

pytestmark = pytest.mark.asyncio

TOKEN = "dashboard-test-token-" + "x" * 12


def _settings(
    make_settings: MakeSettings, backend: Backend, tmp_path: Any, **extra: Any
) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    return make_settings(
        backend,
        catalog=str(catalog),
        memory_enabled=False,
        alert_interval_s=0.2,
        **extra,
    )


async def test_the_dashboard_follows_the_relay_and_reads_the_views(
    make_settings: MakeSettings, backend: Backend, tmp_path: Any
) -> None:
    settings = _settings(make_settings, backend, tmp_path, dashboard_port=free_port())
    port = settings.dashboard_port
    assert port is not None
    prefix = settings.subject_prefix
    tag = uuid.uuid4().hex[:6]
    async with (
        running_worker(settings),
        running_projector(settings) as projector,
        nats_client(settings) as nc,
        event_stream(port) as stream,
    ):
        assert projector.dashboard is not None
        assert stream.answer.status == 200
        assert stream.answer.headers["content-type"].startswith("text/event-stream")
        first = await stream.next()
        assert first.kind == "state" and first.data["runs"] == []

        task = RunAgent(task_id=f"xss-{tag}", agent="greeter", prompt=XSS_PROMPT)
        outcome = await submit(nc, prefix, task, timeout=30)
        assert outcome is not None and outcome.status == "completed"
        # Pushed by the relay's events (RunRequested ... RunCompleted), not read again.
        done = await stream.until(
            lambda e: (
                e.kind == "run"
                and e.data["task_id"] == task.task_id
                and e.data["status"] == "completed"
            )
        )
        assert done.data["prompt"] == XSS_PROMPT and done.data["committed_at"]
        await stream.until_latest(
            lambda latest: latest.get(("agent", "greeter"), {}).get("completed") == 1
        )

        for i in range(4):
            await submit(
                nc, prefix, RunAgent(task_id=f"m-{tag}-{i}", agent="moody", prompt=f"fail {i}")
            )
        raised = await stream.until(lambda e: e.kind == "alert" and e.data["state"] == "raised")
        assert (raised.data["rule"], raised.data["agent"]) == ("moody_errors", "moody")

        # The board folded from the relay equals the views it would otherwise read.
        assert projector.views is not None
        views = projector.views

        async def settled() -> dict[str, Any]:
            for _ in range(100):
                state = (await request(port, "/api/state")).json()
                metrics = await asyncio.to_thread(answer, views, "metrics", {})
                if state["agents"] == metrics:
                    return state
                await asyncio.sleep(0.1)
            raise AssertionError(f"board {state['agents']} != view {metrics}")

        state = await settled()
        assert {r["task_id"] for r in state["runs"]} >= {task.task_id, f"m-{tag}-0"}
        alerts = await asyncio.to_thread(answer, views, "alerts", {"state": "raised"})
        assert [a["rule"] for a in alerts] == ["moody_errors"]

        # Prompts are data: JSON with `<` escaped, never markup.
        runs = await request(port, "/api/runs?agent=greeter&limit=5")
        assert runs.status == 200 and runs.headers["content-type"] == "application/json"
        assert runs.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in runs.headers["content-security-policy"]
        assert b"<script" not in runs.body and b"\\u003cscript" in runs.body
        assert runs.json()[0]["prompt"] == XSS_PROMPT

        timeline = (await request(port, f"/api/runs/{task.task_id}")).json()
        assert timeline["events"][0]["name"] == "RunRequested"
        assert timeline["events"][-1]["name"] == "RunCompleted"
        assert timeline["view"]["prompt"] == XSS_PROMPT and timeline["replayable"]
        replayed = await request(port, f"/api/runs/{task.task_id}/replay", method="POST")
        assert replayed.status == 200, replayed.body
        assert replayed.json()["verdict"] == "identical"
        failed = await request(port, f"/api/runs/m-{tag}-0/replay", method="POST")
        assert failed.json()["verdict"] == "identical"
        alerts_api = (await request(port, "/api/alerts?state=raised")).json()
        assert [a["agent"] for a in alerts_api] == ["moody"]

        page = await request(port, "/")
        assert page.status == 200 and b'<script src="/static/dashboard.js"' in page.body
        assert "script-src 'self'" in page.headers["content-security-policy"]
        bundle = await request(port, "/static/mermaid.min.js", headers={"Accept-Encoding": "gzip"})
        assert bundle.status == 200 and bundle.headers["content-encoding"] == "gzip"
    assert projector.dashboard is None  # stopped with the projector


async def test_a_token_guards_every_request(
    make_settings: MakeSettings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(make_settings, "sqlite", tmp_path)
    with pytest.raises(DashboardConfigError, match="not a loopback address"):
        await DashboardService(settings=settings, host="0.0.0.0", port=0).start()
    exposed = settings.model_copy(update={"dashboard_port": 0, "dashboard_host": "0.0.0.0"})
    with pytest.raises(DashboardConfigError):  # before the projector starts anything
        await ProjectorService(settings=exposed).start()

    service = await DashboardService(settings=settings, port=0, token=TOKEN).start()
    try:
        assert service.http is not None
        port = service.http.port
        assert service.login_url == f"http://127.0.0.1:{port}/?token={TOKEN}"
        for path in ("/", "/api/state", "/events", "/static/dashboard.js"):
            denied = await request(port, path)
            assert denied.status == 401, path
            assert denied.headers["www-authenticate"].startswith("Bearer")
        wrong = await request(port, "/api/state", headers={"Authorization": "Bearer " + "y" * 32})
        assert wrong.status == 401
        right = await request(port, "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status == 200 and "runs" in right.json()
        # The printed URL signs the browser in: the page sets a cookie that is not the token.
        page = await request(port, f"/?token={TOKEN}")
        assert page.status == 200
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        session = {"Cookie": cookie.split(";")[0]}
        assert (await request(port, "/api/state", headers=session)).status == 200
        async with event_stream(port, session) as stream:
            assert stream.answer.status == 200
            assert (await stream.next()).kind == "state"
        assert (await request(port, "/api/state?token=" + TOKEN)).status == 401
        # With a token, any Host may be used (the token is the guard).
        assert (
            await request(port, "/api/state", headers={"Host": "dash.example", **session})
        ).status == 200
    finally:
        await service.stop()

    # Without a token: loopback only, and only by a loopback Host (no DNS rebinding).
    open_service = await DashboardService(settings=settings, port=0).start()
    try:
        assert open_service.http is not None
        port = open_service.http.port
        assert (await request(port, "/api/state")).status == 200
        assert (await request(port, "/", headers={"Host": f"localhost:{port}"})).status == 200
        assert (await request(port, "/", headers={"Host": "evil.example"})).status == 421
    finally:
        await open_service.stop()

    with socket.socket() as taken:  # a port in use: one clear error, nothing left open
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(DashboardPortUnavailable, match=f"127.0.0.1:{busy}"):
            await DashboardService(settings=settings, port=busy).start()

    done = await asyncio.to_thread(
        cli, "dashboard", "--host", "0.0.0.0", "--port", "0", env=settings_env(settings)
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: the dashboard would listen")


async def test_hostile_requests_are_refused_and_the_dashboard_goes_on(
    make_settings: MakeSettings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_http, "READ_TIMEOUT_S", 0.5)
    settings = _settings(make_settings, "sqlite", tmp_path)
    service = await DashboardService(settings=settings, port=0).start()
    try:
        assert service.http is not None
        port = service.http.port

        async def alive() -> None:
            assert (await request(port, "/api/state")).status == 200

        head = f"Host: 127.0.0.1:{port}\r\n".encode()
        cases = [
            (
                b"GET /api/state HTTP/1.1\r\n" + head + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
                431,
            ),
            (b"GET /api/state HTTP/1.1\r\n" + head + b"X: y\r\n" * 5000 + b"\r\n", 431),
            (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", 431),
            (b"\x00\xff\xfe\x16\x03\x01garbage\r\n\r\n", 400),
            (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),
            (
                b"POST /api/runs/x/replay HTTP/1.1\r\n" + head + b"Content-Length: 5\r\n\r\nhello",
                413,
            ),
            (
                b"POST /api/runs/x/replay HTTP/1.1\r\n"
                + head
                + b"Transfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (b"PUT /api/state HTTP/1.1\r\n" + head + b"\r\n", 405),
        ]
        for data, status in cases:
            answer_ = await exchange(port, data)
            assert answer_.startswith(f"HTTP/1.1 {status} ".encode()), (data[:60], answer_[:80])
        await alive()

        paths = {
            "/nope": 404,
            "/static/../../etc/passwd": 404,
            "/static/%2e%2e%2fsecret": 404,
            "/static/nope.js": 404,
            "/api/runs/..": 400,
            "/api/runs/<script>alert(1)": 400,
            "/api/runs/<script>alert(1)</script>": 404,
            "/api/runs/a%2Fb": 400,
            "/api/runs/" + "a" * 201: 400,
            "/api/runs/no-such-run": 404,
            "/api/graphs/no-such-graph": 404,
            "/api/runs?nope=1": 400,
            "/api/runs?status=exploded": 400,
            "/api/runs?limit=abc": 400,
            "/api/runs?limit=100000": 400,
            "/api/runs?agent=%3Cscript%3E": 400,
            "/api/alerts?state=on": 400,
            "/events?x=1": 400,
            "/evaluations/eval-1/report.html": 404,  # no such evaluation
            "/evaluations/%3Cx%3E/report.html": 400,
        }
        for path, status in paths.items():
            found = await request(port, path)
            assert found.status == status, (path, found.status, found.body[:200])
            assert found.headers["x-content-type-options"] == "nosniff"
        assert (await request(port, "/api/state", method="POST")).status == 405
        assert (
            await request(
                port, "/api/runs/x/replay", method="POST", headers={"Origin": "http://evil"}
            )
        ).status == 403

        # The evaluation report hook: served in a sandbox (no script runs in it).
        monkeypatch.setattr(
            report_html, "evaluation_report_html", support_dashboard.evaluation_report_html
        )
        report = await request(port, "/evaluations/eval-1/report.html")
        assert report.status == 200 and b"<h1>eval-1</h1>" in report.body
        assert "sandbox" in report.headers["content-security-policy"]
        assert (await request(port, "/evaluations/eval-2/report.html")).status == 404

        # One replay at a time.
        started = asyncio.Event()

        def slow_replay(identifier: str) -> dict[str, Any]:
            started.set()
            import time

            time.sleep(1.0)
            return {"verdict": "identical"}

        assert service.app is not None
        monkeypatch.setattr(service.app.reads, "replay", slow_replay)
        first = asyncio.create_task(request(port, "/api/runs/r1/replay", method="POST"))
        await asyncio.wait_for(started.wait(), 5)
        busy = await request(port, "/api/runs/r2/replay", method="POST")
        assert busy.status == 429
        assert (await first).json() == {"verdict": "identical"}

        # A request that never finishes holds its connection only until the read timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/state HTTP/1.1\r\n")
        await writer.drain()
        await alive()
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 408 ")
        writer.close()

        # Streams beyond the limit are refused; a flood beyond the connection limit is cut.
        monkeypatch.setattr(dashboard_http, "MAX_STREAMS", 2)
        async with event_stream(port) as one, event_stream(port) as two:
            assert one.answer.status == two.answer.status == 200
            async with event_stream(port) as three:
                assert three.answer.status == 503
        for _ in range(100):  # the streams' connections end once their clients are gone
            if service.http.open_connections == 0:
                break
            await asyncio.sleep(0.05)
        monkeypatch.setattr(operations_http, "MAX_CONNECTIONS", 3)  # the bound both servers share
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, w in flood:
            w.write(b"GET /api/state HTTP/1.1\r\n")
        await asyncio.sleep(0.1)
        assert await exchange(port, b"GET /api/state HTTP/1.1\r\n\r\n") == b""
        for r, w in flood:
            assert (await asyncio.wait_for(r.read(), 10)).startswith(b"HTTP/1.1 408 ")
            w.close()
        await alive()
        assert json.loads((await request(port, "/api/evaluations")).body)["rows"] == []
    finally:
        await service.stop()


@pytest.mark.slow
async def test_after_nats_reconnects_every_page_starts_again_from_the_views(
    tmp_path: Any,
) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    server.start()
    settings = Settings(
        nats_url=server.url, data_dir=tmp_path, memory_enabled=False, postgres_dsn=None
    )
    try:
        service = await DashboardService(settings=settings, port=0).start()
        try:
            assert service.http is not None
            async with event_stream(service.http.port) as stream:
                assert (await stream.next()).kind == "state"
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # same store_dir: same port
                # Events may have gone by meanwhile: the board is read again and sent.
                again = await stream.until(lambda e: e.kind == "state", timeout=30)
                assert again.data["runs"] == []
        finally:
            await service.stop()
    finally:
        server.stop()

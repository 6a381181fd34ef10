"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright; no `playwright install`) against a real worker, projector, event relay and
NATS.

It signs in with the printed token URL (the cookie then carries the event stream), sees
a run appear live within 2 s of its task being published over JetStream, opens its
timeline and replays it, sees an alert raised by injected failures, finds an evaluation
with its HTML report (a static page: nothing in it runs), sees a graph and a
workflow drawn by the vendored Mermaid under the strict CSP, and sees a prompt holding
markup shown as text with nothing run. Screenshots go to `AGENTLEDGER_TEST_ARTIFACTS`
(default `tests/artifacts/`, git-ignored).

Without chromium the test is skipped, except in CI (`CI` set), where that is a failure:
`.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeSettings

from agentledger.domain.graphs.tasks import RunGraph
from agentledger.domain.subjects import eval_subject, graph_task_subject, task_subject
from agentledger.domain.tasks import RunAgent
from agentledger.infra.nats_server import free_port
from support.dashboard import CATALOG, XSS_PROMPT
from support.harness import (
    REPO_ROOT,
    nats_client,
    running_projector,
    running_worker,
    stored_outcome,
)

pytestmark = pytest.mark.asyncio

TOKEN = "browser-test-token-" + "z" * 16
LIVE_WITHIN_MS = 2000


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: the dashboard's browser test cannot run in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture
def artifacts() -> Path:
    folder = Path(os.environ.get("AGENTLEDGER_TEST_ARTIFACTS") or REPO_ROOT / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _console(message: Any, problems: list[str]) -> None:
    """Keep the console errors that matter. Mermaid measures text on the page with
    inline styles, which the policy blocks (`style-src`): harmless, not kept."""
    text = message.text
    if "script-src" in text or (message.type == "error" and "style-src" not in text):
        problems.append(text)


async def _publish(js: Any, prefix: str, task: RunAgent) -> None:
    await js.publish(
        task_subject(prefix, task.agent),
        task.model_dump_json().encode(),
        headers={"Nats-Msg-Id": task.task_id},
    )


async def test_the_dashboard_in_a_browser(
    make_settings: MakeSettings, tmp_path: Path, chromium: str, artifacts: Path
) -> None:
    from playwright.async_api import async_playwright

    catalog = tmp_path / "catalog.toml"
    (tmp_path / "sums.yaml").write_text(
        "cases:\n"
        "  - {name: add, inputs: add 2 and 3, expected_output: The result is 5.0.}\n"
        "  - {name: xss, inputs: add 1 and 1, expected_output: '<script>window.__pwned=2</script>'}\n"
        "evaluators: [EqualsExpected]\n"
    )
    catalog.write_text(CATALOG + '\n[datasets.sums]\npath = "sums.yaml"\nagent = "calculator"\n')
    settings = make_settings(
        "sqlite",
        catalog=str(catalog),
        memory_enabled=False,
        alert_interval_s=0.2,
        dashboard_port=free_port(),
        dashboard_token=TOKEN,
    )
    prefix, tag = settings.subject_prefix, uuid.uuid4().hex[:6]
    problems: list[str] = []
    async with (
        running_worker(settings),
        running_projector(settings) as projector,
        nats_client(settings) as nc,
        async_playwright() as playwright,
    ):
        assert projector.dashboard is not None
        js = nc.jetstream()
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: _console(message, problems))
            await page.goto(projector.dashboard.login_url)
            await page.wait_for_selector("#connection.pill-live", timeout=10_000)
            assert await page.evaluate("window.location.search") == ""  # token taken out

            # A run appears live, pushed by the relay, within 2 s of its publish.
            live = RunAgent(task_id=f"live-{tag}", agent="calculator", prompt="add 2 and 40")
            published = time.monotonic()
            await _publish(js, prefix, live)
            row = f'#runs tbody tr[data-task-id="{live.task_id}"]'
            await page.wait_for_selector(row, timeout=LIVE_WITHIN_MS)
            shown_ms = (time.monotonic() - published) * 1000
            await page.wait_for_selector(f"{row} .status-completed", timeout=10_000)
            await page.screenshot(path=artifacts / "dashboard-live.png", full_page=True)
            assert shown_ms < LIVE_WITHIN_MS

            # Its timeline, and a replay: identical.
            await page.click(row)
            await page.wait_for_selector('#timeline tbody tr[data-event="RunCompleted"]')
            assert await page.text_content("#detail-prompt") == "add 2 and 40"
            await page.click("#replay")
            await page.wait_for_selector("#replay-result.verdict-identical", timeout=30_000)
            await page.screenshot(path=artifacts / "dashboard-timeline.png", full_page=True)

            # Markup in a prompt is text: shown as it is, run nowhere.
            xss = RunAgent(task_id=f"xss-{tag}", agent="greeter", prompt=XSS_PROMPT)
            await _publish(js, prefix, xss)
            cell = f'#runs tbody tr[data-task-id="{xss.task_id}"] td[data-field="prompt"]'
            await page.wait_for_selector(cell, timeout=10_000)
            assert await page.text_content(cell) == XSS_PROMPT
            await page.click(f'#runs tbody tr[data-task-id="{xss.task_id}"]')
            await page.wait_for_function(
                "(expected) => document.getElementById('detail-prompt').textContent === expected",
                arg=XSS_PROMPT,
            )

            # Injected failures raise an alert, shown live.
            for i in range(4):
                await _publish(
                    js, prefix, RunAgent(task_id=f"m-{tag}-{i}", agent="moody", prompt=f"fail {i}")
                )
            for i in range(6):
                await _publish(
                    js,
                    prefix,
                    RunAgent(task_id=f"c-{tag}-{i}", agent="calculator", prompt=f"add {i} and 1"),
                )
            await page.wait_for_selector('.alert-card[data-rule="moody_errors"]', timeout=20_000)
            await page.screenshot(path=artifacts / "dashboard-alert.png", full_page=True)

            # An evaluation: listed with its report, which opens as a static page.
            await js.publish(
                eval_subject(prefix, "sums"),
                json.dumps({"task_id": f"ev-{tag}", "dataset": "sums"}).encode(),
                headers={"Nats-Msg-Id": f"ev-{tag}"},
            )
            await stored_outcome(nc, settings, f"ev-{tag}", timeout=30)
            evaluation_row = f'#evaluations tbody tr:has-text("ev-{tag}")'
            for _ in range(50):
                await page.click("#evaluations-refresh")
                if await page.query_selector(evaluation_row) is not None:
                    break
                await page.wait_for_timeout(200)
            assert "1/2" in (await page.text_content(evaluation_row) or "")
            link = await page.get_attribute(f"{evaluation_row} a", "href")
            assert link is not None

            # A graph and a workflow, drawn by the vendored Mermaid under the strict CSP.
            for task_id, graph, inputs in (
                (f"review-{tag}", "review", {"customer": "acme", "amounts": [120.0, 3000.0]}),
                (f"opinions-{tag}", "opinions", "a four-day week"),
            ):
                await js.publish(
                    graph_task_subject(prefix, graph),
                    RunGraph(task_id=task_id, graph=graph, inputs=inputs)
                    .model_dump_json()
                    .encode(),
                    headers={"Nats-Msg-Id": task_id},
                )
            workflow_row = f'#graphs tbody tr[data-run-id] >> text="opinions-{tag}"'
            await page.wait_for_selector(workflow_row, timeout=20_000)
            await page.wait_for_selector(
                '#graphs tbody tr:has-text("opinions") .status-completed', timeout=20_000
            )
            await page.click(workflow_row)
            for diagram in ("#graph-diagram img", "#sequence-diagram img"):
                await page.wait_for_selector(diagram, timeout=20_000)
                await page.wait_for_function(
                    "(s) => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
                    arg=diagram,
                )
            assert "fan_out" in (await page.text_content("#graph-source") or "")
            await page.click(f'#runs tbody tr[data-task-id="live-{tag}"]')
            await page.wait_for_selector('#timeline tbody tr[data-event="RunCompleted"]')
            await page.screenshot(path=artifacts / "dashboard.png", full_page=True)
            await page.click("#detail-close")
            await page.evaluate("window.scrollTo(0, 0)")
            await page.screenshot(path=artifacts / "dashboard-overview.png")

            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert await page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
            renders = await page.evaluate("window.__dashboardRenders")
            assert any(r["task_id"] == live.task_id and r["status"] == "completed" for r in renders)

            # Last, the evaluation's report (a static page: nothing in it runs).
            await page.goto(projector.dashboard.url.rstrip("/") + link)
            assert "sums" in (await page.text_content("h1") or "")
            assert await page.locator("svg").count() == 4
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            await page.screenshot(
                path=artifacts / "dashboard-evaluation-report.png", full_page=True
            )
        finally:
            await browser.close()
    assert problems == []

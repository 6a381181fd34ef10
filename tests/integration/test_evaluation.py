"""Evaluations on real NATS and both stores: `RunEvaluation` tasks run their cases as
recorded agent runs on the workers, score them, answer, feed the report view; bad tasks
are rejected and answered; and scoring history or replaying makes no model calls."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.evaluation.evaluation import Evaluation, evaluation_id_for
from agentledger.domain.evaluation.tasks import EVALUATION_KEY, case_task_id
from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.subjects import eval_subject, evaluation_progress_subject
from agentledger.handlers.evaluation.report_html import evaluation_report_html
from agentledger.handlers.queries import answer
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.agents import CATALOG, JOURNAL_ENV, read_journal
from support.harness import (
    cli,
    nats_client,
    running_projector,
    running_worker,
    settings_env,
    stored_outcome,
)

DATASET = """
evaluators:
  - MaxDuration: 30
cases:
  - name: add
    inputs: add 2 and 3
    expected_output: The result is 5.0.
    evaluators: [EqualsExpected, {ToolCalled: {tool: add, args: {a: 2, b: 3}}}]
  - name: times
    inputs: what is 7 times 8
    expected_output: The result is 56.0.
    evaluators: [EqualsExpected, {ToolCalled: {tool: multiply}}]
  - name: product
    inputs: the product of 3 and 4
    expected_output: The result is 12.0.
    evaluators: [EqualsExpected]
  - name: effect-1
    inputs: alpha
    metadata: {agent: effect}
    evaluators: [{Contains: {value: "effect done"}}]
  - name: effect-2
    inputs: beta
    metadata: {agent: effect}
    evaluators: [{Contains: {value: "effect done"}}]
  - name: echo-markup
    inputs: "<script>alert(1)</script>"
    metadata: {agent: echo}
    evaluators: [{Contains: {value: "<script>"}}]
"""

EXTRA = """
[agents.calculator_v2]
ref = "agentledger.catalog.example_agents:calculator_v2"
[datasets.mixed]
path = "mixed.yaml"
agent = "calculator"
concurrency = 3
[datasets.mixed.thresholds]
pass_rate = 0.99
[datasets.broken]
path = "missing.yaml"
agent = "calculator"
"""


@pytest.fixture
def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    (tmp_path / "mixed.yaml").write_text(DATASET)
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG + EXTRA)
    journal = tmp_path / "journal.txt"
    os.environ[JOURNAL_ENV] = str(journal)
    settings: Settings = make_settings(backend, catalog=str(catalog))
    return settings


@pytest.fixture(autouse=True)
def _no_journal_leak() -> Any:
    yield
    os.environ.pop(JOURNAL_ENV, None)


async def _evaluate(nc: Any, settings: Settings, body: dict[str, Any], dataset: str) -> Any:
    await nc.jetstream().publish(
        eval_subject(settings.subject_prefix, dataset),
        json.dumps(body).encode(),
        headers={"Nats-Msg-Id": str(body.get("task_id", "x"))},
    )
    return await stored_outcome(nc, settings, str(body["task_id"]), timeout=90)


async def test_an_evaluation_runs_its_cases_on_the_workers_scores_and_reports(
    settings: Settings,
) -> None:
    async with running_worker(settings), running_projector(settings) as projector:
        async with nats_client(settings) as nc:
            progress = await nc.subscribe(
                evaluation_progress_subject(settings.subject_prefix, "ev-1")
            )
            outcome = await _evaluate(
                nc, settings, {"task_id": "ev-1", "dataset": "mixed"}, "mixed"
            )
            assert outcome["status"] == "completed"
            assert (outcome["cases"], outcome["passed"], outcome["failed"]) == (6, 6, 0)
            assert outcome["thresholds_met"] is True
            seen = []
            while True:
                try:
                    seen.append(json.loads((await progress.next_msg(timeout=2)).data))
                except Exception:
                    break
            assert seen and seen[-1]["finished"] and seen[-1]["done"] == 6
        store = EventStore(settings)
        try:
            evaluation = store.get(evaluation_id_for("ev-1"), Evaluation)
            assert evaluation is not None and evaluation.finished
            assert [r.case for r in evaluation.case_results()][:3] == ["add", "times", "product"]
            # Every case is a real recorded run, tagged with its evaluation.
            for index in range(6):
                events = store.events(run_id_for(case_task_id("ev-1", index)))
                assert isinstance(events[0], AgentRun.RunRequested)
                assert isinstance(events[-1], AgentRun.RunCompleted)
                assert events[0].metadata[EVALUATION_KEY] == "ev-1"
            scored = [
                e for e in store.events(evaluation.id) if isinstance(e, Evaluation.CaseScored)
            ]
            assert len(scored) == 6
        finally:
            store.close()
        assert projector.store is not None and projector.views is not None
        last = await asyncio.to_thread(projector.store.max_notification_id)
        assert await asyncio.to_thread(projector.wait_until, last, 20.0)
        rows = answer(projector.views, "evaluations", {"dataset": "mixed"})
        assert [(r["task_id"], r["status"], r["passed"], r["cases"]) for r in rows] == [
            ("ev-1", "finished", 6, 6)
        ]
        report = answer(projector.views, "evaluation", {"task_id": "ev-1"})
        assert report["thresholds"]["pass_rate"] == 0.99
        markup = next(r for r in report["results"] if r["case"] == "echo-markup")
        assert markup["prompt"] == "<script>alert(1)</script>"
        assert markup["assertions"] == {"MaxDuration": True, "Contains": True}
        html = evaluation_report_html(projector.views, "ev-1")
        assert html is not None and "echo-markup" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
        assert evaluation_report_html(projector.views, "no-such-evaluation") is None


async def test_bad_evaluation_tasks_are_rejected_and_answered(settings: Settings) -> None:
    async with running_worker(settings), nats_client(settings) as nc:
        unknown = await _evaluate(nc, settings, {"task_id": "ev-u", "dataset": "nope"}, "nope")
        assert unknown["status"] == "rejected"
        assert unknown["error"]["kind"] == "unknown_dataset"
        assert "no dataset 'nope'" in unknown["error"]["message"]
        broken = await _evaluate(nc, settings, {"task_id": "ev-b", "dataset": "broken"}, "broken")
        assert broken["error"]["kind"] == "dataset_invalid"
        mismatch = await _evaluate(nc, settings, {"task_id": "ev-m", "dataset": "mixed"}, "other")
        assert mismatch["error"]["kind"] == "invalid_payload"
        assert "does not match the subject" in mismatch["error"]["message"]
        agent = await _evaluate(
            nc, settings, {"task_id": "ev-a", "dataset": "mixed", "agents": {"*": "ghost"}}, "mixed"
        )
        assert agent["error"]["kind"] == "unknown_agent"
        hostile = await _evaluate(
            nc, settings, {"task_id": "ev-h", "dataset": "mixed", "label": "\x00"}, "mixed"
        )
        assert hostile["status"] == "rejected"
        assert hostile["error"]["kind"] == "invalid_payload"


async def test_compare_history_and_replay_over_recorded_evaluations(
    settings: Settings, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.txt"
    async with running_worker(settings), running_projector(settings) as projector:
        async with nats_client(settings) as nc:
            first = await _evaluate(nc, settings, {"task_id": "ev-v1", "dataset": "mixed"}, "mixed")
            second = await _evaluate(
                nc,
                settings,
                {"task_id": "ev-v2", "dataset": "mixed", "agents": {"calculator": "calculator_v2"}},
                "mixed",
            )
        assert (first["passed"], second["passed"]) == (6, 4)
        assert projector.store is not None
        last = await asyncio.to_thread(projector.store.max_notification_id)
        assert await asyncio.to_thread(projector.wait_until, last, 20.0)
    env = settings_env(settings)
    env[JOURNAL_ENV] = str(journal)

    compared = cli("eval", "compare", "ev-v1", "ev-v2", "--check", "--json", env=env)
    assert compared.returncode == 1, compared.stderr
    changes = {c["case"]: c for c in json.loads(compared.stdout)["changes"]}
    assert changes["times"]["change"] == "regression"
    assert changes["times"]["details"] == [
        "EqualsExpected: true -> false",
        "ToolCalled:multiply: true -> false",
    ]
    assert changes["product"]["change"] == "regression"
    assert changes["add"]["change"] == "unchanged"

    calls_before = read_journal(journal)
    # 2 evaluations x 2 effect cases x 2 model calls each
    assert len([c for c in calls_before if c.startswith("model-call")]) == 8
    history = cli("eval", "history", "--agent", "effect", "--dataset", "mixed", "--json", env=env)
    assert history.returncode == 0, history.stderr
    scored = json.loads(history.stdout)
    assert scored["runs_scored"] == 4
    assert {c["case"].split("@")[0] for c in scored["cases"]} == {"effect-1", "effect-2"}
    assert all(c["passed"] for c in scored["cases"])
    replayed = cli("eval", "replay", "mixed", "--evaluation", "ev-v1", "--json", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    verdicts = {c["case"]: c["verdict"] for c in json.loads(replayed.stdout)["cases"]}
    assert set(verdicts.values()) == {"identical"}, verdicts
    # Neither scored history nor the replay called a model (the journal counts calls).
    assert read_journal(journal) == calls_before

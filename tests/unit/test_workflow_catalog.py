"""`[workflows.*]` in the catalog: a typo is a start-up error naming the workflow, and
each pattern builds its graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentledger.domain.orchestration.decisions import (
    Delegate,
    FinalAnswer,
    Handoff,
    parse_decision,
)
from agentledger.domain.orchestration.flow import bounded, response_id
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.refs import CatalogError

AGENTS = """
[agents.a]
ref = "agentledger.catalog.example_agents:greeter"
[agents.b]
ref = "agentledger.catalog.example_agents:greeter"
"""


def load(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "catalog.toml"
    path.write_text(AGENTS + text)
    catalog = Catalog.load(path)
    catalog.check()
    return catalog


def test_the_example_workflows_load_as_graphs() -> None:
    catalog = Catalog.load(Path(__file__).resolve().parents[2] / "catalog" / "example.toml")
    catalog.check()
    for name in ("write_up", "opinions", "report", "endless", "names_etl", "helpdesk"):
        assert catalog.graphs[name].ref.startswith("workflow:")
    assert [n for n in catalog.graphs["opinions"].graph.nodes] == [
        "__start__",
        "fan_out",
        "merge",
        "__end__",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[workflows.w]\npattern = "loop"\nagents = ["a"]', "pattern must be one of"),
        ('[workflows.w]\npattern = "sequential"\nagents = ["a", "ghost"]', "ghost"),
        (
            '[workflows.w]\npattern = "sequential"\nagent = ["a"]',
            "unknown key(s) for a sequential: agent",
        ),
        ('[workflows.w]\npattern = "supervisor"\nsupervisor = "a"', "a supervisor needs workers"),
        ('[workflows.w]\npattern = "parallel"\nagents = ["a"]\npolicy = "sometimes"', "policy"),
        ('[workflows.w]\npattern = "parallel"\nagents = ["a"]\nmerge = "nobody"', "nobody"),
        (
            '[workflows.w]\npattern = "sequential"\nagents = ["a"]\nstep_timeout_s = -1',
            "step_timeout_s",
        ),
        (
            '[workflows.w]\npattern = "supervisor"\nsupervisor = "a"\nworkers = ["b"]\nmax_rounds = 0',
            "max_rounds",
        ),
        ('[workflows.resume]\npattern = "sequential"\nagents = ["a"]', "not a valid name"),
        (
            '[workflows.w]\npattern = "pipeline"\nstages = [{ agent = "a", output = "no.such:Type" }]',
            "no.such",
        ),
    ],
)
def test_a_bad_workflow_is_a_start_up_error_naming_it(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, text)
    assert "workflow 'w'" in str(caught.value) or "resume" in str(caught.value)
    assert problem in str(caught.value)


def test_a_deciding_agents_output_is_a_decision() -> None:
    assert parse_decision({"worker": "w", "instruction": "go"}) == Delegate(
        worker="w", instruction="go"
    )
    assert parse_decision({"to": "billing"}) == Handoff(to="billing")
    assert parse_decision({"answer": [1, 2]}) == FinalAnswer(answer=[1, 2])
    assert parse_decision("plain text") == FinalAnswer(answer="plain text")
    with pytest.raises(ValueError, match="not a Delegate, Handoff or FinalAnswer"):
        parse_decision({"something": "else"})


def test_message_content_is_bounded_and_responses_are_named_after_requests() -> None:
    assert bounded("short") == "short"
    big = bounded("x" * 40_000)
    assert big["truncated"] is True and big["chars"] == 40_002
    assert len(big["preview"]) == 4_000
    assert response_id("req-abc") == "res-abc"

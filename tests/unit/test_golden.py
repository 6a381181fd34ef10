"""Golden histories written by earlier code must keep loading and replaying `identical`.

`history-format1.json` is an export (format 1) written by the code that introduced
replay; see make_golden.py. The stored events of release 0.1.0 are loaded through real
stores in tests/integration/test_golden_stored.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentledger.domain.history_file import decode_aggregate, parse_history
from agentledger.domain.run import AgentRun
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.replay import replay_history
from support.replay_agents import write_replay_catalog

pytestmark = pytest.mark.asyncio

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


async def test_golden_history_loads_and_every_run_replays_identical(tmp_path: Path) -> None:
    document = parse_history((GOLDEN / "history-format1.json").read_bytes())
    assert document.format_version == 1
    runs = [a for a in document.aggregates if a.aggregate_type == "AgentRun"]
    assert len(runs) == 20
    for aggregate in document.aggregates:
        events = decode_aggregate(aggregate)
        assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    first = decode_aggregate(runs[0])[0]
    assert isinstance(first, AgentRun.RunRequested) and first.parent_run_id is None

    reports = await replay_history(document, Catalog.load(write_replay_catalog(tmp_path)))
    assert len(reports) == 20
    assert [r.task_id for r in reports if not r.identical] == []


async def test_golden_history_replays_from_the_refs_it_names_without_a_catalog_entry(
    tmp_path: Path,
) -> None:
    document = parse_history((GOLDEN / "history-format1.json").read_bytes())
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    reports = await replay_history(document, Catalog.load(empty))
    assert len(reports) == 20
    # The file names agentledger 0.1's top-level `catalog.example_agents`, which is
    # `agentledger.catalog.example_agents` since the package rename: it still resolves.
    assert document.agents["calculator"] == "catalog.example_agents:calculator"
    assert all(r.identical for r in reports)

"""The projection registry, and the DDL every projection shares with both backends."""

from __future__ import annotations

import sqlite3

import pytest

from agentledger.projections.views import ALL_PROJECTIONS, UnknownView, projection_by_name


def test_projections_are_found_by_name() -> None:
    names = [p.name for p in ALL_PROJECTIONS]
    assert names == [
        "runs",
        "conversations",
        "metrics",
        "snapshots",
        "graph_runs",
        "route_decisions",
        "workflows",
        "alerts",
        "evaluations",
    ]
    for projection in ALL_PROJECTIONS:
        assert projection_by_name(projection.name) is projection


def test_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownView, match="unknown view 'nope'; valid views: runs, "):
        projection_by_name("nope")


def test_ddl_is_idempotent_and_creates_exactly_the_declared_tables() -> None:
    connection = sqlite3.connect(":memory:")
    for projection in ALL_PROJECTIONS:
        for _ in range(2):
            for statement in projection.ddl:
                connection.execute(statement)
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    declared = {table for p in ALL_PROJECTIONS for table in p.tables}
    assert tables == declared
    assert all(table.startswith("al_") for table in declared)
    connection.close()

"""What the views keep of a text (never a NUL, bounded keys), and the shared query shapes."""

from __future__ import annotations

import sqlite3

import pytest

from agentledger.projections.base import (
    KEY_CHARS,
    select_by_run_or_task,
    select_page,
    view_key,
    without_nul,
)


def test_nul_becomes_the_replacement_character() -> None:
    assert without_nul("a\x00b\x00") == "a\ufffdb\ufffd"
    text = "nothing to replace"
    assert without_nul(text) is text


def test_a_long_key_is_cut_with_a_marker_that_keeps_keys_apart() -> None:
    assert view_key("calculator") == "calculator"
    assert view_key("x" * KEY_CHARS) == "x" * KEY_CHARS
    long, longer = "y" * 20_000, "y" * 20_001
    key = view_key(long)
    assert len(key) <= KEY_CHARS and key.startswith("y" * 100)
    assert "[20000 chars, " in key
    assert view_key(longer) != key and view_key(long) == key  # deterministic
    assert "\x00" not in view_key("\x00" * 500)


@pytest.fixture
def runs() -> sqlite3.Cursor:
    cursor = sqlite3.connect(":memory:").cursor()
    cursor.execute("CREATE TABLE t (run_id TEXT, task_id TEXT, agent TEXT, started_at TEXT)")
    cursor.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        [
            ("r1", "task-a", "x", "2026-01-01"),
            ("r2", "task-a", "y", "2026-01-03"),  # a later run of the same task
            ("r3", "task-b", "x", "2026-01-02"),
        ],
    )
    return cursor


def test_a_page_applies_only_the_filters_given_in_order(runs: sqlite3.Cursor) -> None:
    select = "SELECT run_id FROM t"
    page = {"order_by": "started_at DESC", "query": "list_t"}
    assert select_page(runs, select, (("agent", None),), limit=10, offset=0, **page) == [
        ("r2",),
        ("r3",),
        ("r1",),
    ]
    assert select_page(runs, select, (("agent", "x"),), limit=1, offset=1, **page) == [("r1",)]
    both = (("agent", "x"), ("task_id", "task-b"))
    assert select_page(runs, select, both, limit=10, offset=0, **page) == [("r3",)]
    with pytest.raises(ValueError, match="list_t needs limit >= 1 and offset >= 0, got 0, 0"):
        select_page(runs, select, (), limit=0, offset=0, **page)


def test_by_task_id_the_newest_run_wins(runs: sqlite3.Cursor) -> None:
    select = "SELECT run_id FROM t"
    by = {"newest": "started_at", "query": "get_t"}
    assert select_by_run_or_task(runs, select, run_id="r1", task_id=None, **by) == ("r1",)
    assert select_by_run_or_task(runs, select, run_id=None, task_id="task-a", **by) == ("r2",)
    assert select_by_run_or_task(runs, select, run_id=None, task_id="nope", **by) is None
    with pytest.raises(ValueError, match="get_t needs run_id or task_id"):
        select_by_run_or_task(runs, select, run_id=None, task_id=None, **by)

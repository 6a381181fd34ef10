"""A small run of bench/fuzz.py: hostile task messages (payload, headers, subject) through
a real worker each get exactly one clear outcome; nothing the schema forbids runs; the
canary and the projector are unharmed. The full run (10,000 cases) is in BENCHMARKS.md."""

from __future__ import annotations

import sys

import pytest
from conftest import Backend, MakeSettings

from support.harness import REPO_ROOT

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_hostile_cases_each_get_one_clear_outcome(
    make_settings: MakeSettings, backend: Backend
) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from bench.fuzz import run

    report = await run(make_settings(backend, max_deliveries=5), n=400, seed=11)
    assert report.without_outcome == []
    assert report.more_than_one == []
    assert report.forbidden_but_run == []
    assert report.canary_unchanged and report.canary_after_ok and report.projector_caught_up
    assert report.refused_at_publish > 0 and report.statuses.get("rejected", 0) > 100

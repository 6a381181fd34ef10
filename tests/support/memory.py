"""Shared fixtures of the memory tests: a constructed set of turns, recorded as runs, and
folding the memory view."""

from __future__ import annotations

from typing import Any

from agentledger.domain.run import AgentRun
from agentledger.handlers.bootstrap import make_memory_projector
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings

# (agent, session, prompt, output): topics far apart, so each has one right neighbour.
TURNS = [
    (
        "notes",
        "s-ops",
        "the production deploy is scheduled for Friday evening",
        "noted: deploy Friday",
    ),
    ("notes", "s-ops", "the database password rotates every month", "noted: monthly rotation"),
    ("greeter", "s-home", "my favourite food is spicy ramen with an egg", "yum, ramen"),
    ("greeter", "s-home", "our cat is called Biscuit and she is ginger", "hello Biscuit"),
    ("calculator", "s-math", "what is 17 plus 25", "42"),
    ("notes", "s-travel", "my flight to Lisbon leaves at 7 in the morning", "noted: early flight"),
]
QUERIES = {
    "when do we ship the release to prod?": "the production deploy is scheduled for Friday evening",
    "what noodles do I like to eat?": "my favourite food is spicy ramen with an egg",
    "what's the name of our pet?": "our cat is called Biscuit and she is ginger",
    "how often are credentials changed?": "the database password rotates every month",
    "what time is my plane to Portugal?": "my flight to Lisbon leaves at 7 in the morning",
}


def record_turns(store: EventStore, turns: list[tuple[str, str, str, str]], tag: str = "") -> None:
    for i, (agent, session, prompt, output) in enumerate(turns):
        run = AgentRun(
            task_id=f"turn{tag}-{i}",
            agent=agent,
            prompt=prompt,
            session_id=session,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        run.complete(output=output, cost_usd=None, duration_ms=1.0)
        store.save(run)


def fold(settings: Settings, store: EventStore, views: Any) -> Any:
    projector = make_memory_projector(settings, store, views)
    while projector.run_once():
        pass
    return projector

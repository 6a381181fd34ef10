"""Event versioning: every event class has a version, a shape that never changes under
that version, and upcasters from every older version."""

from __future__ import annotations

import json
from pathlib import Path

from agentledger.domain.event_registry import EVENT_CLASSES, event_shape, event_shapes
from agentledger.domain.history_file import ExportedEvent, decode_event
from agentledger.domain.run import AgentRun

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "event-shapes.json"
CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "events.json"


def test_every_event_class_declares_its_version_and_a_stable_topic() -> None:
    assert len(EVENT_CLASSES) == 40
    for cls in EVENT_CLASSES:
        own = [k for k in cls.__mro__ if k.__module__ == cls.__module__ and k.TOPIC == cls.TOPIC]
        assert any("class_version" in vars(k) for k in own), (
            f"{cls.__qualname__} declares no class_version"
        )
        assert f"agentledger.{cls.__qualname__}" == cls.TOPIC


def test_shapes_never_change_under_a_version_and_old_versions_upcast() -> None:
    golden = json.loads(GOLDEN.read_text())
    for cls in EVENT_CLASSES:
        versions = golden.get(cls.TOPIC)
        assert versions is not None, f"{cls.TOPIC} is missing from {GOLDEN.name}"
        current = cls.class_version
        assert str(current) in versions, (
            f"{cls.TOPIC} is class_version {current}: add its shape to {GOLDEN.name}"
        )
        assert event_shape(cls) == versions[str(current)], (
            f"{cls.TOPIC} changed shape without a new class_version: bump it, add"
            f" upcast_v{current}_v{current + 1}, and add the new shape to {GOLDEN.name}"
            " (never edit a recorded one)"
        )
        for old in range(1, current):
            assert str(old) in versions
            assert callable(getattr(cls, f"upcast_v{old}_v{old + 1}", None))


def test_the_published_event_catalogue_is_the_current_shapes() -> None:
    assert json.loads(CONTRACT.read_text()) == event_shapes()


def test_a_v1_run_requested_is_upcast_with_no_fork() -> None:
    v1_state = {
        "timestamp": "2026-11-01T12:00:00+00:00",
        "originator_topic": "agentledger.AgentRun",
        "task_id": "t",
        "agent": "calculator",
        "prompt": "add 1 and 2",
        "session_id": None,
        "metadata": {},
        "usage_limits": {},
        "deadline": None,
        "history_version": 0,
    }
    event = decode_event(
        "7fc8c221-5135-5054-99d0-14360127ac95",
        ExportedEvent(
            version=1, topic="agentledger.AgentRun.RunRequested", class_version=1, state=v1_state
        ),
    )
    assert isinstance(event, AgentRun.RunRequested)
    assert (event.parent_run_id, event.fork_at, event.fork_prompt) == (None, None, None)
    run = event.mutate(None)
    assert isinstance(run, AgentRun) and run.parent_run_id is None and run.status == "running"

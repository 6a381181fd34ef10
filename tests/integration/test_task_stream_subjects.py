"""The tasks stream holds only the subjects workers consume, also after an upgrade.

A publish to a `<prefix>.tasks...` subject no worker consumes must fail at once ("no
responders": no stream), not be stored where nothing ever answers it.
"""

from __future__ import annotations

import nats
import pytest
from conftest import MakeSettings
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError

from agentledger.domain.subjects import streams_stream, task_stream_subjects
from agentledger.infra.nats import ensure_streams
from agentledger.infra.settings import Settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings("sqlite")  # type: ignore[no-any-return]


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "upgraded"])
async def test_publishes_no_worker_consumes_are_refused(settings: Settings, existing: bool) -> None:
    prefix = settings.subject_prefix
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        if existing:
            # The tasks stream as releases up to 0.2 created it, holding a stray message.
            await js.add_stream(
                StreamConfig(
                    name=settings.tasks_stream,
                    subjects=[f"{prefix}.tasks.>"],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                    duplicate_window=settings.duplicate_window_s,
                    max_age=7 * 24 * 3600,
                )
            )
            await js.publish(f"{prefix}.tasks.other", b"stray")
        await ensure_streams(js, settings)
        await ensure_streams(js, settings)  # idempotent

        info = await js.stream_info(settings.tasks_stream)
        assert info.config.subjects == task_stream_subjects(prefix)
        assert task_stream_subjects(prefix) == [
            f"{prefix}.tasks.run.*",
            f"{prefix}.tasks.graph.*",
            f"{prefix}.tasks.route",
            f"{prefix}.tasks.workflow.cancel",
            f"{prefix}.tasks.eval.*",
        ]
        assert info.state.messages == (1 if existing else 0)  # narrowing keeps messages
        for subject in (
            "tasks.other",
            "tasks.run",
            "tasks.run.greeter.extra",
            "tasks.graph.g.h",
            "tasks.route.x",
            "tasks.eval",
            "tasks.eval.d.e",
        ):
            with pytest.raises(NoStreamResponseError):
                await js.publish(f"{prefix}.{subject}", b"{}", timeout=2)
        ack = await js.publish(f"{prefix}.tasks.run.x", b"{}", timeout=2)
        assert ack.stream == settings.tasks_stream
        assert (await js.stream_info(settings.tasks_stream)).state.messages == (
            2 if existing else 1
        )
    finally:
        await nc.close()


async def test_an_operators_stream_settings_survive_a_restart(make_settings: MakeSettings) -> None:
    import dataclasses

    from agentledger.infra.nats import nats_connect_kwargs

    settings = make_settings("sqlite")
    nc = await nats.connect(**nats_connect_kwargs(settings, "t"))
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        info = await js.stream_info(settings.tasks_stream)
        await js.update_stream(dataclasses.replace(info.config, max_age=3600.0, max_msgs=12345))
        await ensure_streams(js, settings)  # a worker starting again
        after = (await js.stream_info(settings.tasks_stream)).config
        assert after.max_age == 3600.0 and after.max_msgs == 12345
    finally:
        await nc.drain()


async def test_many_prefixes_fit_on_one_server(make_settings: MakeSettings) -> None:
    """Regression: the streams stream was a memory stream reserving 256 MB; the server's
    JetStream memory ran out after a few prefixes ('insufficient memory resources')."""
    nc = await nats.connect(make_settings("sqlite").nats_url)
    try:
        js = nc.jetstream()
        for _ in range(40):
            settings = make_settings("sqlite")
            await ensure_streams(js, settings)
            info = await js.stream_info(streams_stream(settings.subject_prefix))
            assert info.config.storage == StorageType.FILE
    finally:
        await nc.drain()

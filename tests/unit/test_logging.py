"""What an operator sees on stderr: JSON lines only in JSON mode, never a local variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SECRET = "hunter2-secret"


def _stderr_of(script: str, **env: str) -> str:
    """Run `script` in a fresh interpreter (logging is process-wide) and return its stderr."""
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_json_mode_prints_only_json_lines_including_library_records() -> None:
    stderr = _stderr_of(
        """
        import logging, warnings
        import structlog
        from agentledger.infra.logging import configure_logging

        configure_logging("json", "INFO")
        logging.getLogger("faststream").warning("consumer %s is lagging", "c1")
        logging.getLogger("nats.aio.client").error(
            "nats: encountered error", exc_info=ConnectionRefusedError("refused")
        )
        logging.getLogger("psycopg.pool").info("below the libraries' threshold")
        warnings.warn("old option", UserWarning)
        structlog.get_logger("agentledger.worker").info(
            "worker started", task_id="t-1", url="nats://ledger:pw@nats:4222"
        )
        """
    )
    lines = [json.loads(line) for line in stderr.splitlines()]
    by_logger = {line["logger"]: line for line in lines}
    assert set(by_logger) == {"faststream", "nats.aio.client", "py.warnings", "agentledger.worker"}
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
    assert by_logger["faststream"]["event"] == "consumer c1 is lagging"
    assert by_logger["faststream"]["level"] == "warning"
    assert "ConnectionRefusedError: refused" in by_logger["nats.aio.client"]["exception"]
    assert "UserWarning: old option" in by_logger["py.warnings"]["event"]
    ours = by_logger["agentledger.worker"]
    assert (ours["event"], ours["level"], ours["task_id"]) == ("worker started", "info", "t-1")
    assert ours["url"] == "nats://***@nats:4222"


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_exception_never_shows_local_variables(fmt: str) -> None:
    # The secret comes from the environment, so it is a runtime value, not source text
    # a traceback may quote.
    stderr = _stderr_of(
        f"""
        import logging, os
        import structlog
        from agentledger.infra.logging import configure_logging

        def charge(amount):
            password = os.environ["CARD_PASSWORD"]
            raise RuntimeError("card declined")

        configure_logging({fmt!r}, "INFO")
        try:
            charge(12)
        except RuntimeError:
            structlog.get_logger("agentledger").exception("charge failed")
            logging.getLogger("eventsourcing").exception("charge failed in a library")
        """,
        CARD_PASSWORD=SECRET,
    )
    assert stderr.count("RuntimeError: card declined") == 2, stderr
    assert SECRET not in stderr, stderr


def test_a_peer_closing_a_socket_is_one_line_without_a_traceback() -> None:
    # Seen in CI: a worker with wrong NATS credentials printed asyncio's traceback of the
    # server resetting the connection after its one clear error line.
    code = (
        "import logging\n"
        "from agentledger.infra.logging import configure_logging\n"
        "configure_logging('console', 'INFO')\n"
        "try:\n"
        "    raise ConnectionResetError(104, 'Connection reset by peer')\n"
        "except ConnectionResetError:\n"
        "    logging.getLogger('asyncio').error('Fatal read error on socket transport',"
        " exc_info=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Fatal read error on socket transport" in result.stderr
    assert "Connection reset by peer" in result.stderr
    assert "Traceback" not in result.stderr

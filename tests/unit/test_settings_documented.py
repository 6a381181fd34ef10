"""Every setting is an `AGENTLEDGER_*` variable named in the README's settings table."""

from __future__ import annotations

from pathlib import Path

from agentledger.infra.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings_section() -> str:
    text = README.read_text()
    start = text.index("## Settings")
    return text[start : text.index("\n## ", start + 1)]


def test_every_setting_appears_in_the_readme_table() -> None:
    table = _settings_section()
    missing = [
        f"AGENTLEDGER_{name.upper()}"
        for name in Settings.model_fields
        if f"`AGENTLEDGER_{name.upper()}`" not in table
    ]
    assert missing == []


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    import re

    named = set(re.findall(r"`AGENTLEDGER_([A-Z0-9_]+)`", _settings_section()))
    assert named - {name.upper() for name in Settings.model_fields} == set()

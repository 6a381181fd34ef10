"""The catalog's `[alerts.<name>]` tables (`AlertRule`s; the table's name is the rule's)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentledger.domain.errors import first_problem
from agentledger.domain.monitoring.rules import AlertRule
from agentledger.handlers.refs import CatalogError

__all__ = ["alert_rules", "catalog_alert_rules"]


def alert_rules(path: Path, data: dict[str, Any], agents: set[str]) -> list[AlertRule]:
    """The catalog's alert rules; a bad table, or a rule for an agent the catalog does
    not have, is a `CatalogError` naming the rule."""
    rules = []
    for name, table in (data.get("alerts") or {}).items():
        where = f"catalog {path}: alert {name!r}"
        if not isinstance(table, dict):
            raise CatalogError(f"{where} must be a table")
        try:
            rule = AlertRule.model_validate({**table, "name": name})
        except ValidationError as e:
            raise CatalogError(f"{where}: {first_problem(e, 'alert')}") from None
        if rule.agent != "*" and rule.agent not in agents:
            raise CatalogError(f"{where}: no agent {rule.agent!r} in the catalog")
        rules.append(rule)
    return rules


def catalog_alert_rules(path: Path) -> tuple[list[AlertRule], set[str]]:
    """The alert rules of the catalog file at `path` and its agents' names, read from
    the TOML alone: the projector needs no models built and no references imported."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"catalog {path} is not valid TOML: {e}") from None
    agents = set(data.get("agents") or {})
    return alert_rules(path, data, agents), agents

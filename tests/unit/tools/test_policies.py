"""The middleware policies as the catalog declares them: parsing, overrides, errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentledger.domain.tools.policies import MiddlewareSpec, RateLimitSpec, RetrySpec, admit
from agentledger.handlers.catalog import Catalog, CatalogError


def test_rate_shorthand_and_its_errors() -> None:
    assert RateLimitSpec.model_validate("5/s").model_dump(include={"calls", "per_s"}) == {
        "calls": 5,
        "per_s": 1.0,
    }
    assert RateLimitSpec.model_validate("2/10s").per_s == 10.0
    assert RateLimitSpec.model_validate("100/m").per_s == 60.0
    with pytest.raises(ValidationError, match="write it as <calls>/<unit>"):
        RateLimitSpec.model_validate("fast")
    with pytest.raises(ValidationError, match=r"metadata\.<name>"):
        RateLimitSpec(calls=1, per_s=1, key="user")
    assert RateLimitSpec(calls=1, per_s=1, key="metadata.user").key == "metadata.user"


def test_a_tool_table_overrides_or_turns_off_the_agent_wide_policies() -> None:
    spec = MiddlewareSpec.model_validate(
        {
            "timeout_s": 2,
            "log": True,
            "cache": {"ttl_s": 60},
            "tools": {"fresh": {"cache": False, "timeout_s": 5}, "remote": {"rate_limit": "3/m"}},
        }
    )
    fresh, remote, other = (spec.for_tool(t) for t in ("fresh", "remote", "other"))
    assert fresh.cache is None and fresh.timeout_s == 5 and fresh.log is not None
    assert remote.cache is not None and remote.rate_limit is not None and remote.timeout_s == 2
    assert other.rate_limit is None and other.cache is not None
    assert MiddlewareSpec().for_tool("x").is_empty()


def test_retry_names_exception_classes_given_as_types_or_names() -> None:
    assert RetrySpec(on=[ConnectionError, "x.y:Z"]).on == ("ConnectionError", "x.y:Z")
    assert RetrySpec(on=ValidationError).on == ("pydantic_core._pydantic_core:ValidationError",)
    with pytest.raises(ValidationError, match="at least one"):
        RetrySpec(on=[])
    assert RetrySpec(backoff_s=0.5, max_backoff_s=1.5).backoff(3) == 1.5


def test_the_sliding_log_never_admits_more_than_calls_in_a_window() -> None:
    rng = random.Random(7)
    starts: list[float] = []
    admitted: list[float] = []
    now = 0.0
    for _ in range(5000):
        now += rng.expovariate(20)  # ~20 attempts per second against 5 per second
        taken, wait = admit(starts, now, 5, 1.0)
        if taken is None:
            assert wait > 0
            continue
        starts = taken
        admitted.append(now)
    assert len(admitted) > 100
    for i, t in enumerate(admitted):
        inside = [u for u in admitted[i:] if u < t + 1.0]
        assert len(inside) <= 5


def _catalog(tmp_path: Path, middleware: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[agents.calc]\nref = "agentledger.catalog.example_agents:calculator"\n' + middleware
    )
    return path


def test_the_catalog_reads_an_agents_middleware(tmp_path: Path) -> None:
    catalog = Catalog.load(
        _catalog(
            tmp_path,
            "[agents.calc.middleware]\ntimeout_s = 3\nretry = { on = ['OSError'] }\n"
            "[agents.calc.middleware.tools.add]\ncache = { ttl_s = 30 }\n",
        )
    )
    spec = catalog.get("calc").middleware
    assert spec is not None and spec.for_tool("add").cache is not None
    assert spec.for_tool("add").timeout_s == 3


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("timeout_s = -1", "middleware: timeout_s: Input should be greater than 0"),
        ("retry = { on = ['NoSuchError'] }", "retry on 'NoSuchError': no such exception class"),
        ("cache = true", "cache = true: give its settings"),
        ("rate_limit = '5 per second'", "write it as <calls>/<unit>"),
        ("colour = 'red'", "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_middleware_table_is_a_clear_catalog_error(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(CatalogError, match="agent 'calc': middleware") as caught:
        Catalog.load(_catalog(tmp_path, f"[agents.calc.middleware]\n{table}\n"))
    assert message in str(caught.value)

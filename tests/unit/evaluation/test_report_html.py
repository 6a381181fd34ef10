"""The HTML report is self-contained and shows user content as text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from agentledger.domain.evaluation.scores import CaseResult, summarise
from agentledger.handlers.evaluation.report_html import ReportData, render_report

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="alert(1)">'


def test_the_report_escapes_everything_and_fetches_nothing() -> None:
    results = [
        CaseResult(
            case=f"case {HOSTILE}",
            agent="a",
            task_id="t1",
            status="completed",
            prompt=HOSTILE,
            output=HOSTILE,
            expected_output={"x": HOSTILE},
            assertions={f"Eval{HOSTILE}": False},
            reasons={f"Eval{HOSTILE}": HOSTILE},
            duration_ms=12.5,
            cost_usd=0.001,
            scores={"Judge": 0.5},
        ),
        CaseResult(case="ok", agent="a", task_id="t2", status="failed", error=HOSTILE),
    ]
    html = render_report(
        ReportData(
            task_id="e1",
            dataset="d",
            label=HOSTILE,
            agents={"a": "b"},
            started_at="2026-12-06T00:00:00+00:00",
            duration_ms=100.0,
            status="finished",
            thresholds={"pass_rate": 0.9},
            breaches=[HOSTILE],
            thresholds_met=False,
            summary=summarise(results),
            results=results,
        )
    )
    tags = _Tags()
    tags.feed(html)
    assert "script" not in tags.names and "img" not in tags.names
    assert not [a for a in tags.attributes if a.startswith("on")]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched
    assert html.count("<svg") == 4  # scores, latency, cost, pass/fail grid
    assert "thresholds NOT met" in html


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)

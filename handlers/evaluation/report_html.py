"""The evaluation report as one self-contained HTML file: no script, no CDN, no fonts to
fetch; the charts are SVG drawn here. Everything shown from the run (prompts, outputs,
reasons, case and evaluator names) is user content and is escaped.

Charts: the distribution of case scores, a latency histogram, the cost of each case,
and a pass/fail grid (cases x evaluators). A case's score is the mean of its numeric
scores, or else the fraction of its assertions that held.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from agentledger.domain.evaluation.scores import CaseResult, Summary, summarise
from agentledger.infra.view_store import ViewStore
from agentledger.projections.evaluation import EvaluationView, get_evaluation

__all__ = ["ReportData", "case_score", "evaluation_report_html", "render_report", "report_of_view"]

_W, _H = 580, 220
_PAD_L, _PAD_R, _PAD_B, _PAD_T = 64, 20, 34, 12
_GREEN, _RED, _GREY, _AMBER, _BLUE = "#2e7d32", "#c62828", "#bdbdbd", "#ef6c00", "#1565c0"


@dataclass(frozen=True, kw_only=True)
class ReportData:
    task_id: str
    dataset: str
    label: str | None
    agents: dict[str, str]
    started_at: str
    duration_ms: float | None
    status: str
    thresholds: dict[str, Any]
    breaches: list[str]
    thresholds_met: bool | None
    summary: Summary
    results: list[CaseResult]
    title: str = "agentledger evaluation"
    notes: list[str] = field(default_factory=list)


def case_score(result: CaseResult) -> float | None:
    if result.errored:
        return 0.0
    if result.scores:
        return sum(result.scores.values()) / len(result.scores)
    if result.assertions:
        return sum(result.assertions.values()) / len(result.assertions)
    return None


def _e(value: Any) -> str:
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return escape(value, quote=True)


def _axes(x_label: str, y_label: str, y_max: float, x_ticks: Sequence[tuple[float, str]]) -> str:
    plot_h = _H - _PAD_B - _PAD_T
    parts = [
        f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_H - _PAD_B}" stroke="#555"/>',
        f'<line x1="{_PAD_L}" y1="{_H - _PAD_B}" x2="{_W - _PAD_R}" y2="{_H - _PAD_B}" stroke="#555"/>',
        f'<text x="{(_W + _PAD_L) / 2}" y="{_H - 4}" text-anchor="middle" class="ax">{_e(x_label)}</text>',
        f'<text x="10" y="{_PAD_T + plot_h / 2}" transform="rotate(-90 10 {_PAD_T + plot_h / 2})"'
        f' text-anchor="middle" class="ax">{_e(y_label)}</text>',
    ]
    for i in range(5):
        value = y_max * i / 4
        y = _H - _PAD_B - plot_h * i / 4
        shown = f"{value:.2g}" if value < 0.01 else f"{value:.3g}"
        parts.append(
            f'<text x="{_PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" class="tk">{shown}</text>'
        )
        if i:
            parts.append(
                f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{_W - _PAD_R}" y2="{y:.1f}" stroke="#eee"/>'
            )
    for x, text in x_ticks:
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _PAD_B + 14}" text-anchor="middle" class="tk">{_e(text)}</text>'
        )
    return "".join(parts)


def _histogram(
    values: Sequence[float], bins: int, lo: float, hi: float, x_label: str, unit: str, colour: str
) -> str:
    if not values:
        return '<p class="none">no values</p>'
    if hi <= lo:
        hi = lo + 1.0
    counts = [0] * bins
    for v in values:
        i = min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))
        counts[i] += 1
    top = max(counts) or 1
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_B - _PAD_T
    bar_w = plot_w / bins
    bars = []
    for i, count in enumerate(counts):
        h = plot_h * count / top
        a, b = lo + (hi - lo) * i / bins, lo + (hi - lo) * (i + 1) / bins
        bars.append(
            f'<rect x="{_PAD_L + i * bar_w + 1:.1f}" y="{_H - _PAD_B - h:.1f}"'
            f' width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{a:.3g}-{b:.3g} {_e(unit)}: {count} case(s)</title></rect>"
        )
    ticks = [(_PAD_L + plot_w * i / 4, f"{lo + (hi - lo) * i / 4:.3g}") for i in range(5)]
    return (
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img">'
        + _axes(f"{x_label} ({unit})" if unit else x_label, "cases", top, ticks)
        + "".join(bars)
        + "</svg>"
    )


def _cost_bars(results: Sequence[CaseResult]) -> str:
    costs = [(r.case, r.cost_usd) for r in results]
    if not any(c is not None for _, c in costs):
        return '<p class="none">no case has a cost (no price in the catalog for its agent)</p>'
    top = max((c or 0.0) for _, c in costs) or 1.0
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_B - _PAD_T
    bar_w = plot_w / max(1, len(costs))
    bars = []
    for i, (case, cost) in enumerate(costs):
        h = plot_h * (cost or 0.0) / top
        shown = "no price" if cost is None else f"${cost:.6f}"
        bars.append(
            f'<rect x="{_PAD_L + i * bar_w + 0.5:.1f}" y="{_H - _PAD_B - h:.1f}"'
            f' width="{max(0.5, bar_w - 1):.1f}" height="{h:.1f}" fill="{_BLUE}">'
            f"<title>{_e(case)}: {shown}</title></rect>"
        )
    return (
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img">'
        + _axes(f"case (1..{len(costs)}, dataset order)", "US dollars", top, [])
        + "".join(bars)
        + "</svg>"
    )


def _grid(results: Sequence[CaseResult], evaluators: Sequence[str]) -> str:
    names = list(evaluators)
    if not results or not names:
        return '<p class="none">nothing to show</p>'
    cell, label_w, head_h = 16, 170, 110
    width = label_w + cell * (len(names) + 1) + 130
    height = head_h + cell * len(results) + 6
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for j, name in enumerate(["run", *names]):
        x = label_w + j * cell + cell / 2
        parts.append(
            f'<text x="{x:.1f}" y="{head_h - 4}" transform="rotate(-60 {x:.1f} {head_h - 4})"'
            f' class="tk">{_e(name[:28])}</text>'
        )
    for i, r in enumerate(results):
        y = head_h + i * cell
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" class="tk">{_e(r.case[:30])}</text>'
        )
        run_colour = _RED if r.errored else _GREEN
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{run_colour}">'
            f"<title>{_e(r.case)}: run {_e(r.status)}{': ' + _e(r.error) if r.error else ''}</title></rect>"
        )
        for j, name in enumerate(names, start=1):
            colour, what = _GREY, "not applied"
            if name in r.evaluator_failures:
                colour, what = _AMBER, f"evaluator failed: {r.evaluator_failures[name]}"
            elif name in r.assertions:
                ok = r.assertions[name]
                colour, what = (_GREEN if ok else _RED), ("true" if ok else "false")
            elif name in r.scores:
                score = r.scores[name]
                colour, what = (_GREEN if score >= 0.5 else _RED), f"score {score:.3g}"
            elif name in r.labels:
                colour, what = _BLUE, f"label {r.labels[name]}"
            reason = r.reasons.get(name)
            tip = f"{r.case} / {name}: {what}" + (f" ({reason})" if reason else "")
            parts.append(
                f'<rect x="{label_w + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}"'
                f' fill="{colour}"><title>{_e(tip)}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def render_report(data: ReportData) -> str:
    s = data.summary
    results = data.results
    scores = [v for r in results if (v := case_score(r)) is not None]
    latencies = [r.duration_ms for r in results if r.duration_ms is not None]
    hi = max(latencies) if latencies else 1.0
    verdict = (
        "running"
        if data.status != "finished"
        else ("thresholds met" if data.thresholds_met else "thresholds NOT met")
    )
    verdict_class = "ok" if data.thresholds_met else ("bad" if data.status == "finished" else "")
    stats = [
        ("cases", f"{s.done}/{s.cases}"),
        ("passed", str(s.passed)),
        ("failed", str(s.failed)),
        ("errored", str(s.errored)),
        ("pass rate", f"{s.pass_rate:.1%}"),
        ("assertions", "-" if s.assertion_rate is None else f"{s.assertion_rate:.1%}"),
        ("p50 latency", _ms(s.latency_p50_ms)),
        ("p95 latency", _ms(s.latency_p95_ms)),
        ("cost", f"${s.cost_usd:.6f}"),
        ("tokens", f"{s.input_tokens:,} in / {s.output_tokens:,} out"),
    ]
    stats += [(f"mean {name}", f"{value:.3f}") for name, value in s.scores.items()]
    rows = []
    for r in results:
        checks = [
            f'<span class="{"ok" if ok else "bad"}">{_e(n)}</span>'
            for n, ok in r.assertions.items()
        ]
        checks += [f"<span>{_e(n)} {v:.3g}</span>" for n, v in r.scores.items()]
        checks += [f'<span class="warn">{_e(n)} failed</span>' for n in r.evaluator_failures]
        why = "; ".join(f"{n}: {t}" for n, t in r.reasons.items())
        rows.append(
            "<tr>"
            f'<td class="{"ok" if r.passed else "bad"}">{"pass" if r.passed else ("error" if r.errored else "fail")}</td>'
            f"<td>{_e(r.case)}</td><td>{_e(r.agent)}</td>"
            f"<td><pre>{_e(r.prompt)}</pre></td>"
            f"<td><pre>{_e(r.output if r.status == 'completed' else (r.error or r.status))}</pre></td>"
            f"<td><pre>{'' if r.expected_output is None else _e(r.expected_output)}</pre></td>"
            f"<td>{' '.join(checks)}<div class='why'>{_e(why)}</div></td>"
            f"<td>{_ms(r.duration_ms)}</td>"
            f"<td>{'-' if r.cost_usd is None else f'${r.cost_usd:.6f}'}</td>"
            "</tr>"
        )
    agents = ", ".join(f"{k} -> {v}" for k, v in data.agents.items()) or "as in the dataset"
    thresholds = json.dumps(data.thresholds, sort_keys=True)
    breaches = "".join(f"<li>{_e(b)}</li>" for b in data.breaches)
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in data.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{_e(data.title)}: {_e(data.dataset)} {_e(data.task_id)}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
.stats{{display:flex;flex-wrap:wrap;gap:8px}}
.stat{{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:90px}}
.stat b{{display:block;font-size:16px}}
.charts{{display:flex;flex-wrap:wrap;gap:24px}}
.ok{{color:{_GREEN}}} .bad{{color:{_RED}}} .warn{{color:{_AMBER}}}
.ax,.tk{{font-size:11px;fill:#444}}
table{{border-collapse:collapse;width:100%;margin-top:8px}}
td,th{{border-bottom:1px solid #eee;padding:4px 6px;vertical-align:top;text-align:left}}
pre{{margin:0;white-space:pre-wrap;word-break:break-word;max-width:320px}}
td span{{display:inline-block;margin:0 6px 2px 0}} .why{{color:#666;font-size:12px}}
.none,.note{{color:#777}}
</style></head><body>
<h1>{_e(data.title)}: {_e(data.dataset)}</h1>
<p>Evaluation <code>{_e(data.task_id)}</code>{f" ({_e(data.label)})" if data.label else ""},
started {_e(data.started_at)}, {_ms(data.duration_ms)}; agents: {_e(agents)}.
<b class="{verdict_class}">{_e(verdict)}</b></p>
{notes}
<p>Thresholds: <code>{_e(thresholds)}</code></p>
{f"<ul class='bad'>{breaches}</ul>" if breaches else ""}
<div class="stats">{"".join(f'<div class="stat">{_e(k)}<b>{_e(v)}</b></div>' for k, v in stats)}</div>
<h2>Charts</h2>
<div class="charts">
<figure><figcaption>Score distribution (case score: mean score, else share of assertions held)</figcaption>
{_histogram(scores, 10, 0.0, 1.0, "case score", "", _GREEN)}</figure>
<figure><figcaption>Latency histogram</figcaption>
{_histogram(latencies, 12, 0.0, hi * 1.0001 if hi > 0 else 1.0, "run duration", "ms", _BLUE)}</figure>
<figure><figcaption>Cost per case</figcaption>{_cost_bars(results)}</figure>
<figure><figcaption>Pass/fail grid (green: held, red: did not, amber: evaluator failed, grey: n/a)</figcaption>
{_grid(results, s.evaluators)}</figure>
</div>
<h2>Cases</h2>
<table><thead><tr><th></th><th>case</th><th>agent</th><th>prompt</th><th>output</th><th>expected</th>
<th>evaluators</th><th>latency</th><th>cost</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


def report_of_view(view: EvaluationView) -> ReportData:
    return ReportData(
        task_id=view.task_id,
        dataset=view.dataset,
        label=view.label,
        agents=view.agents,
        started_at=view.started_at.isoformat(timespec="seconds"),
        duration_ms=view.duration_ms,
        status=view.status,
        thresholds=view.thresholds,
        breaches=view.breaches,
        thresholds_met=view.thresholds_met,
        summary=view.summary
        if view.status == "finished"
        else summarise(view.results or [], view.cases),
        results=list(view.results or []),
    )


def evaluation_report_html(views: ViewStore, evaluation_id: str) -> str | None:
    """The HTML report of an evaluation (by id or task id) from the evaluations view, or
    None when it has none. Blocking (it reads the view store)."""
    with views.read() as cursor:
        view = get_evaluation(cursor, evaluation_id=evaluation_id, sealer=views.sealer)
        if view is None:
            view = get_evaluation(cursor, task_id=evaluation_id, sealer=views.sealer)
    return None if view is None else render_report(report_of_view(view))

"""Trends: attaching stored history to a result, sparklines, and the digest's trend columns."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from framework.digest import render_blocks, render_text
from framework.trend import attach_trends, sparkline
from tests.unit.test_digest import make_report


def test_sparkline_scales_between_min_and_max() -> None:
    # 0.2 is the minimum (▁), 0.6 the maximum (█); 0.4 sits half-way: round(0.5 * 7) = 4 -> "▅"
    assert sparkline([0.2, 0.4, 0.6]) == "▁▅█"
    assert sparkline([0.5, 0.5]) == "▅▅"  # flat: the middle bar
    assert sparkline([None, 0.1, None, 0.3]) == " ▁ █"
    assert sparkline([None]) == " "


def _history(report, days: int, start: date, value) -> dict:
    keys = [s.key for s in report.result.steps if s.tracked]
    return {k: [(start + timedelta(days=i), value(i)) for i in range(days)] for k in keys}


def test_attach_trends_orders_caps_and_ends_with_this_run() -> None:
    report = make_report()
    as_of = date.fromisoformat(report.result.as_of)
    # 40 earlier runs (conversion 0.01 * i), plus two at/after as_of that must be ignored
    history = _history(report, 40, as_of - timedelta(days=40), lambda i: 0.01 * i)
    for points in history.values():
        points += [(as_of, 0.99), (as_of + timedelta(days=1), 0.98)]
    result = attach_trends(report.result, history)
    step = next(s for s in result.steps if s.key == "workspace_created")
    assert len(step.trend) == 28
    assert step.trend[-1].as_of == report.result.as_of and step.trend[-1].conversion == step.conversion
    # the 27 earlier points are the newest 27 of the 40: i = 13..39
    assert [p.conversion for p in step.trend[:-1]] == [0.01 * i for i in range(13, 40)]
    assert step.conversion_7_runs_ago == 0.01 * 33  # 7 runs before this one: i = 39 - 6
    assert step.conversion_28_runs_ago == 0.01 * 12  # 28 runs before: i = 39 - 27, outside the sparkline
    short = attach_trends(report.result, _history(report, 5, as_of - timedelta(days=5), lambda i: 0.1))
    s2 = next(s for s in short.steps if s.key == "workspace_created")
    assert s2.conversion_7_runs_ago is None and s2.conversion_28_runs_ago is None and len(s2.trend) == 6
    untracked = [s for s in result.steps if not s.tracked]
    assert all(s.trend == () for s in untracked)


def test_digest_shows_trend_columns_only_with_history() -> None:
    report = make_report()
    assert "Trend" not in render_text(report)
    as_of = date.fromisoformat(report.result.as_of)
    history = _history(report, 10, as_of - timedelta(days=10), lambda i: 0.5 + 0.01 * i)
    with_trend = replace(report, result=attach_trends(report.result, history))
    text = render_text(with_trend)
    assert "7 runs ago" in text and "28 runs ago" in text and "Trend" in text
    row = next(line for line in text.splitlines() if line.startswith("  2 Create a workspace"))
    # 7 runs ago of 11 points: index 3 of the history -> 0.53 -> "53.0%"; 28 runs ago: absent -> "—"
    assert "53.0%" in row and "—" in row
    table = next(b for b in render_blocks(with_trend) if "```" in b.get("text", {}).get("text", ""))
    assert "▁" in table["text"]["text"] or "█" in table["text"]["text"]
    assert report.to_dict()["steps"][1]["trend"] == []
    assert with_trend.to_dict()["steps"][1]["trend"][-1]["as_of"] == report.result.as_of

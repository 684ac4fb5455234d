"""Trends from the metric store's history (pure): attach them to a result, draw sparklines."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from framework.report import FunnelResult, TrendPoint

TREND_RUNS = 28
RUNS_AGO_NEEDED = 28  # earlier runs to read from the store: enough for "28 runs ago"
BARS = "▁▂▃▄▅▆▇█"


def attach_trends(
    result: FunnelResult, history: dict[str, list[tuple[date, float | None]]], runs: int = TREND_RUNS
) -> FunnelResult:
    """Give every tracked step its last ``runs`` conversions (oldest first, this run last) and
    its conversion 7 and 28 stored runs before this one, when present.

    ``history`` holds earlier stored runs per step key, at least ``RUNS_AGO_NEEDED`` of
    them for the 28-runs-ago value; any as_of at or after this run's is ignored, so a
    re-run of a date replaces its own point.
    """
    steps = []
    for s in result.steps:
        if not s.tracked:
            steps.append(s)
            continue
        earlier = [(d, c) for d, c in history.get(s.key, []) if d.isoformat() < result.as_of]
        points = [TrendPoint(d.isoformat(), c) for d, c in sorted(earlier)]
        points.append(TrendPoint(result.as_of, s.conversion))
        steps.append(replace(
            s,
            trend=tuple(points[-runs:]),
            conversion_7_runs_ago=_runs_ago(points, 7),
            conversion_28_runs_ago=_runs_ago(points, 28),
        ))
    return replace(result, steps=steps)


def _runs_ago(points: list[TrendPoint], n: int) -> float | None:
    return points[-1 - n].conversion if len(points) > n else None


def sparkline(values: list[float | None]) -> str:
    """One character per value, scaled between the smallest and largest; a gap for None."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif span == 0:
            out.append(BARS[len(BARS) // 2])
        else:
            out.append(BARS[min(len(BARS) - 1, int((v - low) / span * (len(BARS) - 1) + 0.5))])
    return "".join(out)

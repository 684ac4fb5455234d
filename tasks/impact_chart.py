"""The impact chart: the step's conversion by cohort, with the change date marked. One PNG.

Deterministic, like the funnel chart (``tasks/chart.py``): matplotlib's default style
whatever the machine's matplotlibrc says, fixed size and dpi, no timestamp or software
version in the PNG metadata, so the same result always gives the same bytes.

Reading the chart: one point per cohort at the middle of its signup period, with its 95%
Wilson interval; before-cohorts blue, after-cohorts orange, the cohort straddling the
change date (excluded) and after-cohorts not mature yet as hollow grey points; a
horizontal line over each side at its pooled conversion; a dashed red vertical line at the
change date.

matplotlib is imported inside :func:`render_impact_chart` (Agg canvas, no pyplot).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from datetime import date
from pathlib import Path

from framework.digest import fmt_pct, truncate
from framework.impact import VERDICT_WORDS, ImpactResult, fmt_pp, wilson_interval
from tasks.chart import COLOUR_MUTED, COLOUR_TEXT, save_png

__all__ = ["render_impact_chart"]

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 5.2, 100
COLOUR_BEFORE = "#4C78A8"
COLOUR_AFTER = "#F58518"
COLOUR_OTHER = "#9D9D9D"
COLOUR_CHANGE = "#E45756"


def _mid(start: str, end: str) -> float:
    a, b = date.fromisoformat(start).toordinal(), date.fromisoformat(end).toordinal()
    return (a + b) / 2


def _point(ax, x: float, entered: int, reached: int, colour: str, hollow: bool) -> list[float]:
    """One cohort's conversion with its 95% Wilson interval; the drawn extent, in percent."""
    if entered <= 0 or reached > entered:
        return []
    p = reached / entered
    low, high = wilson_interval(reached, entered)
    ax.errorbar([x], [100 * p], yerr=[[100 * (p - low)], [100 * (high - p)]], fmt="o", color=colour,
                markerfacecolor="white" if hollow else colour, markersize=7, capsize=3, linewidth=1.2)
    return [100 * low, 100 * high]


def render_impact_chart(result: ImpactResult, path: str | Path) -> Path:
    """Draw the result's conversion by cohort as a PNG at ``path`` (parents created)."""
    from matplotlib import rc_context, rcdefaults
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    r = result
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with rc_context(), warnings.catch_warnings():
        rcdefaults()
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing from", category=UserWarning)
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        text_kw = {"parse_math": False}

        ticks: list[tuple[float, str]] = []
        values: list[float] = []

        def draw(cohorts, colour: str, hollow: bool) -> None:
            for c in cohorts:
                x = _mid(c["start"], c["end"])
                ticks.append((x, c["cohort"]))
                values.extend(_point(ax, x, c["entered"], c["reached"], colour, hollow))

        draw([asdict(c) for c in r.before.cohorts], COLOUR_BEFORE, False)
        draw([asdict(c) for c in r.after.cohorts], COLOUR_AFTER, False)
        draw([asdict(c) for c in r.pending], COLOUR_OTHER, True)
        draw(r.excluded, COLOUR_OTHER, True)

        for side, colour in ((r.before, COLOUR_BEFORE), (r.after, COLOUR_AFTER)):
            if side.conversion is not None and side.cohorts and side.conversion <= 1:
                x0 = date.fromisoformat(side.cohorts[0].start).toordinal()
                x1 = date.fromisoformat(side.cohorts[-1].end).toordinal()
                ax.hlines(100 * side.conversion, x0, x1, colors=colour, linewidth=2, alpha=0.6)
                values.append(100 * side.conversion)

        change_x = date.fromisoformat(r.change_date).toordinal()
        ax.axvline(change_x, color=COLOUR_CHANGE, linestyle="--", linewidth=1.4)
        low, high = (min(values), max(values)) if values else (0.0, 100.0)
        pad = max(1.0, (high - low) * 0.12)
        ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
        ax.text(change_x, ax.get_ylim()[1], f" change {r.change_date}", color=COLOUR_CHANGE, fontsize=9,
                va="top", ha="left", **text_kw)

        ticks.sort()
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8.5, rotation=0)
        xs = [t for t, _ in ticks] + [change_x]
        ax.set_xlim(min(xs) - 20, max(xs) + 20)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=100))
        ax.set_ylabel(f"conversion: reached {r.step} / reached {r.previous_step}", fontsize=8.5,
                      color=COLOUR_MUTED, **text_kw)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#E6E6E6", linewidth=0.8)
        ax.set_axisbelow(True)

        title = truncate(f"{r.framework} — {r.step_name}: {VERDICT_WORDS[r.verdict]}", 95)
        if r.verdict == "too_early":
            sub = f"{len(r.after.cohorts)} of {r.cohorts_needed['after']} after-cohorts mature; ready on {r.ready_on}"
        else:
            sub = (f"before {fmt_pct(r.before.conversion)} → after {fmt_pct(r.after.conversion)}: "
                   f"{fmt_pp(r.absolute_lift)} (95% CI {fmt_pp(r.ci_low)} to {fmt_pp(r.ci_high)})")
        fig.text(0.01, 0.98, title, ha="left", va="top", fontsize=12.5, fontweight="bold",
                 color=COLOUR_TEXT, **text_kw)
        fig.text(0.01, 0.925, truncate(sub, 130), ha="left", va="top", fontsize=9.5, color=COLOUR_MUTED,
                 **text_kw)
        legend = [
            Line2D([], [], marker="o", color=COLOUR_BEFORE, linestyle="", label="before (mature)"),
            Line2D([], [], marker="o", color=COLOUR_AFTER, linestyle="", label="after (mature)"),
            Line2D([], [], marker="o", color=COLOUR_OTHER, markerfacecolor="white", linestyle="",
                   label="excluded / not mature"),
            Line2D([], [], color=COLOUR_CHANGE, linestyle="--", label="change date"),
        ]
        fig.legend(handles=legend, loc="lower left", ncols=4, fontsize=8.5, frameon=False,
                   bbox_to_anchor=(0.01, 0.0))
        fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.16)

        save_png(fig, target, DPI)
    return target

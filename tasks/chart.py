"""The funnel chart: one PNG per report, for the digest's Slack thread and the Prefect artifact.

Deterministic: a fixed style (matplotlib's defaults, not the user's matplotlibrc), fixed
width and dpi, a height that depends only on the number of steps, and no timestamp or
software version in the PNG metadata, so the same report always gives the same bytes.

Reading the chart: one row per framework step, in framework order, top to bottom. The bar
is the share of the current period's population that reached the step (overall
conversion); the label gives the step's own conversion and the count that reached it.
The report's lowest-converting steps are red with "lowest #n"; qualifying steps
(intentional cliffs) are grey and hatched with "(qualifying)"; untracked steps are a thin
dashed placeholder marked "untracked".

matplotlib is imported inside :func:`render_funnel_chart` (Agg canvas, no pyplot, no
global backend switch), so importing this module costs nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from framework.digest import fmt_count, fmt_pct, period_label, plural, truncate
from framework.report import Report, StepResult

__all__ = ["render_funnel_chart"]

WIDTH_IN = 11.0
ROW_IN = 0.42
FIXED_IN = 1.9  # title, subtitle, axis and legend
DPI = 100
MAX_ROWS = 60
NAME_WIDTH = 38
TITLE_WIDTH = 90
X_MAX = 100.0  # percent
X_ROOM = 150.0  # right-hand room for the labels of short bars

COLOUR_TRACKED = "#4C78A8"
COLOUR_LOWEST = "#E45756"
COLOUR_QUALIFYING = "#BAB0AC"
COLOUR_UNTRACKED = "#9D9D9D"
COLOUR_TEXT = "#222222"
COLOUR_MUTED = "#666666"


def _bar_percent(step: StepResult, population: int) -> float:
    """Overall conversion in percent, clamped to the axis; 0 when unknown."""
    value = step.overall_conversion
    if value is None and step.reached is not None and population > 0:
        value = step.reached / population
    if value is None or value != value:  # None or NaN
        return 0.0
    return max(0.0, min(X_MAX, value * 100))


def _label(step: StepResult, rank: int | None, qualifying: bool) -> str:
    conversion = "n/a" if step.conversion is None else fmt_pct(step.conversion)
    text = f"{conversion} conversion · {fmt_count(step.reached)} reached"
    if rank is not None:
        text += f" · lowest #{rank}"
    elif qualifying:
        text += " (qualifying)"
    return text


def render_funnel_chart(report: Report, path: str | Path) -> Path:
    """Draw the report's funnel as a PNG at ``path`` (parents created) and return the path."""
    from matplotlib import rc_context, rcdefaults
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    r = report.result
    steps = sorted(r.steps, key=lambda s: s.position)
    hidden = max(0, len(steps) - MAX_ROWS)
    steps = steps[:MAX_ROWS]
    ranks = {key: i for i, key in enumerate(r.lowest_converting, start=1)}
    qualifying = set(r.qualifying)
    population = r.current_period.entities or 0
    rows = max(1, len(steps) + (1 if hidden else 0))  # a last row says how many are not shown

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    with rc_context(), warnings.catch_warnings():
        rcdefaults()  # matplotlib's own style, whatever the machine's matplotlibrc says
        # Step names may hold characters the bundled font lacks: drawn as boxes, not warned.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing from", category=UserWarning)
        fig = Figure(figsize=(WIDTH_IN, FIXED_IN + ROW_IN * rows), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        text_kw = {"parse_math": False}  # a '$' in a step name is text, not mathtext

        labels: list[str] = []
        placed: list[tuple[Any, float, bool]] = []  # bar labels: (text, bar end, qualifying)
        for y, step in enumerate(steps):
            labels.append(f"{step.position}. {truncate(step.name, NAME_WIDTH)}")
            if not step.tracked:
                ax.barh(y, X_MAX, height=0.12, fill=False, edgecolor=COLOUR_UNTRACKED,
                        linestyle="--", linewidth=1.0)
                ax.text(1.0, y - 0.18, "untracked", va="bottom", ha="left", fontsize=8.5,
                        color=COLOUR_MUTED, style="italic", **text_kw)
                continue
            rank = ranks.get(step.key)
            is_qualifying = step.qualifying or step.key in qualifying
            width = _bar_percent(step, population)
            if rank is not None:
                ax.barh(y, width, height=0.66, color=COLOUR_LOWEST)
            elif is_qualifying:
                ax.barh(y, width, height=0.66, color=COLOUR_QUALIFYING, hatch="///",
                        edgecolor="white", linewidth=0)
            else:
                ax.barh(y, width, height=0.66, color=COLOUR_TRACKED)
            label = ax.text(width + 1.0, y, _label(step, rank, is_qualifying), va="center",
                            ha="left", fontsize=9,
                            color=COLOUR_LOWEST if rank is not None else COLOUR_TEXT,
                            fontweight="bold" if rank is not None else "normal", **text_kw)
            placed.append((label, width, rank is None and is_qualifying))
        ax.set_yticks(range(len(steps)), labels, fontsize=9, **text_kw)
        ax.set_ylim(rows - 0.5, -0.5)  # step 1 on top
        ax.set_xlim(0, X_ROOM)
        ticks = [0, 25, 50, 75, 100]
        ax.set_xticks(ticks, [f"{t}%" for t in ticks], fontsize=8.5)
        ax.spines[["top", "right"]].set_visible(False)
        ax.spines["bottom"].set_bounds(0, X_MAX)
        ax.grid(axis="x", color="#E6E6E6", linewidth=0.8)
        ax.set_axisbelow(True)
        entity_plural = plural(r.entity, 2)
        ax.set_xlabel(f"share of the period's {entity_plural} reaching the step "
                      "(label: the step's own conversion · reached)", fontsize=8.5,
                      color=COLOUR_MUTED, loc="left")
        if not steps:
            ax.text(1.0, 0, "no steps in this framework", va="center", fontsize=9,
                    color=COLOUR_MUTED, **text_kw)
        if hidden:
            ax.text(1.0, len(steps), f"… and {hidden} more {plural('step', hidden)} not shown",
                    va="center", fontsize=9, color=COLOUR_MUTED, style="italic", **text_kw)

        cur = r.current_period
        title = truncate(f"{report.framework} — funnel for {r.as_of}", TITLE_WIDTH)
        subtitle = truncate(
            f"Current period: signups {period_label(cur)} · "
            f"{fmt_count(cur.entities)} {plural(r.entity, cur.entities or 0)} · mode {r.mode}",
            TITLE_WIDTH + 30,
        )
        height = fig.get_figheight()
        fig.text(0.01, 1 - 0.22 / height, title, ha="left", va="top", fontsize=13,
                 fontweight="bold", color=COLOUR_TEXT, **text_kw)
        fig.text(0.01, 1 - 0.52 / height, subtitle, ha="left", va="top", fontsize=9.5,
                 color=COLOUR_MUTED, **text_kw)
        legend = [
            Patch(facecolor=COLOUR_LOWEST, label="lowest converting"),
            Patch(facecolor=COLOUR_QUALIFYING, hatch="///", edgecolor="white",
                  label="qualifying (intentional cliff)"),
            Patch(facecolor=COLOUR_TRACKED, label="other tracked step"),
            Patch(fill=False, edgecolor=COLOUR_UNTRACKED, linestyle="--", label="untracked"),
        ]
        fig.legend(handles=legend, loc="lower left", ncols=4, fontsize=8.5, frameon=False,
                   bbox_to_anchor=(0.01, 0.0))
        fig.subplots_adjust(left=0.3, right=0.98, top=1 - 0.85 / height,
                            bottom=0.85 / height)

        _fit_labels(fig, ax, placed)

        save_png(fig, target, DPI)
    return target


def save_png(fig: Any, target: Path, dpi: int) -> None:
    """Write ``fig`` to ``target`` atomically (a temporary file, then a rename). No "Software"
    (matplotlib version) and no time in the metadata: the same figure gives the same bytes."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)



def _fit_labels(fig: Any, ax: Any, placed: list[tuple[Any, float, bool]]) -> None:
    """Move a bar's label inside the bar, at its end, when it would run past the plot.

    Measured with the Agg renderer after the layout is final, so the choice is exact
    and deterministic."""
    renderer = fig.canvas.get_renderer()
    right = ax.get_window_extent(renderer).x1
    for text, width, qualifying in placed:
        if text.get_window_extent(renderer).x1 <= right:
            continue
        text.set_x(width - 1.0)
        text.set_horizontalalignment("right")
        text.set_color(COLOUR_TEXT if qualifying else "white")

"""Impact analysis: did a change shipped on a date move a step's conversion? (pure)

Method (the docs: ``docs/impact.md``):

* **Cohorts.** Entities are grouped by the calendar period of their creation, as the
  framework file's ``funnel.cohort`` says (month, or ISO week). A cohort that *starts* on
  or after the change date is an *after* cohort; one that *ends* on or before it is a
  *before* cohort; the one cohort whose period holds the change date past its first day
  *straddles* it and is left out (its entities saw both versions). Only *mature* cohorts
  count (``period_end + window_days <= as_of_end``: everyone had the full window).
  ``before_cohorts`` / ``after_cohorts`` pick the mature cohorts nearest the change on
  each side; fewer mature after-cohorts than asked is the verdict ``too_early``.
* **Counts** (:func:`cohort_rows`) are the metric engine's cohort table for the measured
  step, with one difference: ``entered`` = entities of the cohort that reached the previous
  tracked step within the window (``metrics.md``'s ``entered``), ``reached`` = those of them
  that also reached the step: a *conditional* conversion, so that ``reached`` is a subset of
  ``entered`` and the proportion a true binomial one. In modes ``any_order`` and ``ordered``
  that is ``metrics.md``'s ``reached`` already; in ``independent`` mode the entities that
  reached the step without the previous one (journeys that skip it) are left out, where the
  digest's cohort table counts them. Pooled = summed over the side's cohorts.
* **Statistics** (after minus before): the absolute lift ``p_a - p_b``, the relative lift
  ``(p_a - p_b) / p_b``; a 95% confidence interval for ``p_a - p_b`` by Newcombe's hybrid
  score method (his method 10: Wilson score intervals of each proportion, combined; it
  keeps its coverage near 95% for small counts and proportions near 0 or 1, where the
  Wald interval does not); the two-sided p-value of the pooled two-proportion z-test (the
  same test the digest uses, ``framework.stats.two_proportion_p_value``).
* **Verdict** at ``ALPHA = 0.05``: ``improved`` when ``p < 0.05`` and the interval lies
  above 0; ``worse`` when ``p < 0.05`` and it lies below 0; otherwise ``no_change`` ("no
  detectable change"). The two criteria agree except in rare borderline cases; requiring
  both never claims a change that either one doubts.
* **Segments** (optional, one attribute): the same comparison per attribute value, for the
  values with at least ``min_sample`` entered on each side; with ``m`` such values the
  Bonferroni correction is applied: each p-value is multiplied by ``m`` (capped at 1) and
  each interval is at confidence ``1 - 0.05/m``, so the family of ``m`` verdicts has at most
  a 5% chance of one false "improved"/"worse".

Everything here is a pure function of its inputs: no clock (callers pass ``today``), no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from statistics import NormalDist
from typing import Any, Literal

import pandas as pd

from framework.config import FrameworkConfig, StepConfig
from framework.digest import (
    MAX_HEADER_CHARS,
    MAX_TEXT_CHARS,
    escape_markdown_cell,
    escape_mrkdwn,
    fmt_count,
    fmt_pct,
    plural,
    truncate,
)
from framework.engine import _cohort_table, _period_bounds, as_of_end, build_matrix, reached_matrix
from framework.errors import UsageError
from framework.report import CohortRow, Delivery, _round
from framework.stats import ratio, two_proportion_p_value

__all__ = [
    "ALPHA",
    "CI_METHOD",
    "CONFIDENCE",
    "CORRECTION",
    "MAX_COHORTS",
    "TEST",
    "Cohort",
    "Comparison",
    "ImpactResult",
    "Selection",
    "analyze",
    "check_request",
    "cohort_rows",
    "compare",
    "impact_config",
    "newcombe_interval",
    "render_markdown",
    "render_slack_blocks",
    "render_slack_text",
    "render_text",
    "select_cohorts",
    "verdict_of",
    "wilson_interval",
]

Verdict = Literal["improved", "no_change", "worse", "too_early"]

ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
MAX_COHORTS = 24
CI_METHOD = "newcombe"
CI_METHOD_TEXT = "Newcombe hybrid score interval (method 10: Wilson score intervals combined)"
TEST = "two-sided pooled two-proportion z-test"
CORRECTION = "bonferroni"
VERDICT_WORDS = {
    "improved": "improved",
    "no_change": "no detectable change",
    "worse": "worse",
    "too_early": "too early",
}


# --------------------------------------------------------------------------- cohorts


@dataclass(frozen=True)
class Cohort:
    """One calendar cohort period: ``start`` inclusive, ``end`` exclusive (UTC days)."""

    index: int
    label: str
    start: date
    end: date

    def mature(self, window_days: int, as_of: date) -> bool:
        """Everyone in it had the full window by the end of ``as_of`` (metrics.md)."""
        return self.end + timedelta(days=window_days) <= as_of + timedelta(days=1)

    def matures_on(self, window_days: int) -> date:
        """The first as_of for which the cohort is mature."""
        return self.end + timedelta(days=window_days - 1)


def period_index(day: date, kind: str) -> int:
    """The engine's cohort index of the period holding ``day``: months or ISO weeks since 1970."""
    if kind == "month":
        return (day.year - 1970) * 12 + day.month - 1
    return (day - date(1970, 1, 5)).days // 7


def cohort(index: int, kind: str) -> Cohort:
    start, end, label = _period_bounds(index, kind)
    return Cohort(index, label, start, end)


@dataclass(frozen=True)
class Selection:
    """The cohorts compared, oldest first on each side."""

    kind: str
    window_days: int
    change_date: date
    as_of: date
    before: tuple[Cohort, ...]
    after: tuple[Cohort, ...]  # the mature after-cohorts (fewer than needed: too early)
    pending: tuple[Cohort, ...]  # the needed after-cohorts that are not mature yet
    straddling: Cohort | None
    skipped_before: tuple[Cohort, ...]  # immature cohorts just before the change, passed over
    before_needed: int
    after_needed: int

    @property
    def too_early(self) -> bool:
        return len(self.after) < self.after_needed

    @property
    def ready_on(self) -> date:
        """The first as_of for which the needed after-cohorts are all mature."""
        last = self.pending[-1] if self.pending else self.after[-1]
        return last.matures_on(self.window_days)

    @property
    def history_cohorts(self) -> int:
        """How many cohort periods, up to the one holding as_of, the engine's table must span."""
        chosen = [*self.before, *self.skipped_before, *self.after, *self.pending]
        if self.straddling is not None:
            chosen.append(self.straddling)
        first = min(c.index for c in chosen)
        return period_index(self.as_of, self.kind) - first + 1


def select_cohorts(
    kind: str, window_days: int, change_date: date, as_of: date, before: int, after: int
) -> Selection:
    """The ``before`` mature cohorts ending on or before the change date and the ``after``
    cohorts starting on or after it, each side nearest the change; the cohort straddling
    the date (if it does not start on it) is excluded."""
    here = cohort(period_index(change_date, kind), kind)
    straddling = here if here.start < change_date else None
    first_after = here.index + (1 if straddling else 0)
    last_before = here.index - 1
    # the latest mature cohort: the one just before the period holding as_of_end - window
    mature_limit = period_index(as_of + timedelta(days=1 - window_days), kind) - 1
    top = min(last_before, mature_limit)
    before_c = tuple(cohort(i, kind) for i in range(top - before + 1, top + 1))
    skipped = tuple(cohort(i, kind) for i in range(top + 1, last_before + 1))
    wanted = [cohort(i, kind) for i in range(first_after, first_after + after)]
    after_c = tuple(c for c in wanted if c.index <= mature_limit)
    pending = tuple(c for c in wanted if c.index > mature_limit)
    return Selection(kind, window_days, change_date, as_of, before_c, after_c, pending, straddling,
                     skipped, before, after)


# --------------------------------------------------------------------------- the request


def _tracked_position(cfg: FrameworkConfig, key: str) -> int:
    return [s.key for s in cfg.tracked_steps].index(key)


def check_request(
    cfg: FrameworkConfig,
    step: str,
    change_date: date,
    as_of: date,
    segment: str | None = None,
    before_cohorts: int = 3,
    after_cohorts: int = 3,
    today: date | None = None,
) -> Selection:
    """The guards that need no data; raises UsageError (exit 2) with a clear message.

    ``today`` (UTC; the caller's clock, this module has none): an ``as_of`` on or after it is
    refused (that day's data is not complete yet), and so is a change date after
    ``min(as_of, today)``."""
    if today is not None and as_of >= today:
        raise UsageError(
            f"impact: as_of {as_of} is not a past day (today is {today}, UTC): its data is not "
            f"complete yet; the latest as_of is yesterday, {today - timedelta(days=1)}"
        )
    keys = [s.key for s in cfg.steps]
    if step not in keys:
        raise UsageError(f"impact: unknown step '{step}' (steps: {', '.join(keys)})")
    config = cfg.step(step)
    if not config.tracked:
        raise UsageError(
            f"impact: step '{step}' is untracked (no source, so no numbers to compare; "
            f"its proposed metric: {config.proposed_metric or 'none'})"
        )
    if _tracked_position(cfg, step) == 0:
        raise UsageError(
            f"impact: step '{step}' is the {cfg.entity.name}'s creation: its conversion is 100% by "
            "definition; pick a later step"
        )
    if segment is not None and segment not in cfg.entity.attributes:
        known = ", ".join(cfg.entity.attributes) or "none configured"
        raise UsageError(f"impact: unknown segment attribute '{segment}' (attributes: {known})")
    for name, n in (("before_cohorts", before_cohorts), ("after_cohorts", after_cohorts)):
        if not 1 <= n <= MAX_COHORTS:
            raise UsageError(f"impact: {name} must be between 1 and {MAX_COHORTS}, got {n}")
    if today is not None and change_date > today:
        raise UsageError(
            f"impact: the change date {change_date} is in the future (today is {today}, UTC): "
            "there is nothing to measure yet"
        )
    if change_date > as_of:
        raise UsageError(
            f"impact: the change date {change_date} is after as_of {as_of}: it is in the future "
            "of the data, so there is nothing to measure yet"
        )
    return select_cohorts(cfg.funnel.cohort, cfg.funnel.window_days, change_date, as_of,
                          before_cohorts, after_cohorts)


def impact_config(cfg: FrameworkConfig, step: str, selection: Selection) -> FrameworkConfig:
    """The framework as the impact analysis computes it: the steps up to ``step`` (later
    steps change no number of it, in any mode) and a cohort table long enough to hold
    every selected cohort."""
    last = [s.key for s in cfg.steps].index(step)
    funnel = cfg.funnel.model_copy(update={"history_cohorts": max(1, selection.history_cohorts)})
    return cfg.model_copy(update={"steps": cfg.steps[: last + 1], "funnel": funnel})


def cohort_rows(
    entities: pd.DataFrame, milestones: pd.DataFrame, cfg: FrameworkConfig, step: str, as_of: date
) -> list[CohortRow]:
    """The cohort table of ``step`` (overall and per attribute value) as the comparison counts
    it: ``entered`` as in ``metrics.md`` (reached the previous tracked step), ``reached`` = those
    of them that also reached ``step``, within the window, as the mode defines reaching.

    In ``any_order`` / ``ordered`` reaching a step implies reaching the one before, so these are
    the engine's own rows; in ``independent`` mode an entity that reached ``step`` without the
    previous step did not enter it and is not counted as reaching it either."""
    tracked = [s.key for s in cfg.tracked_steps]
    j = tracked.index(step)
    end = as_of_end(as_of)
    matrix = build_matrix(entities, milestones, cfg, end)
    reached = reached_matrix(matrix.T, cfg.funnel.window_days, cfg.funnel.mode)
    if j > 0:
        reached[:, j] &= reached[:, j - 1]  # a no-op unless the mode is independent
    rows, _best = _cohort_table(matrix, reached, cfg, as_of, end)
    return [r for r in rows if r.step == step]


# --------------------------------------------------------------------------- statistics


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson_interval(x: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for the proportion x/n (0 <= x <= n, n > 0)."""
    z = _z(confidence)
    z2 = z * z
    centre = (x + z2 / 2) / (n + z2)
    half = z * math.sqrt(x * (n - x) / n + z2 / 4) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2 = x1/n1 - x2/n2."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


@dataclass(frozen=True)
class Comparison:
    """After against before: lifts, the interval of the absolute lift and the p-value."""

    absolute_lift: float | None = None
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None


def _is_proportion(x: int, n: int) -> bool:
    return n > 0 and 0 <= x <= n


def compare(
    before_reached: int, before_entered: int, after_reached: int, after_entered: int,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """All fields None when a side has no entities or a 'conversion' above 100% (counts
    that are not a proportion), where a difference of proportions does not apply."""
    if not (_is_proportion(before_reached, before_entered) and _is_proportion(after_reached, after_entered)):
        return Comparison()
    pb, pa = before_reached / before_entered, after_reached / after_entered
    low, high = newcombe_interval(after_reached, after_entered, before_reached, before_entered, confidence)
    return Comparison(
        absolute_lift=pa - pb,
        relative_lift=None if pb == 0 else (pa - pb) / pb,
        ci_low=low,
        ci_high=high,
        p_value=two_proportion_p_value(after_reached, after_entered, before_reached, before_entered),
    )


def verdict_of(c: Comparison, alpha: float = ALPHA) -> Verdict:
    """improved / worse only when the test rejects (p < alpha) and the interval excludes 0
    on that side; no_change otherwise (including identical 0% or 100% sides: p undefined)."""
    if c.p_value is None or c.ci_low is None or c.ci_high is None or c.p_value >= alpha:
        return "no_change"
    if c.ci_low > 0:
        return "improved"
    if c.ci_high < 0:
        return "worse"
    return "no_change"


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class CohortStat:
    """One cohort of one side. On the after side, the lift fields compare it with the
    pooled before side (descriptive: uncorrected, 95%)."""

    cohort: str
    start: str
    end: str  # exclusive
    mature: bool
    matures_on: str
    entered: int
    reached: int
    conversion: float | None
    absolute_lift: float | None = None
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Side:
    """One side of the comparison, pooled over its cohorts (None when too early)."""

    cohorts: list[CohortStat]
    entered: int | None
    reached: int | None
    conversion: float | None


@dataclass(frozen=True)
class Counts:
    entered: int
    reached: int
    conversion: float | None


@dataclass(frozen=True)
class SegmentStat:
    """One attribute value: pooled counts per side and the corrected comparison."""

    value: str
    before: Counts
    after: Counts
    tested: bool
    absolute_lift: float | None = None
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    verdict: Verdict | None = None
    note: str | None = None


@dataclass(frozen=True)
class SegmentAnalysis:
    attribute: str
    correction: str
    tests: int  # m: the values compared
    confidence: float  # of each interval: 1 - ALPHA / m
    values: list[SegmentStat]


@dataclass(frozen=True)
class ImpactResult:
    framework: str
    step: str
    step_name: str
    previous_step: str
    qualifying: bool  # an intentional cliff: never ranked by the digest, measured here all the same
    change_date: str
    as_of: str
    entity: str
    cohort: str  # month | week
    window_days: int
    mode: str
    min_sample: int
    before: Side
    after: Side
    excluded: list[dict[str, Any]]  # cohort, start, end, reason, entered, reached, conversion
    pending: list[CohortStat]
    absolute_lift: float | None
    relative_lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: Verdict
    summary: str
    cohorts_needed: dict[str, int]
    ready_on: str | None
    segment: SegmentAnalysis | None = None
    confidence: float = CONFIDENCE
    alpha: float = ALPHA
    ci_method: str = CI_METHOD
    test: str = TEST
    delivery: Delivery | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["delivery"] = asdict(self.delivery) if self.delivery else None
        return _round(out, P_VALUE_KEYS)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


P_VALUE_KEYS = frozenset({"p_value", "p_value_adjusted"})  # to 6 significant figures, not 6 decimals


def _counts_by(rows: Iterable[CohortRow], step: str, segment: str | None) -> dict[tuple[str | None, str], CohortRow]:
    return {(r.value, r.cohort): r for r in rows if r.step == step and r.segment == segment}


def _cohort_stat(c: Cohort, row: CohortRow | None, sel: Selection, base: Counts | None) -> CohortStat:
    entered, reached = (row.entered, row.reached) if row else (0, 0)
    lift = (
        compare(base.reached, base.entered, reached, entered)
        if base is not None and not sel.too_early
        else Comparison()
    )
    return CohortStat(
        cohort=c.label, start=c.start.isoformat(), end=c.end.isoformat(),
        mature=c.mature(sel.window_days, sel.as_of), matures_on=c.matures_on(sel.window_days).isoformat(),
        entered=entered, reached=reached, conversion=ratio(reached, entered), **asdict(lift),
    )


def _pool(table: dict[tuple[str | None, str], CohortRow], value: str | None, cohorts: Iterable[Cohort]) -> Counts:
    entered = reached = 0
    for c in cohorts:
        row = table.get((value, c.label))
        if row is not None:
            entered += row.entered
            reached += row.reached
    return Counts(entered, reached, ratio(reached, entered))


def _span(cohorts: tuple[Cohort, ...]) -> str:
    if not cohorts:
        return "(none)"
    return cohorts[0].label if len(cohorts) == 1 else f"{cohorts[0].label}..{cohorts[-1].label}"


def analyze(
    cfg: FrameworkConfig,
    step: str,
    selection: Selection,
    rows: Iterable[CohortRow],
    segment: str | None = None,
) -> ImpactResult:
    """The comparison from the engine's cohort rows (overall, and per value of ``segment``).

    ``rows`` are :func:`cohort_rows` (``reached`` within ``entered``). Raises UsageError
    (exit 2) when a side's pooled denominator is below ``min_sample``, and ValueError on rows
    whose ``reached`` exceeds ``entered`` (the engine's independent-mode table: not a
    proportion; :func:`cohort_rows` counts it within ``entered``)."""
    rows = list(rows)
    sel = selection
    config: StepConfig = cfg.step(step)
    tracked = [s.key for s in cfg.tracked_steps]
    previous = tracked[tracked.index(step) - 1]
    min_sample = cfg.funnel.min_sample
    overall = _counts_by(rows, step, None)

    before = _pool(overall, None, sel.before)
    if before.entered < min_sample:
        raise UsageError(
            f"impact: only {before.entered} {plural(cfg.entity.name, before.entered)} entered step '{step}' "
            f"in the before cohorts {_span(sel.before)} (at least min_sample = {min_sample} needed on each "
            "side): the data may not reach that far back, or the step is too rare; try more "
            "--before-cohorts or a busier step"
        )
    after = _pool(overall, None, sel.after)
    if not sel.too_early and after.entered < min_sample:
        raise UsageError(
            f"impact: only {after.entered} {plural(cfg.entity.name, after.entered)} entered step '{step}' "
            f"in the after cohorts {_span(sel.after)} (at least min_sample = {min_sample} needed on each "
            "side): try more --after-cohorts or a busier step"
        )
    for side, counts in (("before", before), ("after", after)):
        if counts.entered and counts.reached > counts.entered:
            raise ValueError(
                f"impact: step '{step}' has {counts.reached} reached of {counts.entered} entered on the "
                f"{side} side: the rows count journeys that skip '{previous}'; build them with "
                "framework.impact.cohort_rows (reached within entered)"
            )

    result_cmp = Comparison() if sel.too_early else compare(before.reached, before.entered, after.reached, after.entered)
    verdict: Verdict = "too_early" if sel.too_early else verdict_of(result_cmp)

    before_side = Side([_cohort_stat(c, overall.get((None, c.label)), sel, None) for c in sel.before],
                       before.entered, before.reached, before.conversion)
    after_side = Side(
        [_cohort_stat(c, overall.get((None, c.label)), sel, before) for c in sel.after],
        None if sel.too_early else after.entered,
        None if sel.too_early else after.reached,
        None if sel.too_early else after.conversion,
    )
    pending = [_cohort_stat(c, overall.get((None, c.label)), sel, None) for c in sel.pending]

    excluded: list[dict[str, Any]] = []
    if sel.straddling is not None:
        excluded.append(_excluded(
            sel.straddling, overall, f"straddles the change date {sel.change_date} (signups both before and after it)"
        ))
    for c in sel.skipped_before:
        excluded.append(_excluded(
            c, overall, f"before the change but not mature (matures on {c.matures_on(sel.window_days)})"
        ))

    seg = None
    if segment is not None:
        seg = _segments(cfg, step, sel, rows, segment)

    result = ImpactResult(
        framework=cfg.name, step=step, step_name=config.name, previous_step=previous,
        qualifying=config.qualifying,
        change_date=sel.change_date.isoformat(), as_of=sel.as_of.isoformat(), entity=cfg.entity.name,
        cohort=sel.kind, window_days=sel.window_days, mode=cfg.funnel.mode, min_sample=min_sample,
        before=before_side, after=after_side, excluded=excluded, pending=pending,
        **asdict(result_cmp), verdict=verdict, summary="",
        cohorts_needed={"before": sel.before_needed, "after": sel.after_needed},
        ready_on=sel.ready_on.isoformat() if sel.too_early else None,
        segment=seg, notes=_notes(sel, seg, config),
    )
    return _with_summary(result)


def _excluded(c: Cohort, table: dict[tuple[str | None, str], CohortRow], reason: str) -> dict[str, Any]:
    row = table.get((None, c.label))
    entered, reached = (row.entered, row.reached) if row else (0, 0)
    return {"cohort": c.label, "start": c.start.isoformat(), "end": c.end.isoformat(), "reason": reason,
            "entered": entered, "reached": reached, "conversion": ratio(reached, entered)}


def _segments(
    cfg: FrameworkConfig, step: str, sel: Selection, rows: list[CohortRow], attribute: str
) -> SegmentAnalysis:
    table = _counts_by(rows, step, attribute)
    values = sorted({v for v, _ in table if v is not None})
    min_sample = cfg.funnel.min_sample
    pooled = [(v, _pool(table, v, sel.before), _pool(table, v, sel.after)) for v in values]

    def testable(b: Counts, a: Counts) -> bool:
        return (b.entered >= min_sample and a.entered >= min_sample
                and _is_proportion(b.reached, b.entered) and _is_proportion(a.reached, a.entered))

    m = 0 if sel.too_early else sum(testable(b, a) for _, b, a in pooled)
    confidence = 1 - ALPHA / max(1, m)
    out: list[SegmentStat] = []
    for v, b, a in pooled:
        if sel.too_early:
            out.append(SegmentStat(v, b, a, False, note="too early"))
        elif not testable(b, a):
            out.append(SegmentStat(v, b, a, False, note=f"not compared: fewer than {min_sample} entered on a side"
                                   if min(b.entered, a.entered) < min_sample else "not compared: conversion above 100%"))
        else:
            c = compare(b.reached, b.entered, a.reached, a.entered, confidence)
            adjusted = None if c.p_value is None else min(1.0, c.p_value * m)
            out.append(SegmentStat(
                v, b, a, True, **asdict(c), p_value_adjusted=adjusted,
                verdict=verdict_of(Comparison(c.absolute_lift, c.relative_lift, c.ci_low, c.ci_high, adjusted)),
            ))
    return SegmentAnalysis(attribute, CORRECTION, m, confidence, out)


def _notes(sel: Selection, seg: SegmentAnalysis | None, step: StepConfig) -> list[str]:
    notes = []
    if step.qualifying:
        notes.append(
            f"'{step.name}' ({step.key}) is a qualifying step: an intentional cliff, which the digest "
            "lists apart and never ranks; whether a change moved it is measured like any step's."
        )
    if sel.straddling is not None:
        notes.append(
            f"Cohort {sel.straddling.label} is excluded: it straddles the change date "
            f"{sel.change_date} (its signups saw both versions)."
        )
    if sel.skipped_before:
        notes.append(
            f"{plural('Cohort', len(sel.skipped_before))} {', '.join(c.label for c in sel.skipped_before)} "
            "before the change "
            + ("is" if len(sel.skipped_before) == 1 else "are") + " not mature yet and "
            + ("is" if len(sel.skipped_before) == 1 else "are") + " passed over."
        )
    if sel.too_early:
        here = sel.pending[0]
        when = (f"cohort {here.label} matures on {here.matures_on(sel.window_days)}"
                + (f", and the last needed one on {sel.ready_on}" if len(sel.pending) > 1 else ""))
        notes.append(
            f"Too early: {len(sel.after)} after-change {plural('cohort', len(sel.after))} mature of "
            f"{sel.after_needed} needed; {when}. Not-mature cohorts are shown for information only "
            "(their members have not all had the full window)."
        )
    if seg is not None and seg.tests:
        notes.append(
            f"Segments by {seg.attribute}: {seg.tests} {plural('value', seg.tests)} compared, Bonferroni "
            f"correction (each p-value x {seg.tests}, capped at 1; each interval at "
            f"{seg.confidence:.2%} confidence)."
        )
    return notes


# --------------------------------------------------------------------------- words


def fmt_pp(value: float | None) -> str:
    """A difference of fractions as signed percentage points: 0.084 -> '+8.4 pp'."""
    if value is None:
        return "—"
    text = f"{value * 100:+.1f}"
    return ("0.0" if text in ("+0.0", "-0.0") else text) + " pp"


def fmt_rel(value: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value * 100:+.1f}"
    return ("0.0" if text in ("+0.0", "-0.0") else text) + "%"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "p undefined"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def fmt_ci(low: float | None, high: float | None, confidence: float = CONFIDENCE) -> str:
    if low is None or high is None:
        return "—"
    level = f"{confidence:.0%}" if round(confidence * 100, 6).is_integer() else f"{confidence:.2%}"
    return f"{level} CI {fmt_pp(low)} to {fmt_pp(high)}"


def _with_summary(r: ImpactResult) -> ImpactResult:
    from dataclasses import replace

    return replace(r, summary=summary_sentence(r))


def summary_sentence(r: ImpactResult) -> str:
    """The plain-language verdict, one sentence (two when too early)."""
    what = f"'{r.step_name}' ({r.step})"
    if r.verdict == "too_early":
        return (
            f"Too early: {len(r.after.cohorts)} {plural('cohort', len(r.after.cohorts))} mature of "
            f"{r.cohorts_needed['after']} needed after the change on {r.change_date}; "
            f"ask again on or after {r.ready_on}."
        )
    head = {"improved": "Improved", "worse": "Worse", "no_change": "No detectable change"}[r.verdict]
    numbers = (
        f"{what} converted {fmt_pct(r.after.conversion)} in the {len(r.after.cohorts)} "
        f"{plural('cohort', len(r.after.cohorts))} after the change on {r.change_date}, against "
        f"{fmt_pct(r.before.conversion)} in the {len(r.before.cohorts)} before: "
        f"{fmt_pp(r.absolute_lift)} ({fmt_rel(r.relative_lift)} relative; "
        f"{fmt_ci(r.ci_low, r.ci_high)}; {fmt_p(r.p_value)})"
    )
    if r.verdict == "no_change":
        return f"{head}: {numbers}. Effects inside the interval cannot be ruled out."
    return f"{head}: {numbers}."


def _cohort_lines(r: ImpactResult) -> list[tuple[str, CohortStat]]:
    return [("before", c) for c in r.before.cohorts] + [("after", c) for c in r.after.cohorts] + [
        ("not mature", c) for c in r.pending
    ]


def render_text(r: ImpactResult) -> str:
    """The terminal form: the verdict, the per-cohort table, the segments, the notes."""
    lines = [
        f"{r.framework} — impact on step '{r.step_name}' ({r.step}) of the change on {r.change_date}",
        f"as_of {r.as_of} · {r.cohort}ly cohorts · {r.window_days}-day window · mode {r.mode} · "
        f"conversion = reached {r.step} / reached {r.previous_step}",
        "",
        f"Verdict: {VERDICT_WORDS[r.verdict]}",
        r.summary,
        "",
        f"  {'side':<20} {'cohort':<10} {'entered':>9} {'reached':>9} {'conversion':>10} {'lift':>10}",
    ]
    for side, c in _cohort_lines(r):
        lines.append(
            f"  {side:<20} {c.cohort:<10} {fmt_count(c.entered):>9} {fmt_count(c.reached):>9} "
            f"{fmt_pct(c.conversion):>10} {fmt_pp(c.absolute_lift) if c.absolute_lift is not None else '':>10}"
        )
    for name, s in (("before, pooled", r.before), ("after, pooled", r.after)):
        lines.append(
            f"  {name:<20} {'':<10} {fmt_count(s.entered):>9} {fmt_count(s.reached):>9} "
            f"{fmt_pct(s.conversion):>10}"
        )
    if r.segment is not None:
        lines += ["", _segment_heading(r.segment)]
        for v in r.segment.values:
            lines.append(
                f"  {truncate(v.value, 18):<18} {fmt_pct(v.before.conversion):>7} -> {fmt_pct(v.after.conversion):>7}  "
                + (f"{fmt_pp(v.absolute_lift)}, {fmt_ci(v.ci_low, v.ci_high, r.segment.confidence)}, "
                   f"adjusted {fmt_p(v.p_value_adjusted)}: {VERDICT_WORDS[v.verdict] if v.verdict else '—'}"
                   if v.tested else (v.note or ""))
            )
    if r.notes:
        lines += ["", *[f"Note: {n}" for n in r.notes]]
    lines += ["", _method_line(r)]
    return "\n".join(lines)


def _segment_heading(s: SegmentAnalysis) -> str:
    return (
        f"By {s.attribute} ({s.tests} {plural('value', s.tests)} compared; Bonferroni: p x {s.tests}, "
        f"intervals at {s.confidence:.2%}):"
    )


def _method_line(r: ImpactResult) -> str:
    return (
        f"Method: mature cohorts only; {CI_METHOD_TEXT} for the difference; {TEST}; "
        f"verdict at alpha {r.alpha:g} (p < {r.alpha:g} and the interval excludes 0)."
    )


def render_markdown(r: ImpactResult, chart_url: str | None = None) -> str:
    """The Prefect markdown artifact: verdict, numbers, per-cohort table, segments, chart."""
    cell = escape_markdown_cell
    lines = [
        f"# Impact: {cell(r.step_name)} (`{r.step}`) — change on {r.change_date}",
        "",
        f"**Verdict: {VERDICT_WORDS[r.verdict]}.** {cell(r.summary)}",
        "",
        f"{cell(r.framework)} · as_of {r.as_of} · {r.cohort}ly cohorts · {r.window_days}-day window · "
        f"mode {r.mode} · conversion = reached `{r.step}` / reached `{r.previous_step}`",
        "",
        "| | entered | reached | conversion |",
        "|---|---:|---:|---:|",
        f"| before ({len(r.before.cohorts)} {plural('cohort', len(r.before.cohorts))}) | "
        f"{fmt_count(r.before.entered)} | {fmt_count(r.before.reached)} | {fmt_pct(r.before.conversion)} |",
        f"| after ({len(r.after.cohorts)} {plural('cohort', len(r.after.cohorts))}) | "
        f"{fmt_count(r.after.entered)} | {fmt_count(r.after.reached)} | {fmt_pct(r.after.conversion)} |",
        "",
        f"Absolute lift **{fmt_pp(r.absolute_lift)}** ({fmt_ci(r.ci_low, r.ci_high)}), relative lift "
        f"**{fmt_rel(r.relative_lift)}**, {fmt_p(r.p_value)}.",
        "",
        "## Per cohort",
        "",
        "| side | cohort | signups from | mature | entered | reached | conversion | lift vs before | 95% CI | p |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for side, c in _cohort_lines(r):
        lift = c.absolute_lift is not None
        lines.append(
            f"| {side} | {c.cohort} | {c.start} | {'yes' if c.mature else 'on ' + c.matures_on} | "
            f"{fmt_count(c.entered)} | {fmt_count(c.reached)} | {fmt_pct(c.conversion)} | "
            f"{fmt_pp(c.absolute_lift) if lift else ''} | "
            f"{fmt_pp(c.ci_low) + ' to ' + fmt_pp(c.ci_high) if lift else ''} | "
            f"{fmt_p(c.p_value) if lift else ''} |"
        )
    for e in r.excluded:
        lines.append(f"| excluded | {e['cohort']} | {e['start']} | | | | | | | |")
    lines += ["", "Per-cohort lifts compare each after-cohort with the pooled before side; they are "
              "descriptive (95%, uncorrected). The verdict is the pooled test."]
    if r.segment is not None:
        s = r.segment
        lines += [
            "", f"## By {cell(s.attribute)}", "",
            f"{s.tests} {plural('value', s.tests)} compared; Bonferroni correction: each p-value x {s.tests} "
            f"(capped at 1), each interval at {s.confidence:.2%} confidence.",
            "",
            "| value | before | after | lift | CI | p (adjusted) | verdict |",
            "|---|---:|---:|---:|---|---:|---|",
        ]
        for v in s.values:
            lines.append(
                f"| {cell(v.value)} | {fmt_pct(v.before.conversion)} ({fmt_count(v.before.entered)}) | "
                f"{fmt_pct(v.after.conversion)} ({fmt_count(v.after.entered)}) | "
                + (f"{fmt_pp(v.absolute_lift)} | {fmt_pp(v.ci_low)} to {fmt_pp(v.ci_high)} | "
                   f"{fmt_p(v.p_value_adjusted)} | {VERDICT_WORDS[v.verdict] if v.verdict else '—'} |"
                   if v.tested else f" | | | {cell(v.note or '')} |")
            )
    if r.notes:
        lines += ["", *[f"- {cell(n)}" for n in r.notes]]
    if chart_url:
        lines += ["", "## Conversion by cohort", "", f"![conversion by cohort]({chart_url})"]
    lines += ["", f"_{_method_line(r)}_"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Slack

_ICON = {"improved": ":chart_with_upwards_trend:", "worse": ":chart_with_downwards_trend:",
         "no_change": ":heavy_minus_sign:", "too_early": ":hourglass_flowing_sand:"}


def render_slack_text(r: ImpactResult) -> str:
    """The notification (fallback) text: the verdict sentence, escaped for mrkdwn."""
    return truncate(escape_mrkdwn(f"{r.framework}: {r.summary}"), MAX_TEXT_CHARS)


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_slack_blocks(r: ImpactResult, ui_url: str | None = None) -> list[dict[str, Any]]:
    """The Block Kit message (plain dicts): header, verdict, the numbers, per cohort, method."""
    esc = escape_mrkdwn
    header = truncate(f"Impact: {r.step_name} since {r.change_date}", MAX_HEADER_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"{_ICON[r.verdict]} *{VERDICT_WORDS[r.verdict].capitalize()}.* {esc(r.summary)}")}},
    ]
    if r.verdict != "too_early":
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Before* ({len(r.before.cohorts)} {plural('cohort', len(r.before.cohorts))})\n"
                                       f"{fmt_pct(r.before.conversion)} of {fmt_count(r.before.entered)}"},
            {"type": "mrkdwn", "text": f"*After* ({len(r.after.cohorts)} {plural('cohort', len(r.after.cohorts))})\n"
                                       f"{fmt_pct(r.after.conversion)} of {fmt_count(r.after.entered)}"},
            {"type": "mrkdwn", "text": f"*Lift*\n{fmt_pp(r.absolute_lift)} ({fmt_rel(r.relative_lift)})"},
            {"type": "mrkdwn", "text": f"*{r.confidence:.0%} CI · p*\n"
                                       f"{fmt_pp(r.ci_low)} to {fmt_pp(r.ci_high)} · {fmt_p(r.p_value)}"},
        ]})
    rows = [f"{side[:6]:<6} {c.cohort:<9} {fmt_pct(c.conversion):>6} of {fmt_count(c.entered):>7}"
            for side, c in _cohort_lines(r)]
    if rows:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            "*Per cohort*\n```\n" + "\n".join(esc(x) for x in rows) + "\n```")}})
    if r.segment is not None and r.segment.values:
        s = r.segment
        seg_rows = [
            f"{truncate(v.value, 14):<14} {fmt_pct(v.before.conversion):>6} -> {fmt_pct(v.after.conversion):>6} "
            + (f"{VERDICT_WORDS[v.verdict] if v.verdict else '—'}" if v.tested else "(small)")
            for v in s.values
        ]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*By {esc(s.attribute)}* (Bonferroni over {s.tests})\n```\n" + "\n".join(esc(x) for x in seg_rows)
            + "\n```")}})
    context = [esc(n) for n in r.notes] + [esc(_method_line(r))]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(t)} for t in context[:10]]})
    if ui_url and len(ui_url) <= 3000:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open the flow run", "emoji": True},
            "url": ui_url, "action_id": "open_flow_run",
        }]})
    return blocks

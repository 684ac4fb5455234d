"""The data-quality gate: real Great Expectations validations of the extracted frames.

``run_quality_checks`` builds one ExpectationSuite per frame from the framework
config (a team's own steps get checks without code), validates each as one
batch in one ephemeral GX context, and turns the expectation results into
``QualityCheck`` objects. Each expectation carries its id in ``meta["check"]``,
so results are matched by id, never by position (GX reorders them).

GX costs ~20 ms per expectation, whatever the frame size, so per-step checks
(orphan ratio, freshness, conversion above one, small sample) are not one
expectation per step with a row condition: each kind is one expectation over
the per-step frame, validated with the unexpected rows listed by step, and a
step's check fails when its row is listed (see ``CheckSpec``).

Frames validated (and their grain):

* entities: one row per extracted entity record (``entity_id``, ``created_at``).
* milestones: one row per (step, entity) (``step``, ``entity_id``, ``reached_at``).
* steps: one row per tracked step after the first, built from the config, so a
  step missing from ``stats`` still gets its checks (and fails freshness).
* metrics: one row per tracked step of ``result`` (when given).

Great Expectations is imported lazily (it costs ~5 s) and only here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from framework.config import FrameworkConfig, StepConfig
from framework.engine import as_of_end as _as_of_end
from framework.report import FunnelResult, QualityCheck
from framework.stats import wilson_lower_bound

# Must be set before great_expectations is first imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

Severity = Literal["error", "warn"]
Describe = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class CheckSpec:
    """One check: the expectation(s) that decide it and how to word its result.

    A frame-wide check (``step`` None) passes when all its expectations pass
    and is described from the first one's GX result. A per-step check shares
    its expectations with the same check of the other steps (one expectation
    per kind over the per-step frame): it fails when GX lists the step's row
    as unexpected in any of them, and is described from
    ``{"element_count": 1, "unexpected_count": 0 or 1}``.
    """

    name: str
    target: str
    severity: Severity
    expectations: tuple[str, ...]  # ids (meta["check"]) of the deciding expectations
    describe: Describe  # GX result dict -> observed text
    step: str | None = None


@dataclass
class Suite:
    """The expectations over one frame and the checks they decide."""

    name: str
    frame: pd.DataFrame
    expectations: list[Any] = field(default_factory=list)  # great_expectations Expectations
    checks: list[CheckSpec] = field(default_factory=list)
    per_step: bool = False  # one row per step: GX names unexpected rows by their step

    def expect(self, kind: str, expectation_id: str, **kwargs: Any) -> str:
        self.expectations.append(getattr(_gx().gxe, kind)(meta={"check": expectation_id}, **kwargs))
        return expectation_id

    def check(
        self,
        name: str,
        target: str,
        severity: Severity,
        expectations: str | tuple[str, ...],
        describe: Describe,
        step: str | None = None,
    ) -> None:
        ids = (expectations,) if isinstance(expectations, str) else expectations
        self.checks.append(CheckSpec(name, target, severity, ids, describe, step))


# --------------------------------------------------------------------------- GX


@cache
def _gx() -> SimpleNamespace:
    """Import Great Expectations once, quietly."""
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        # GX logs registry and docs-decorator chatter at INFO; keep warnings only.
        gx_logger.setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # This module pins its own logger to INFO on import and logs a temporary
    # docs-site directory at every get_context(mode="ephemeral").
    docs_logger = logging.getLogger("great_expectations.data_context.types.base")
    if docs_logger.level in (logging.NOTSET, logging.INFO):
        docs_logger.setLevel(logging.WARNING)
    return SimpleNamespace(gx=gx, gxe=gxe, ProgressBarsConfig=ProgressBarsConfig)


def _new_batch_definition() -> Any:
    """One ephemeral context with a pandas whole-dataframe batch definition."""
    g = _gx()
    ctx = g.gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = g.ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("growth_quality")
    asset = source.add_dataframe_asset("frames")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


# GX's cost is per expectation and grows with the metrics its result format asks
# for. Entities and milestones only need counts (BASIC: no unexpected index list
# or query); per-step frames need every unexpected row, named by its step.
_COUNTS: dict[str, Any] = {"result_format": "BASIC"}
_BY_STEP: dict[str, Any] = {"result_format": "COMPLETE", "unexpected_index_column_names": ["step"]}


def _validate(batch_definition: Any, suite: Suite) -> list[QualityCheck]:
    if not suite.checks:
        return []
    gx_suite = _gx().gx.ExpectationSuite(name=suite.name)
    for expectation in suite.expectations:
        gx_suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": suite.frame})
    outcome = batch.validate(gx_suite, result_format=_BY_STEP if suite.per_step else _COUNTS)
    by_id = {r.expectation_config.meta.get("check"): r for r in outcome.results}
    return [_check(spec, [by_id.get(i) for i in spec.expectations], suite.frame) for spec in suite.checks]


def _check(spec: CheckSpec, results: list[Any], frame: pd.DataFrame) -> QualityCheck:
    def done(success: bool, observed: str) -> QualityCheck:
        return QualityCheck(spec.name, spec.target, spec.severity, success, observed)

    if any(r is None for r in results):
        return done(False, "not evaluated by GX")
    for r in results:
        error = _gx_error(r.exception_info)
        if error is not None:
            return done(False, f"GX could not evaluate: {error}")
    if spec.step is None:
        return done(all(bool(r.success) for r in results), spec.describe(dict(results[0].result or {})))
    failed = False
    for r in results:
        steps = _unexpected_steps(dict(r.result or {}), frame)
        if steps is None:
            return done(False, "GX did not list the unexpected steps")
        failed = failed or spec.step in steps
    return done(not failed, spec.describe({"element_count": 1, "unexpected_count": int(failed)}))


def _unexpected_steps(r: dict[str, Any], frame: pd.DataFrame) -> list[str] | None:
    """The steps of the rows GX listed as unexpected, in frame order (None: not listed)."""
    if not _int(r.get("unexpected_count")):
        return []
    listed = r.get("unexpected_index_list")
    if listed is None:
        return None
    steps = set()
    for item in listed:
        if isinstance(item, dict):
            steps.add(item.get("step"))
        elif item in frame.index:
            steps.add(frame.at[item, "step"])
    return [s for s in frame["step"] if s in steps]


def _gx_error(info: Any) -> str | None:
    """The first exception message of a result's exception_info (flat or keyed by metric), else None."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return (info.get("exception_message") or "error") if info.get("raised_exception") else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception", True):
            message = str(value.get("exception_message") or "error")
            return message.splitlines()[0][:200]
    return None


# ------------------------------------------------------------------ formatting


def _int(value: Any) -> int:
    if value is None:
        return 0
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(f) else int(f)


def _n(value: Any) -> str:
    return f"{_int(value):,}"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _ts(value: Any) -> str:
    t = pd.Timestamp(value)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%MZ")


def _num(value: Any) -> str:
    """A rate or count for humans: 1.5, 0.75, 120."""
    if _is_missing(value):
        return "null"
    f = float(value)
    return f"{int(f):,}" if f == int(f) else f"{f:.4g}"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}".rstrip("0").rstrip(".") + "%"


def _counts(what: str) -> Describe:
    """'3 of 5,000 <what>' from a column map result (element_count includes nulls)."""
    return lambda r: f"{_n(r.get('unexpected_count'))} of {_n(r.get('element_count'))} {what}"


def _non_null_counts(what: str) -> Describe:
    """'1 of 4,999 <what>' over the non-null values of a column map result."""

    def describe(r: dict[str, Any]) -> str:
        total = _int(r.get("element_count")) - _int(r.get("missing_count"))
        return f"{_n(r.get('unexpected_count'))} of {total:,} {what}"

    return describe


# --------------------------------------------------------------------- frames


def _utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC (naive taken as UTC, unparseable -> NaT)."""
    s = values
    if not pd.api.types.is_datetime64_any_dtype(s):
        s = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    elif getattr(s.dt, "tz", None) is None:
        s = s.dt.tz_localize("UTC")
    else:
        s = s.dt.tz_convert("UTC")
    return s


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name].reset_index(drop=True)
    return pd.Series([None] * len(frame), dtype=object)


def entities_frame(entities: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"entity_id": _column(entities, "entity_id"), "created_at": _utc(_column(entities, "created_at"))}
    )


def milestones_frame(milestones: pd.DataFrame) -> pd.DataFrame:
    step = _column(milestones, "step")
    return pd.DataFrame(
        {
            "step": step.astype(object).where(step.notna(), None),
            "entity_id": _column(milestones, "entity_id"),
            "reached_at": _utc(_column(milestones, "reached_at")),
        }
    )


def step_stats_frame(stats: pd.DataFrame, cfg: FrameworkConfig) -> pd.DataFrame:
    """One row per tracked step after the first, in config order; steps absent from ``stats`` have no records."""
    rows = []
    by_step = {str(row["step"]): row for _, row in stats.iterrows()} if "step" in stats.columns else {}
    for step in _source_steps(cfg):
        row = by_step.get(step.key)
        records = _int(row.get("records")) if row is not None else 0
        orphans = _int(row.get("orphan_records")) if row is not None else 0
        newest = row.get("newest") if row is not None else None
        rows.append(
            {
                "step": step.key,
                "records": records,
                "orphan_records": orphans,
                "null_timestamps": _int(row.get("null_timestamps")) if row is not None else 0,
                "orphan_ratio": orphans / records if records else 0.0,
                "orphan_ratio_low": wilson_lower_bound(orphans, records),
                "newest": None if _is_missing(newest) else newest,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=["step", "records", "orphan_records", "null_timestamps", "orphan_ratio", "orphan_ratio_low", "newest"],
    )
    frame["orphan_ratio"] = frame["orphan_ratio"].astype("float64")
    frame["orphan_ratio_low"] = frame["orphan_ratio_low"].astype("float64")
    frame["newest"] = _utc(frame["newest"]) if len(frame) else pd.Series([], dtype="datetime64[us, UTC]")
    return frame


def metrics_frame(result: FunnelResult) -> pd.DataFrame:
    """One row per tracked step of the result; counts as float64 (GX pair checks fail on pd.NA)."""
    rows = [
        {
            "step": s.key,
            "name": s.name,
            "position": s.position,
            "entered": np.nan if s.entered is None else float(s.entered),
            "reached": np.nan if s.reached is None else float(s.reached),
            "conversion": np.nan if s.conversion is None else float(s.conversion),
        }
        for s in result.steps
        if s.tracked
    ]
    frame = pd.DataFrame(rows, columns=["step", "name", "position", "entered", "reached", "conversion"])
    return frame.astype({"entered": "float64", "reached": "float64", "conversion": "float64"})


def _source_steps(cfg: FrameworkConfig) -> list[StepConfig]:
    return [s for s in cfg.tracked_steps if not s.entity_created]


# --------------------------------------------------------------------- suites


def entity_suite(cfg: FrameworkConfig, end: datetime, frame: pd.DataFrame) -> Suite:
    table, id_col, created = cfg.entity.table, cfg.entity.id, cfg.entity.created_at
    suite = Suite("entities", frame)
    suite.check(
        "entities.id_not_null", f"{table}.{id_col}", "error",
        suite.expect("ExpectColumnValuesToNotBeNull", "entities.id_not_null", column="entity_id"),
        _counts("null"),
    )
    suite.check(
        "entities.id_unique", f"{table}.{id_col}", "error",
        suite.expect("ExpectColumnValuesToBeUnique", "entities.id_unique", column="entity_id"),
        _non_null_counts("rows share an id"),
    )
    suite.check(
        "entities.created_at_not_null", f"{table}.{created}", "error",
        suite.expect("ExpectColumnValuesToNotBeNull", "entities.created_at_not_null", column="created_at"),
        _counts("null or unparseable"),
    )
    suite.check(
        "entities.created_at_before_as_of_end", f"{table}.{created}", "error",
        suite.expect(
            "ExpectColumnValuesToBeBetween", "entities.created_at_before_as_of_end",
            column="created_at", max_value=end, strict_max=True,
        ),
        _non_null_counts(f"at or after as_of_end {_ts(end)}"),
    )
    return suite


def milestone_suite(end: datetime, frame: pd.DataFrame) -> Suite:
    target = "milestones"  # the steps' matched records, one row per (step, entity)
    suite = Suite("milestones", frame)
    suite.check(
        "milestones.entity_id_not_null", f"{target}.entity_id", "error",
        suite.expect("ExpectColumnValuesToNotBeNull", "milestones.entity_id_not_null", column="entity_id"),
        _counts("null"),
    )
    suite.check(
        "milestones.reached_at_not_null", f"{target}.reached_at", "error",
        suite.expect("ExpectColumnValuesToNotBeNull", "milestones.reached_at_not_null", column="reached_at"),
        _counts("null"),
    )
    suite.check(
        "milestones.reached_at_before_as_of_end", f"{target}.reached_at", "error",
        suite.expect(
            "ExpectColumnValuesToBeBetween", "milestones.reached_at_before_as_of_end",
            column="reached_at", max_value=end, strict_max=True,
        ),
        _non_null_counts(f"at or after as_of_end {_ts(end)}"),
    )
    suite.check(
        "milestones.step_entity_unique", f"{target}.(step, entity_id)", "error",
        suite.expect(
            "ExpectCompoundColumnsToBeUnique", "milestones.step_entity_unique",
            column_list=["step", "entity_id"], ignore_row_if="any_value_is_missing",
        ),
        _non_null_counts("rows repeat a (step, entity_id)"),
    )
    return suite


def step_suite(cfg: FrameworkConfig, end: datetime, frame: pd.DataFrame) -> Suite:
    """Per tracked step after the first: orphan ratio and freshness of its source.

    One expectation per kind over the per-step frame; each step's checks are
    decided by whether GX lists its row as unexpected.
    """
    max_ratio = cfg.quality.max_orphan_ratio
    hours = cfg.quality.freshness_hours
    suite = Suite("steps", frame, per_step=True)
    if frame.empty:
        return suite
    # The ratio is measured on the records a run read (an incremental run: its recent slice).
    # The gate fails when the data shows, with 99% confidence (Wilson lower bound), that the
    # ratio is above the limit: a quiet day's few records cannot trip it by chance.
    orphan_ratio = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.orphan_ratio", column="orphan_ratio_low", min_value=0,
        max_value=max_ratio,
    )
    # A step without records has no newest: stale, not vacuously fresh.
    has_newest = suite.expect("ExpectColumnValuesToNotBeNull", "steps.newest_not_null", column="newest")
    fresh = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.newest_fresh", column="newest", min_value=end - timedelta(hours=hours)
    )
    rows = {row["step"]: row for _, row in frame.iterrows()}
    for step in _source_steps(cfg):
        row = rows[step.key]
        if step.via is not None:
            id_path = f"{step.table}.{step.via.foreign_key} -> {step.via.table}.{step.via.entity_id}"
        else:
            id_path = f"{step.table}.{step.entity_id}"

        def orphans(r: dict[str, Any], row: Any = row) -> str:
            records = _int(row["records"])
            if not records:
                return f"no records: ratio 0, max {_pct(max_ratio)}"
            ratio = row["orphan_ratio"]
            ratio = 0.0 if _is_missing(ratio) else float(ratio)
            low = float(row["orphan_ratio_low"])
            return (
                f"{_n(row['orphan_records'])} of {records:,} records orphan ({_pct(ratio)}; "
                f"99% lower bound {_pct(low)}), max {_pct(max_ratio)}"
            )

        def freshness(r: dict[str, Any], row: Any = row) -> str:
            newest = row["newest"]
            if _is_missing(newest):
                return f"no records before as_of_end {_ts(end)} (limit {_num(hours)} h)"
            # newest may lie after as_of_end: the source holds later records (it is loaded).
            age = (pd.Timestamp(end) - pd.Timestamp(newest)) / pd.Timedelta(hours=1)
            if age < 0:
                return f"newest {_ts(newest)}, after as_of_end (limit {_num(hours)} h)"
            return f"newest {_ts(newest)}, {age:,.1f} h before as_of_end (limit {_num(hours)} h)"

        suite.check(f"steps.{step.key}.orphan_ratio", id_path, "error", orphan_ratio, orphans, step=step.key)
        suite.check(
            f"steps.{step.key}.freshness", f"{step.table}.{step.timestamp}", "error",
            (has_newest, fresh), freshness, step=step.key,
        )
    return suite


def metric_suite(cfg: FrameworkConfig, result: FunnelResult, frame: pd.DataFrame) -> Suite:
    """Sanity of the computed numbers (current period, overall)."""
    mode = result.mode
    entity = result.entity or cfg.entity.name
    min_sample = cfg.funnel.min_sample
    target = "current period, overall"
    suite = Suite("metrics", frame, per_step=True)

    def steps_listed(r: dict[str, Any], what: str, show: Callable[[Any], str] | None = None) -> str:
        total = len(frame)
        bad = _int(r.get("unexpected_count"))
        if not bad:
            return f"0 of {total:,} steps {what}"
        listed = _unexpected_steps(r, frame) or []
        rows = {row["step"]: row for _, row in frame.iterrows()}
        shown = ", ".join(f"{step} ({show(rows[step])})" if show else str(step) for step in listed)
        return f"{bad:,} of {total:,} steps {what}: {shown}"

    for col in ("entered", "reached"):
        suite.check(
            f"metrics.{col}_not_null", f"{target}: {col}", "error",
            suite.expect("ExpectColumnValuesToNotBeNull", f"metrics.{col}_not_null", column=col),
            lambda r: steps_listed(r, "null"),
        )
        suite.check(
            f"metrics.{col}_non_negative", f"{target}: {col}", "error",
            suite.expect("ExpectColumnValuesToBeBetween", f"metrics.{col}_non_negative", column=col, min_value=0),
            lambda r, col=col: steps_listed(r, "negative", lambda row: _num(row[col])),
        )
    if mode in ("any_order", "ordered"):
        suite.check(
            "metrics.entered_ge_reached", f"{target}: entered >= reached ({mode})", "error",
            suite.expect(
                "ExpectColumnPairValuesAToBeGreaterThanB", "metrics.entered_ge_reached",
                column_A="entered", column_B="reached", or_equal=True, ignore_row_if="either_value_is_missing",
            ),
            lambda r: steps_listed(
                r, "with reached > entered",
                lambda row: f"reached {_num(row['reached'])} > entered {_num(row['entered'])}",
            ),
        )
        suite.check(
            "metrics.conversion_in_range", f"{target}: conversion in [0, 1] ({mode})", "error",
            suite.expect(
                "ExpectColumnValuesToBeBetween", "metrics.conversion_in_range",
                column="conversion", min_value=0, max_value=1,
            ),
            lambda r: steps_listed(r, "outside [0, 1]", lambda row: _num(row["conversion"])),
        )
    rows = list(frame.itertuples(index=False))
    if len(rows) < 2:
        return suite
    # Per step after the first (the first step's row is validated too, but decides no check).
    above_one = (
        suite.expect("ExpectColumnValuesToBeBetween", "metrics.conversion_above_one", column="conversion", max_value=1)
        if mode == "independent"
        else None
    )
    small_sample = suite.expect(
        "ExpectColumnValuesToBeBetween", "metrics.small_sample", column="entered", min_value=min_sample
    )
    for prev, row in zip(rows, rows[1:], strict=False):
        key = row.step
        if above_one is not None:

            def skips(r: dict[str, Any], row: Any = row, prev: Any = prev) -> str:
                if _int(r.get("unexpected_count")):
                    return (
                        f"more {entity}s reached {row.name} ({_num(row.reached)}) than "
                        f"{prev.name} ({_num(row.entered)}): journeys skip {prev.name}"
                    )
                if _is_missing(row.conversion):
                    return f"conversion null (entered {_num(row.entered)})"
                return f"conversion {_num(row.conversion)} <= 1"

            suite.check(f"metrics.{key}.conversion_above_one", f"{key}.conversion", "warn", above_one, skips, step=key)

        def small(r: dict[str, Any], row: Any = row) -> str:
            sign = "<" if _int(r.get("unexpected_count")) else ">="
            return f"entered {_num(row.entered)} {sign} min_sample {min_sample:,}"

        suite.check(f"metrics.{key}.small_sample", f"{key}.entered", "warn", small_sample, small, step=key)
    return suite


# ------------------------------------------------------------------------ run


def run_quality_checks(
    entities: pd.DataFrame,
    milestones: pd.DataFrame,
    stats: pd.DataFrame,
    result: FunnelResult | None,
    cfg: FrameworkConfig,
    as_of: date,
) -> list[QualityCheck]:
    """Validate the extracted frames (and the metrics, when given) with Great Expectations.

    Returns one QualityCheck per check, in a stable order: entities,
    milestones, steps (config order), metrics. Severity "error" blocks
    publication; "warn" is reported only (see DataQuality.from_checks).
    """
    end = _as_of_end(as_of)
    suites = [
        entity_suite(cfg, end, entities_frame(entities)),
        milestone_suite(end, milestones_frame(milestones)),
        step_suite(cfg, end, step_stats_frame(stats, cfg)),
    ]
    if result is not None:
        suites.append(metric_suite(cfg, result, metrics_frame(result)))
    batch_definition = _new_batch_definition()
    checks: list[QualityCheck] = []
    for suite in suites:
        checks += _validate(batch_definition, suite)
    return checks

"""The data-quality gate: real Great Expectations validations of the extracted frames.

``run_quality_checks`` builds one ExpectationSuite per frame from the framework
config (a team's own steps get checks without code), validates them in one
ephemeral GX context, and turns every expectation result into a
``QualityCheck``. Each expectation carries its check in ``meta["check"]``, so
results are matched by name, never by position (GX reorders them).

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
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from framework.config import FrameworkConfig, StepConfig
from framework.engine import as_of_end as _as_of_end
from framework.report import FunnelResult, QualityCheck

# Must be set before great_expectations is first imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

Severity = Literal["error", "warn"]
Describe = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class CheckSpec:
    """One check: the expectation that decides it and how to word its result."""

    name: str
    target: str
    severity: Severity
    expectation: Any  # a great_expectations Expectation, meta["check"] == name
    describe: Describe  # GX result dict -> observed text


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
    from great_expectations.expectations.row_conditions import Column

    # This module pins its own logger to INFO on import and logs a temporary
    # docs-site directory at every get_context(mode="ephemeral").
    docs_logger = logging.getLogger("great_expectations.data_context.types.base")
    if docs_logger.level in (logging.NOTSET, logging.INFO):
        docs_logger.setLevel(logging.WARNING)
    return SimpleNamespace(gx=gx, gxe=gxe, Column=Column, ProgressBarsConfig=ProgressBarsConfig)


def _new_batch_definition() -> Any:
    """One ephemeral context with a pandas whole-dataframe batch definition."""
    g = _gx()
    ctx = g.gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = g.ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("growth_quality")
    asset = source.add_dataframe_asset("frames")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def _expect(kind: str, check: str, **kwargs: Any) -> Any:
    return getattr(_gx().gxe, kind)(meta={"check": check}, **kwargs)


def _for_step(key: str) -> Any:
    return _gx().Column("step") == key


def _validate(batch_definition: Any, frame: pd.DataFrame, suite_name: str, specs: list[CheckSpec]) -> list[QualityCheck]:
    if not specs:
        return []
    suite = _gx().gx.ExpectationSuite(name=suite_name)
    for spec in specs:
        suite.add_expectation(spec.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(suite, result_format="SUMMARY")
    by_name = {r.expectation_config.meta.get("check"): r for r in outcome.results}
    checks = []
    for spec in specs:
        r = by_name.get(spec.name)
        if r is None:
            checks.append(QualityCheck(spec.name, spec.target, spec.severity, False, "not evaluated by GX"))
            continue
        error = _gx_error(r.exception_info)
        if error is not None:
            checks.append(QualityCheck(spec.name, spec.target, spec.severity, False, f"GX could not evaluate: {error}"))
            continue
        checks.append(QualityCheck(spec.name, spec.target, spec.severity, bool(r.success), spec.describe(dict(r.result or {}))))
    return checks


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


def _rows(frame: pd.DataFrame, r: dict[str, Any]) -> pd.DataFrame:
    """The frame rows GX listed as unexpected (by index)."""
    index = [i for i in (r.get("partial_unexpected_index_list") or []) if i in frame.index]
    return frame.loc[index]


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
                "newest": None if _is_missing(newest) else newest,
            }
        )
    frame = pd.DataFrame(rows, columns=["step", "records", "orphan_records", "null_timestamps", "orphan_ratio", "newest"])
    frame["orphan_ratio"] = frame["orphan_ratio"].astype("float64")
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


def entity_checks(cfg: FrameworkConfig, end: datetime) -> list[CheckSpec]:
    table, id_col, created = cfg.entity.table, cfg.entity.id, cfg.entity.created_at
    return [
        CheckSpec(
            "entities.id_not_null", f"{table}.{id_col}", "error",
            _expect("ExpectColumnValuesToNotBeNull", "entities.id_not_null", column="entity_id"),
            _counts("null"),
        ),
        CheckSpec(
            "entities.id_unique", f"{table}.{id_col}", "error",
            _expect("ExpectColumnValuesToBeUnique", "entities.id_unique", column="entity_id"),
            _non_null_counts("rows share an id"),
        ),
        CheckSpec(
            "entities.created_at_not_null", f"{table}.{created}", "error",
            _expect("ExpectColumnValuesToNotBeNull", "entities.created_at_not_null", column="created_at"),
            _counts("null or unparseable"),
        ),
        CheckSpec(
            "entities.created_at_before_as_of_end", f"{table}.{created}", "error",
            _expect(
                "ExpectColumnValuesToBeBetween", "entities.created_at_before_as_of_end",
                column="created_at", max_value=end, strict_max=True,
            ),
            _non_null_counts(f"at or after as_of_end {_ts(end)}"),
        ),
    ]


def milestone_checks(end: datetime) -> list[CheckSpec]:
    target = "milestones"  # the steps' matched records, one row per (step, entity)
    return [
        CheckSpec(
            "milestones.entity_id_not_null", f"{target}.entity_id", "error",
            _expect("ExpectColumnValuesToNotBeNull", "milestones.entity_id_not_null", column="entity_id"),
            _counts("null"),
        ),
        CheckSpec(
            "milestones.reached_at_not_null", f"{target}.reached_at", "error",
            _expect("ExpectColumnValuesToNotBeNull", "milestones.reached_at_not_null", column="reached_at"),
            _counts("null"),
        ),
        CheckSpec(
            "milestones.reached_at_before_as_of_end", f"{target}.reached_at", "error",
            _expect(
                "ExpectColumnValuesToBeBetween", "milestones.reached_at_before_as_of_end",
                column="reached_at", max_value=end, strict_max=True,
            ),
            _non_null_counts(f"at or after as_of_end {_ts(end)}"),
        ),
        CheckSpec(
            "milestones.step_entity_unique", f"{target}.(step, entity_id)", "error",
            _expect(
                "ExpectCompoundColumnsToBeUnique", "milestones.step_entity_unique",
                column_list=["step", "entity_id"], ignore_row_if="any_value_is_missing",
            ),
            _non_null_counts("rows repeat a (step, entity_id)"),
        ),
    ]


def step_checks(cfg: FrameworkConfig, end: datetime, frame: pd.DataFrame) -> list[CheckSpec]:
    """Per tracked step after the first: orphan ratio and freshness of its source."""
    max_ratio = cfg.quality.max_orphan_ratio
    hours = cfg.quality.freshness_hours
    oldest_ok = end - timedelta(hours=hours)
    rows = {row["step"]: row for _, row in frame.iterrows()}
    specs: list[CheckSpec] = []
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
            ratio = r.get("observed_value")
            ratio = 0.0 if _is_missing(ratio) else float(ratio)
            return f"{_n(row['orphan_records'])} of {records:,} records orphan ({_pct(ratio)}), max {_pct(max_ratio)}"

        def fresh(r: dict[str, Any]) -> str:
            newest = r.get("observed_value")
            if _is_missing(newest):
                return f"no records before as_of_end {_ts(end)} (limit {_num(hours)} h)"
            age = (pd.Timestamp(end) - pd.Timestamp(newest)) / pd.Timedelta(hours=1)
            return f"newest {_ts(newest)}, {age:,.1f} h before as_of_end (limit {_num(hours)} h)"

        specs.append(
            CheckSpec(
                f"steps.{step.key}.orphan_ratio", id_path, "error",
                _expect(
                    "ExpectColumnMaxToBeBetween", f"steps.{step.key}.orphan_ratio",
                    column="orphan_ratio", min_value=0, max_value=max_ratio, row_condition=_for_step(step.key),
                ),
                orphans,
            )
        )
        specs.append(
            CheckSpec(
                f"steps.{step.key}.freshness", f"{step.table}.{step.timestamp}", "error",
                _expect(
                    "ExpectColumnMaxToBeBetween", f"steps.{step.key}.freshness",
                    column="newest", min_value=oldest_ok, row_condition=_for_step(step.key),
                ),
                fresh,
            )
        )
    return specs


def metric_checks(cfg: FrameworkConfig, result: FunnelResult, frame: pd.DataFrame) -> list[CheckSpec]:
    """Sanity of the computed numbers (current period, overall)."""
    mode = result.mode
    entity = result.entity or cfg.entity.name
    min_sample = cfg.funnel.min_sample
    target = "current period, overall"

    def steps_listed(r: dict[str, Any], what: str, show: Callable[[Any], str] | None = None) -> str:
        total = len(frame)
        bad = _int(r.get("unexpected_count"))
        if not bad:
            return f"0 of {total:,} steps {what}"
        listed = ", ".join(
            f"{row['step']} ({show(row)})" if show else str(row["step"]) for _, row in _rows(frame, r).iterrows()
        )
        return f"{bad:,} of {total:,} steps {what}: {listed}"

    specs: list[CheckSpec] = []
    for col in ("entered", "reached"):
        specs.append(
            CheckSpec(
                f"metrics.{col}_not_null", f"{target}: {col}", "error",
                _expect("ExpectColumnValuesToNotBeNull", f"metrics.{col}_not_null", column=col),
                lambda r: steps_listed(r, "null"),
            )
        )
        specs.append(
            CheckSpec(
                f"metrics.{col}_non_negative", f"{target}: {col}", "error",
                _expect("ExpectColumnValuesToBeBetween", f"metrics.{col}_non_negative", column=col, min_value=0),
                lambda r, col=col: steps_listed(r, "negative", lambda row: _num(row[col])),
            )
        )
    if mode in ("any_order", "ordered"):
        specs.append(
            CheckSpec(
                "metrics.entered_ge_reached", f"{target}: entered >= reached ({mode})", "error",
                _expect(
                    "ExpectColumnPairValuesAToBeGreaterThanB", "metrics.entered_ge_reached",
                    column_A="entered", column_B="reached", or_equal=True,
                    ignore_row_if="either_value_is_missing",
                ),
                lambda r: steps_listed(
                    r, "with reached > entered",
                    lambda row: f"reached {_num(row['reached'])} > entered {_num(row['entered'])}",
                ),
            )
        )
        specs.append(
            CheckSpec(
                "metrics.conversion_in_range", f"{target}: conversion in [0, 1] ({mode})", "error",
                _expect(
                    "ExpectColumnValuesToBeBetween", "metrics.conversion_in_range",
                    column="conversion", min_value=0, max_value=1,
                ),
                lambda r: steps_listed(r, "outside [0, 1]", lambda row: _num(row["conversion"])),
            )
        )
    rows = list(frame.itertuples(index=False))
    for prev, row in zip(rows, rows[1:], strict=False):
        key = row.step
        if mode == "independent":

            def above_one(r: dict[str, Any], row: Any = row, prev: Any = prev) -> str:
                if _int(r.get("unexpected_count")):
                    return (
                        f"more {entity}s reached {row.name} ({_num(row.reached)}) than "
                        f"{prev.name} ({_num(row.entered)}): journeys skip {prev.name}"
                    )
                if _is_missing(row.conversion):
                    return f"conversion null (entered {_num(row.entered)})"
                return f"conversion {_num(row.conversion)} <= 1"

            specs.append(
                CheckSpec(
                    f"metrics.{key}.conversion_above_one", f"{key}.conversion", "warn",
                    _expect(
                        "ExpectColumnValuesToBeBetween", f"metrics.{key}.conversion_above_one",
                        column="conversion", max_value=1, row_condition=_for_step(key),
                    ),
                    above_one,
                )
            )

        def small(r: dict[str, Any], row: Any = row) -> str:
            sign = "<" if _int(r.get("unexpected_count")) else ">="
            return f"entered {_num(row.entered)} {sign} min_sample {min_sample:,}"

        specs.append(
            CheckSpec(
                f"metrics.{key}.small_sample", f"{key}.entered", "warn",
                _expect(
                    "ExpectColumnValuesToBeBetween", f"metrics.{key}.small_sample",
                    column="entered", min_value=min_sample, row_condition=_for_step(key),
                ),
                small,
            )
        )
    return specs


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

    Returns one QualityCheck per expectation, in a stable order: entities,
    milestones, steps (config order), metrics. Severity "error" blocks
    publication; "warn" is reported only (see DataQuality.from_checks).
    """
    end = _as_of_end(as_of)
    batch_definition = _new_batch_definition()
    checks: list[QualityCheck] = []
    checks += _validate(batch_definition, entities_frame(entities), "entities", entity_checks(cfg, end))
    checks += _validate(batch_definition, milestones_frame(milestones), "milestones", milestone_checks(end))
    steps = step_stats_frame(stats, cfg)
    checks += _validate(batch_definition, steps, "steps", step_checks(cfg, end, steps))
    if result is not None:
        metrics = metrics_frame(result)
        checks += _validate(batch_definition, metrics, "metrics", metric_checks(cfg, result, metrics))
    return checks

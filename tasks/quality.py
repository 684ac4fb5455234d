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

* entities: one row per extracted entity record (``entity_id``, ``created_at``,
  and the text of each attribute that lists ``allowed`` values).
* volume: one row, the as_of day's count of new entities (its band comes from
  the trailing 28 days' counts, computed in pandas).
* milestones: one row per (step, entity) (``step``, ``entity_id``, ``reached_at``,
  ``hours_after_creation`` of the entity, NaN when the entity is unknown).
* steps: one row per tracked step after the first, built from the config, so a
  step missing from ``stats`` still gets its checks (and fails freshness).
* metrics: one row per tracked step of ``result`` (when given), with its NaN
  fields and its change from the previous run (when given).

The checks, their severities and what to do when one fires: docs/quality.md.

Great Expectations is imported lazily (it costs ~5 s) and only here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from framework.config import FrameworkConfig, StepConfig
from framework.engine import (
    NOT_REACHED,
    US_PER_DAY,
    US_PER_HOUR,
    _attribute_text,  # the engine's text of a segment value: allowed values compare with it
    normalize_ids,
    to_epoch_us,
)
from framework.engine import as_of_end as _as_of_end
from framework.report import FunnelResult, QualityCheck, StepResult
from framework.stats import ratio_lower_bound, two_proportion_p_value

# Must be set before great_expectations is first imported.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

Severity = Literal["error", "warn"]
Describe = Callable[[dict[str, Any]], str]

# entities.volume: the as_of day's new entities against the median of the 28 days before it.
VOLUME_DAYS = 28
VOLUME_MIN_ACTIVE_DAYS = 7  # fewer days with new entities: not enough history, skipped
VOLUME_BAND = (0.5, 2.0)  # x the median
# milestones.before_creation: clocks of different systems disagree a little; more than this is a bug.
CREATION_TOLERANCE = timedelta(hours=1)
# metrics.<step>.anomaly: a change beyond quality.anomaly_pp points is flagged when p is below this.
ANOMALY_P_VALUE = 0.01


@dataclass(frozen=True)
class CheckSpec:
    """One check: the expectation(s) that decide it and how to word its result.

    A frame-wide check (``step`` None) passes when all its expectations pass
    and is described from the first one's GX result. A per-step check shares
    its expectations with the same check of the other steps (one expectation
    per kind over the per-step frame): it fails when GX lists the step's row
    as unexpected in any of them, and is described from
    ``{"element_count": 1, "unexpected_count": 0 or 1}``. A check without
    expectations is skipped: it passes, described from ``{}`` (saying why).
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


@dataclass
class _Context:
    """One ephemeral GX context per run: its pandas batch definition and, when asked
    for, a Data Docs site (static HTML) built from this run's validation results."""

    ctx: Any
    batch_definition: Any


DOCS_SITE = "growth"


def _new_context() -> _Context:
    """One ephemeral context with a pandas whole-dataframe batch definition."""
    g = _gx()
    ctx = g.gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = g.ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("growth_quality")
    asset = source.add_dataframe_asset("frames")
    return _Context(ctx, asset.add_batch_definition_whole_dataframe("whole_frame"))


def build_data_docs(context: _Context, directory: Path) -> Path:
    """Render this run's validation results as GX Data Docs (static HTML) into ``directory``.

    The directory is emptied first, so it shows exactly one run. Returns the index page.
    """
    directory = directory.resolve()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    context.ctx.add_data_docs_site(DOCS_SITE, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(directory)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.ctx.build_data_docs(site_names=[DOCS_SITE])
    return directory / "index.html"


# GX's cost is per expectation and grows with the metrics its result format asks
# for. Entities and milestones only need counts (BASIC: no unexpected index list
# or query); per-step frames need every unexpected row, named by its step.
_COUNTS: dict[str, Any] = {"result_format": "BASIC"}
_BY_STEP: dict[str, Any] = {"result_format": "COMPLETE", "unexpected_index_column_names": ["step"]}


def _validate(context: _Context, suite: Suite) -> list[QualityCheck]:
    if not suite.checks:
        return []
    if not suite.expectations:  # only skipped checks: nothing for GX to do
        return [_check(spec, [], suite.frame) for spec in suite.checks]
    g = _gx().gx
    gx_suite = context.ctx.suites.add(g.ExpectationSuite(name=suite.name))
    for expectation in suite.expectations:
        gx_suite.add_expectation(expectation)
    # A validation definition (not batch.validate) so the result lands in the context's
    # validation results store, from which Data Docs are built.
    definition = context.ctx.validation_definitions.add(
        g.ValidationDefinition(name=suite.name, data=context.batch_definition, suite=gx_suite)
    )
    outcome = definition.run(
        batch_parameters={"dataframe": suite.frame}, result_format=_BY_STEP if suite.per_step else _COUNTS
    )
    by_id = {r.expectation_config.meta.get("check"): r for r in outcome.results}
    return [_check(spec, [by_id.get(i) for i in spec.expectations], suite.frame) for spec in suite.checks]


def _check(spec: CheckSpec, results: list[Any], frame: pd.DataFrame) -> QualityCheck:
    def done(success: bool, observed: str) -> QualityCheck:
        return QualityCheck(spec.name, spec.target, spec.severity, success, observed)

    if not spec.expectations:
        return done(True, spec.describe({}))
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


def attribute_column(attribute: str) -> str:
    """The entities frame's column holding an attribute's text (apart from entity_id, created_at)."""
    return f"attribute__{attribute}"


def _attribute_values(values: pd.Series) -> pd.Series:
    """Segment values as the engine sees them, as text; NULL and "" (the "(none)" segment) missing.

    Categorical: the text is made once per distinct value, and GX checks a categorical column
    several times faster than one of Python strings (1M rows: ~0.15 s against ~0.5 s).
    """
    codes, uniques = pd.factorize(values)  # -1: missing
    text = _attribute_text(pd.Series(uniques))
    text = text.astype(object).where(text.notna() & (text != ""), None)
    text_codes, categories = pd.factorize(text)  # distinct values may share a text (1 and "1")
    codes = np.where(codes >= 0, text_codes[np.maximum(codes, 0)] if len(text_codes) else -1, -1)
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object)))


def entities_frame(entities: pd.DataFrame, cfg: FrameworkConfig | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"entity_id": _column(entities, "entity_id"), "created_at": _utc(_column(entities, "created_at"))}
    )
    for attribute in cfg.entity.allowed if cfg is not None else {}:
        frame[attribute_column(attribute)] = _attribute_values(_column(entities, attribute))
    return frame


def daily_new_entities(frame: pd.DataFrame, end: datetime) -> np.ndarray:
    """Entity records created per day: [0] on the as_of day [end - 1 day, end), [i] i days before it
    (i = 1..VOLUME_DAYS). ``frame`` is an ``entities_frame``."""
    created = to_epoch_us(frame["created_at"])
    created = created[created != NOT_REACHED]
    end_us = (end - datetime(1970, 1, 1, tzinfo=end.tzinfo)) // timedelta(microseconds=1)
    days = (end_us - 1 - created) // US_PER_DAY
    days = days[(days >= 0) & (days <= VOLUME_DAYS)]
    return np.bincount(days, minlength=VOLUME_DAYS + 1)


def _same_kind(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids of two frames as comparable keys (as the engine matches them)."""
    a, b = normalize_ids(a), normalize_ids(b)
    if a.dtype != b.dtype:
        a, b = a.astype("string"), b.astype("string")
    return a, b


def _hours_after_creation(entity_ids: pd.Series, reached_at: pd.Series, entities: pd.DataFrame) -> np.ndarray:
    """Hours from each milestone's entity creation (its earliest record) to the milestone; NaN when the
    entity or either timestamp is unknown. ``entities`` is an ``entities_frame``."""
    out = np.full(len(entity_ids), np.nan)
    if not len(entity_ids) or not len(entities):
        return out
    created = to_epoch_us(entities["created_at"])
    known = entities["entity_id"].notna().to_numpy() & (created != NOT_REACHED)
    if not known.any():
        return out
    ids, wanted = _same_kind(entities["entity_id"], entity_ids)
    if not known.all():
        ids, created = ids[known].reset_index(drop=True), created[known]
    index = pd.Index(ids)
    if not index.is_unique:  # a duplicated id (entities.id_unique fails): its earliest record
        first = pd.DataFrame({"id": ids, "created": created}).sort_values("created", kind="stable")
        first = first.drop_duplicates("id")
        index, created = pd.Index(first["id"]), first["created"].to_numpy()
    pos = index.get_indexer(wanted)
    reached = to_epoch_us(reached_at)
    ok = (pos >= 0) & (reached != NOT_REACHED)
    out[ok] = (reached[ok] - created[pos[ok]]) / US_PER_HOUR
    return out


def milestones_frame(milestones: pd.DataFrame, entities: pd.DataFrame | None = None) -> pd.DataFrame:
    """``entities`` (an ``entities_frame``) adds ``hours_after_creation``."""
    step = _column(milestones, "step")
    frame = pd.DataFrame(
        {
            "step": step.astype(object).where(step.notna(), None),
            "entity_id": _column(milestones, "entity_id"),
            "reached_at": _utc(_column(milestones, "reached_at")),
        }
    )
    if entities is not None:
        frame["hours_after_creation"] = _hours_after_creation(frame["entity_id"], frame["reached_at"], entities)
    return frame


def step_stats_frame(stats: pd.DataFrame, cfg: FrameworkConfig) -> pd.DataFrame:
    """One row per tracked step after the first, in config order; steps absent from ``stats`` have no records.

    ``null_entity_records`` is NaN for ``via`` steps (GX ignores it): after the join a NULL id
    is a NULL foreign key or an unknown one, which the orphan ratio already covers.
    """
    rows = []
    by_step = {str(row["step"]): row for _, row in stats.iterrows()} if "step" in stats.columns else {}

    def get(row: Any, name: str) -> Any:
        return None if row is None else row.get(name)

    for step in _source_steps(cfg):
        row = by_step.get(step.key)
        records = _int(get(row, "records"))
        orphans = _int(get(row, "orphan_records"))
        newest, future = get(row, "newest"), get(row, "newest_future")
        rows.append(
            {
                "step": step.key,
                "records": records,
                "orphan_records": orphans,
                "null_entity_records": float(_int(get(row, "null_entity_records"))) if step.via is None else np.nan,
                "null_timestamps": _int(get(row, "null_timestamps")),
                "orphan_ratio": orphans / records if records else 0.0,
                "orphan_ratio_low": ratio_lower_bound(orphans, records),
                "newest": None if _is_missing(newest) else newest,
                "future_entities": float(_int(get(row, "future_entities"))),
                "newest_future": None if _is_missing(future) else future,
            }
        )
    columns = [
        "step", "records", "orphan_records", "null_entity_records", "null_timestamps", "orphan_ratio",
        "orphan_ratio_low", "newest", "future_entities", "newest_future",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    floats = ("null_entity_records", "orphan_ratio", "orphan_ratio_low", "future_entities")
    frame = frame.astype(dict.fromkeys(floats, "float64"))
    for col in ("newest", "newest_future"):
        frame[col] = _utc(frame[col]) if len(frame) else pd.Series([], dtype="datetime64[us, UTC]")
    return frame


def _is_nan(value: Any) -> bool:
    """A float NaN (None and pd.NA are missing, not NaN)."""
    return isinstance(value, float | np.floating) and math.isnan(value)


def _count(value: Any) -> int | None:
    """A step count as an int; None when missing or NaN."""
    return None if _is_missing(value) else int(value)


def _nan_fields(s: StepResult) -> str | None:
    """What is NaN in a step's numbers ("conversion NaN"), or a conversion missing though entered > 0."""
    bad = [f"{col} NaN" for col in ("entered", "reached", "conversion") if _is_nan(getattr(s, col))]
    entered = _count(s.entered)
    if _is_missing(s.conversion) and not _is_nan(s.conversion) and entered:
        bad.append(f"conversion null though entered {entered:,}")
    return ", ".join(bad) or None


def _change(s: StepResult, previous: dict[str, tuple[int, int]] | None) -> dict[str, Any]:
    """The step's conversion change from the previous run: points, p-value, and the points again when
    p < ANOMALY_P_VALUE (else NaN, which GX ignores)."""
    out: dict[str, Any] = {
        "previous_entered": np.nan, "previous_reached": np.nan, "change_pp": np.nan, "p_value": np.nan,
        "significant_change_pp": np.nan,
    }
    before = (previous or {}).get(s.key)
    if before is None:
        return out
    e0, r0 = (_count(v) for v in before)
    e1, r1 = _count(s.entered), _count(s.reached)
    out["previous_entered"] = np.nan if e0 is None else float(e0)
    out["previous_reached"] = np.nan if r0 is None else float(r0)
    if not e0 or not e1 or r0 is None or r1 is None:
        return out
    out["change_pp"] = 100.0 * (r1 / e1 - r0 / e0)
    p = two_proportion_p_value(r1, e1, r0, e0)
    if p is not None:
        out["p_value"] = p
        if p < ANOMALY_P_VALUE:
            out["significant_change_pp"] = out["change_pp"]
    return out


METRIC_FLOATS = (
    "entered", "reached", "conversion", "previous_step_reached", "previous_entered", "previous_reached",
    "change_pp", "p_value", "significant_change_pp",
)


def metrics_frame(result: FunnelResult, previous: dict[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """One row per tracked step of the result; counts as float64 (GX pair checks fail on pd.NA).

    ``nan_fields`` names what is NaN in the step (None when nothing); ``previous_step_reached``
    is the previous tracked step's reached (NaN for the first); the change columns compare
    with ``previous`` (step key -> (entered, reached) of the previous run), NaN without one.
    """
    tracked = [s for s in result.steps if s.tracked]
    rows = [
        {
            "step": s.key,
            "name": s.name,
            "position": s.position,
            "entered": np.nan if _is_missing(s.entered) else float(s.entered),
            "reached": np.nan if _is_missing(s.reached) else float(s.reached),
            "conversion": np.nan if _is_missing(s.conversion) else float(s.conversion),
            "previous_step_reached": np.nan if i == 0 or _is_missing(tracked[i - 1].reached)
            else float(tracked[i - 1].reached),
            "nan_fields": _nan_fields(s),
            **_change(s, previous),
        }
        for i, s in enumerate(tracked)
    ]
    frame = pd.DataFrame(rows, columns=["step", "name", "position", "nan_fields", *METRIC_FLOATS])
    frame["nan_fields"] = frame["nan_fields"].astype(object)
    return frame.astype(dict.fromkeys(METRIC_FLOATS, "float64"))


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
    # One expectation per attribute that lists its values (each has its own set); NULLs are the
    # "(none)" segment: ignored by GX, so allowed.
    for attribute, allowed in cfg.entity.allowed.items():
        suite.check(
            f"entities.{attribute}.allowed", f"{table}.{attribute}", "error",
            suite.expect(
                "ExpectColumnValuesToBeInSet", f"entities.{attribute}.allowed",
                column=attribute_column(attribute), value_set=allowed,
            ),
            _outside_set(allowed),
        )
    return suite


def _outside_set(allowed: list[str]) -> Describe:
    """'2 of 38 non-null values outside the allowed set (github, google): gitlab, bitbucket'."""
    shown_set = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")

    def describe(r: dict[str, Any]) -> str:
        text = _non_null_counts(f"non-null values outside the allowed set ({shown_set})")(r)
        seen = list(dict.fromkeys(str(v) for v in r.get("partial_unexpected_list") or []))
        if not seen:
            return text
        return f"{text}: {', '.join(seen[:5])}{', ...' if len(seen) > 5 else ''}"

    return describe


def volume_suite(cfg: FrameworkConfig, as_of: date, end: datetime, entities: pd.DataFrame) -> Suite:
    """entities.volume: the as_of day's new entities within VOLUME_BAND x the median of the
    VOLUME_DAYS days before it (counted in pandas; GX validates the one-row frame)."""
    counts = daily_new_entities(entities, end)
    today, history = int(counts[0]), counts[1:]
    active = int((history > 0).sum())
    entity = cfg.entity.name
    target = f"{cfg.entity.table}.{cfg.entity.created_at}: new {entity}s on {as_of.isoformat()}"
    suite = Suite("volume", pd.DataFrame({"day": [as_of.isoformat()], "new_entities": [float(today)]}))
    if active < VOLUME_MIN_ACTIVE_DAYS:
        suite.check(
            "entities.volume", target, "warn", (),
            lambda r: (
                f"not enough history: {active} of the {VOLUME_DAYS} days before {as_of.isoformat()} have "
                f"new {entity}s (need {VOLUME_MIN_ACTIVE_DAYS}); {today:,} on {as_of.isoformat()}"
            ),
        )
        return suite
    median = float(np.median(history))
    low, high = VOLUME_BAND[0] * median, VOLUME_BAND[1] * median

    def describe(r: dict[str, Any]) -> str:
        where = "within" if not _int(r.get("unexpected_count")) else ("below" if today < low else "above")
        return (
            f"{today:,} new {entity}s on {as_of.isoformat()}, {where} [{_num(low)}, {_num(high)}] "
            f"({_num(VOLUME_BAND[0])}x to {_num(VOLUME_BAND[1])}x the median {_num(median)} "
            f"of the {VOLUME_DAYS} days before)"
        )

    suite.check(
        "entities.volume", target, "warn",
        suite.expect(
            "ExpectColumnValuesToBeBetween", "entities.volume", column="new_entities", min_value=low, max_value=high
        ),
        describe,
    )
    return suite


def milestone_suite(end: datetime, frame: pd.DataFrame, cfg: FrameworkConfig | None = None) -> Suite:
    """Milestone sanity; with ``cfg`` and a frame holding ``hours_after_creation``, also
    milestones.before_creation."""
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
    if cfg is not None and "hours_after_creation" in frame.columns:
        tolerance = CREATION_TOLERANCE / timedelta(hours=1)
        entity = cfg.entity.name
        suite.check(
            "milestones.before_creation",
            f"{target}.reached_at vs {cfg.entity.table}.{cfg.entity.created_at}", "warn",
            suite.expect(
                "ExpectColumnValuesToBeBetween", "milestones.before_creation",
                column="hours_after_creation", min_value=-tolerance,
            ),
            _non_null_counts(f"more than {_num(tolerance)} h before their {entity}'s creation"),
        )
    return suite


def step_suite(cfg: FrameworkConfig, end: datetime, frame: pd.DataFrame) -> Suite:
    """Per tracked step after the first: orphan ratio and freshness of its source.

    One expectation per kind over the per-step frame; each step's checks are
    decided by whether GX lists its row as unexpected.
    """
    max_ratio = cfg.quality.max_orphan_ratio
    hours = cfg.quality.freshness_hours
    entity = cfg.entity.name
    suite = Suite("steps", frame, per_step=True)
    if frame.empty:
        return suite
    # The ratio is measured on the records a run read (an incremental run: its recent slice).
    # The gate fails when the data shows, with 99% confidence (exact lower bound), that the
    # ratio is above the limit: a quiet day's few records cannot trip it by chance.
    # (Exact Clopper-Pearson bound: framework.stats.ratio_lower_bound.)
    orphan_ratio = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.orphan_ratio", column="orphan_ratio_low", min_value=0,
        max_value=max_ratio,
    )
    # The plain ratio above the limit without that proof: a warning, so a rise shows early.
    orphan_observed = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.orphan_ratio_observed", column="orphan_ratio", min_value=0,
        max_value=max_ratio,
    )
    # NaN for via steps (ignored by GX): see step_stats_frame.
    null_ids = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.entity_id_not_null", column="null_entity_records", max_value=0
    )
    future = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.future_records", column="future_entities", max_value=0
    )
    null_times = suite.expect(
        "ExpectColumnValuesToBeBetween", "steps.timestamp_not_null", column="null_timestamps", max_value=0
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

        def observed_ratio(r: dict[str, Any], row: Any = row) -> str:
            records = _int(row["records"])
            if not records:
                return f"no records: ratio 0, max {_pct(max_ratio)}"
            sign = ">" if _int(r.get("unexpected_count")) else "<="
            return (
                f"{_n(row['orphan_records'])} of {records:,} records orphan "
                f"({_pct(float(row['orphan_ratio']))} {sign} max {_pct(max_ratio)})"
            )

        def null_entity(r: dict[str, Any], row: Any = row, column: str = id_path) -> str:
            return (
                f"{_n(row['null_entity_records'])} of {_n(row['records'])} records with a NULL {column} "
                "(not counted; part of the orphan ratio)"
            )

        def future_records(r: dict[str, Any], row: Any = row) -> str:
            count = _int(row["future_entities"])
            if not count:
                return f"0 {entity}s with records dated after the run's clock"
            return (
                f"{count:,} {entity}s with records dated after the run's clock (latest "
                f"{_ts(row['newest_future'])}; not counted, not used for freshness)"
            )

        suite.check(f"steps.{step.key}.orphan_ratio", id_path, "error", orphan_ratio, orphans, step=step.key)
        suite.check(
            f"steps.{step.key}.orphan_ratio_observed", id_path, "warn", orphan_observed, observed_ratio, step=step.key
        )
        if step.via is None:
            suite.check(
                f"steps.{step.key}.entity_id_not_null", id_path, "warn", null_ids, null_entity, step=step.key
            )
        suite.check(
            f"steps.{step.key}.future_records", f"{step.table}.{step.timestamp}", "warn", future, future_records,
            step=step.key,
        )

        def null_time(r: dict[str, Any], row: Any = row) -> str:
            return f"{_n(row['null_timestamps'])} records with a NULL or unreadable time (not counted)"

        suite.check(
            f"steps.{step.key}.timestamp_not_null", f"{step.table}.{step.timestamp}", "warn", null_times, null_time,
            step=step.key,
        )
        suite.check(
            f"steps.{step.key}.freshness", f"{step.table}.{step.timestamp}", "error",
            (has_newest, fresh), freshness, step=step.key,
        )
    return suite


def metric_suite(
    cfg: FrameworkConfig,
    result: FunnelResult,
    frame: pd.DataFrame,
    previous: dict[str, tuple[int, int]] | None = None,
) -> Suite:
    """Sanity of the computed numbers (current period, overall), and their change from
    ``previous`` (step key -> (entered, reached) of the previous run; None skips it)."""
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
    # NaN is not "no value": a NaN count or conversion is a computation bug (and not JSON). A missing
    # conversion is fine only when nobody entered the step.
    suite.check(
        "metrics.no_nan", f"{target}: entered, reached, conversion", "error",
        suite.expect("ExpectColumnValuesToBeNull", "metrics.no_nan", column="nan_fields"),
        lambda r: steps_listed(r, "with NaN", lambda row: str(row["nan_fields"])),
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
        # Each step's entered is the previous tracked step's reached (metrics.md), and in these
        # modes reaching a step needs the ones before it: reached never grows down the funnel.
        suite.check(
            "metrics.counts_non_increasing", f"{target}: reached(step) <= reached(previous step) ({mode})", "error",
            suite.expect(
                "ExpectColumnPairValuesAToBeGreaterThanB", "metrics.counts_non_increasing",
                column_A="previous_step_reached", column_B="reached", or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
            lambda r: steps_listed(
                r, "reached by more than the previous step",
                lambda row: f"reached {_num(row['reached'])} > {_num(row['previous_step_reached'])}",
            ),
        )
        suite.check(
            "metrics.entered_is_previous_reached", f"{target}: entered(step) = reached(previous step) ({mode})",
            "error",
            suite.expect(
                "ExpectColumnPairValuesToBeEqual", "metrics.entered_is_previous_reached",
                column_A="entered", column_B="previous_step_reached", ignore_row_if="either_value_is_missing",
            ),
            lambda r: steps_listed(
                r, "whose entered is not the previous step's reached",
                lambda row: f"entered {_num(row['entered'])} != {_num(row['previous_step_reached'])}",
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
    limit_pp = cfg.quality.anomaly_pp
    # Only significant changes carry a value in significant_change_pp (others are NaN: ignored).
    anomaly = (
        suite.expect(
            "ExpectColumnValuesToBeBetween", "metrics.anomaly", column="significant_change_pp",
            min_value=-limit_pp, max_value=limit_pp,
        )
        if previous is not None
        else ()
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

        def moved(r: dict[str, Any], row: Any = row) -> str:
            if previous is None:
                return "skipped: no previous run"
            if _is_missing(row.previous_entered):
                return "skipped: the step is not in the previous run"
            if _is_missing(row.change_pp):
                return (
                    f"skipped: conversion undefined (entered {_num(row.entered)}, "
                    f"previous run {_num(row.previous_entered)})"
                )
            now, before = row.reached / row.entered, row.previous_reached / row.previous_entered
            p = "p undefined" if _is_missing(row.p_value) else f"p = {row.p_value:.2g}"
            return (
                f"conversion {_pct(now)} vs {_pct(before)} in the previous run ({row.change_pp:+.1f} pp, {p}); "
                f"flagged beyond {_num(limit_pp)} pp at p < {ANOMALY_P_VALUE:g}"
            )

        suite.check(f"metrics.{key}.anomaly", f"{key}.conversion vs previous run", "warn", anomaly, moved, step=key)
    return suite


# ------------------------------------------------------------------------ run


def run_quality_checks(
    entities: pd.DataFrame,
    milestones: pd.DataFrame,
    stats: pd.DataFrame,
    result: FunnelResult | None,
    cfg: FrameworkConfig,
    as_of: date,
    previous: dict[str, tuple[int, int]] | None = None,
    data_docs_dir: str | Path | None = None,
) -> list[QualityCheck]:
    """Validate the extracted frames (and the metrics, when given) with Great Expectations.

    ``data_docs_dir``: when given, the run's validation results are also rendered
    there as GX Data Docs (static HTML, ``index.html``; the directory is replaced).

    ``previous``: the previous run's (entered, reached) by step key, for the
    metrics.<step>.anomaly checks (skipped when None).

    Returns one QualityCheck per check, in a stable order: entities, volume,
    milestones, steps (config order), metrics. Severity "error" blocks
    publication; "warn" is reported only (see DataQuality.from_checks).
    """
    end = _as_of_end(as_of)
    ents = entities_frame(entities, cfg)
    suites = [
        entity_suite(cfg, end, ents),
        volume_suite(cfg, as_of, end, ents),
        milestone_suite(end, milestones_frame(milestones, ents), cfg),
        step_suite(cfg, end, step_stats_frame(stats, cfg)),
    ]
    if result is not None:
        suites.append(metric_suite(cfg, result, metrics_frame(result, previous), previous))
    context = _new_context()
    checks: list[QualityCheck] = []
    for suite in suites:
        checks += _validate(context, suite)
    if data_docs_dir is not None:
        build_data_docs(context, Path(data_docs_dir))
    return checks

"""The metric engine (contract: shared/specs/metrics.md). Pure pandas/numpy, vectorized.

Inputs (frames and their grain):

* ``entities``: one row per entity. Columns ``entity_id``, ``created_at``
  (UTC; naive values are taken as UTC) and one column per configured
  attribute.
* ``milestones``: one row per entity per tracked step (steps 2..n): columns
  ``step`` (the step key), ``entity_id``, ``reached_at`` (the earliest
  matching record before ``as_of_end``). Duplicates are tolerated (the
  earliest wins); rows of unknown entities (orphans) and rows at or after
  ``as_of_end`` are ignored.

Internally every timestamp is an int64 count of microseconds since the epoch
(microseconds, not nanoseconds, so that years 1 and 9999 stay representable),
held in a matrix ``T`` of shape (entities, tracked steps); column 0 is the
entity's creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from framework.config import FrameworkConfig
from framework.report import CohortRow, FunnelResult, Period, SegmentRow, StepResult
from framework.stats import ratio, two_proportion_p_value

US_PER_DAY = 86_400 * 1_000_000
US_PER_HOUR = 3_600 * 1_000_000
NOT_REACHED = np.iinfo(np.int64).max
NONE_VALUE = "(none)"


def as_of_end(as_of: date) -> datetime:
    """Exclusive end of the reporting day: as_of + 1 day, 00:00 UTC."""
    return datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)


def to_epoch_us(values: pd.Series | pd.Index) -> np.ndarray:
    """UTC timestamps (aware, naive-as-UTC, or ISO text) to int64 microseconds; NaT -> NOT_REACHED."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if not pd.api.types.is_datetime64_any_dtype(s):
        s = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert(None)  # naive UTC, the same instants
    arr = s.to_numpy().astype("datetime64[us]", copy=False)
    out = arr.view(np.int64).copy()
    out[np.isnat(arr)] = NOT_REACHED
    return out


def _us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def normalize_ids(values: pd.Series) -> pd.Series:
    """Entity ids as comparable keys: integral numbers as int64, anything else as text."""
    s = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype("int64")
    if pd.api.types.is_float_dtype(s):
        finite = s.dropna()
        if (finite == np.floor(finite)).all():
            return s.astype("Int64").astype("int64") if not s.isna().any() else s.astype("Int64")
    return s.astype("string")


def _align(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    a, b = normalize_ids(a), normalize_ids(b)
    if a.dtype != b.dtype:
        a, b = a.astype("string"), b.astype("string")
    return a, b


@dataclass(frozen=True)
class Matrix:
    """Milestones as a dense matrix. Grain: one row per entity, one column per tracked step."""

    entity_ids: pd.Series
    created_us: np.ndarray  # shape (n,)
    T: np.ndarray  # shape (n, k) int64 us, NOT_REACHED when not reached
    attributes: pd.DataFrame  # one row per entity, attribute values as text, "(none)" when missing
    step_keys: list[str]


def build_matrix(
    entities: pd.DataFrame, milestones: pd.DataFrame, cfg: FrameworkConfig, end: datetime
) -> Matrix:
    tracked = [s.key for s in cfg.tracked_steps]
    end_us = _us(end)
    ent = entities.copy()
    created = to_epoch_us(ent["created_at"])
    keep = (created != NOT_REACHED) & (created < end_us) & ent["entity_id"].notna().to_numpy()
    ent = ent.loc[keep].assign(_created=created[keep])
    if not _unique_ids(ent["entity_id"]):
        # duplicate ids: the earliest creation wins (the quality gate reports them)
        ent = ent.sort_values("_created", kind="stable").drop_duplicates("entity_id", keep="first")
    ent = ent.reset_index(drop=True)
    n, k = len(ent), len(tracked)
    T = np.full((n, k), NOT_REACHED, dtype=np.int64)
    created_us = ent["_created"].to_numpy(dtype=np.int64)
    T[:, 0] = created_us

    if len(milestones) and k > 1 and n:
        ms = milestones[milestones["entity_id"].notna()]
        reached = to_epoch_us(ms["reached_at"])
        ent_ids, ms_ids = _align(ent["entity_id"], ms["entity_id"])
        rows = _positions(ent_ids, ms_ids)
        cols = _codes(ms["step"], tracked)
        ok = (rows >= 0) & (cols >= 1) & (reached != NOT_REACHED) & (reached < end_us)
        cells, times = rows[ok] * k + cols[ok], reached[ok]
        flat = T.reshape(-1)
        flat[cells] = times  # one of the cell's times wins the plain assignment...
        lost = flat[cells] != times  # ...and duplicates (the earliest must win) are few or none
        if lost.any():
            np.minimum.at(flat, cells[lost], times[lost])

    attrs = pd.DataFrame(index=range(n))
    for a in cfg.entity.attributes:
        col = ent[a].reset_index(drop=True) if a in ent.columns else pd.Series([None] * n)
        attrs[a] = _attribute_segments(col)
    return Matrix(ent["entity_id"], created_us, T, attrs, tracked)


def _attribute_segments(values: pd.Series) -> pd.Categorical:
    """Each entity's segment value as text ("(none)" when missing or empty), as a categorical:
    the text is made once per distinct value, not once per entity."""
    codes, uniques = pd.factorize(values)
    text = _attribute_text(pd.Series(uniques, dtype=values.dtype if len(uniques) else object))
    text = text.astype(object).where(text.notna() & (text != ""), NONE_VALUE)
    text_codes, categories = pd.factorize(pd.Series(list(text) + [NONE_VALUE], dtype=object))
    codes = text_codes[np.where(codes >= 0, codes, len(text))]
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object))


def _dense_range(ids: pd.Series) -> tuple[int, int] | None:
    """(min, size) when ``ids`` are int64 spread over a range at most a few times their count
    (the usual integer keys): positions then come from one array lookup, not a hash table."""
    if ids.dtype != np.int64 or not len(ids):
        return None
    values = ids.to_numpy()
    low, high = int(values.min()), int(values.max())
    size = high - low + 1
    return (low, size) if size <= 4 * len(values) + 1024 else None


def _unique_ids(ids: pd.Series) -> bool:
    dense = _dense_range(ids)
    if dense is None:
        return bool(ids.is_unique)
    low, size = dense
    return int(np.bincount(ids.to_numpy() - low, minlength=size).max()) <= 1


def _positions(index_ids: pd.Series, ids: pd.Series) -> np.ndarray:
    """Row of each of ``ids`` in ``index_ids`` (unique), -1 when absent."""
    dense = _dense_range(index_ids)
    if dense is None or ids.dtype != np.int64:
        return pd.Index(index_ids).get_indexer(ids)
    low, size = dense
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[index_ids.to_numpy() - low] = np.arange(len(index_ids), dtype=np.int64)
    offset = ids.to_numpy() - low
    if not len(offset) or (int(offset.min()) >= 0 and int(offset.max()) < size):
        return lookup[offset]
    inside = (offset >= 0) & (offset < size)
    out = np.full(len(offset), -1, dtype=np.int64)
    out[inside] = lookup[offset[inside]]
    return out


def _codes(values: pd.Series, categories: list) -> np.ndarray:
    """Position of each value in ``categories`` (-1 when absent), by one hash of the distinct
    values (``Series.map`` with a dict costs a Python call per row)."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # the codes are there already
        position = {c: i for i, c in enumerate(categories)}
        lookup = np.array([position.get(c, -1) for c in values.cat.categories.tolist()] + [-1], dtype=np.int64)
        return lookup[values.cat.codes.to_numpy()]
    codes, uniques = pd.factorize(values)
    position = {c: i for i, c in enumerate(categories)}
    lookup = np.array([position.get(u, -1) for u in uniques.tolist()] + [-1], dtype=np.int64)
    return lookup[codes]  # code -1 (missing) takes the trailing -1


def _attribute_text(values: pd.Series) -> pd.Series:
    """Attribute values as text; a nullable integer column read as float keeps its integer look."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if len(finite) and (finite == np.floor(finite)).all():
            return values.astype("Int64").astype("string")
    return values.astype("string")


def reached_matrix(T: np.ndarray, window_days: int, mode: str) -> np.ndarray:
    """Boolean (entities x tracked steps): entity reached the step, as the mode defines it."""
    has = T != NOT_REACHED
    t0 = T[:, 0]
    limit = window_days * US_PER_DAY
    within = np.empty_like(has)
    with np.errstate(over="ignore"):  # NOT_REACHED - t0 may wrap; ``has`` masks it out
        for j in range(T.shape[1]):
            within[:, j] = has[:, j] & ((T[:, j] - t0) <= limit)
    if mode == "independent":
        return within
    chain = within
    if mode == "ordered":
        order_ok = np.ones_like(within)
        order_ok[:, 1:] = T[:, 1:] >= T[:, :-1]
        chain = within & order_ok
    return np.logical_and.accumulate(chain, axis=1)


def _hours(T: np.ndarray, R: np.ndarray, mask: np.ndarray, j: int) -> tuple[float | None, float | None]:
    sel = mask & R[:, j] & R[:, j - 1] & (T[:, j] >= T[:, j - 1])
    if not sel.any():
        return None, None
    d = (T[sel, j] - T[sel, j - 1]) / US_PER_HOUR
    med, p90 = np.percentile(d, [50, 90])
    return float(med), float(p90)


def _counts(R: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return R[mask].sum(axis=0).astype(np.int64)


def _entered(reached: np.ndarray) -> np.ndarray:
    """entered(s) = reached(previous tracked step); entered(1) = reached(1). Works on (..., k)."""
    ent = np.empty_like(reached)
    ent[..., 0] = reached[..., 0]
    ent[..., 1:] = reached[..., :-1]
    return ent


# ---- cohort periods -------------------------------------------------------

_MONDAY_EPOCH = np.datetime64("1970-01-05", "D")


def _cohort_index(created_us: np.ndarray, kind: str) -> np.ndarray:
    days = (created_us // US_PER_DAY).astype("datetime64[D]")
    if kind == "month":
        return days.astype("datetime64[M]").astype(np.int64)
    return (days - _MONDAY_EPOCH).astype(np.int64) // 7


def _period_bounds(index: int, kind: str) -> tuple[date, date, str]:
    if kind == "month":
        y, m = divmod(index, 12)
        start = date(1970 + y, m + 1, 1)
        end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        return start, end, f"{start.year:04d}-{start.month:02d}"
    start = date(1970, 1, 5) + timedelta(days=7 * index)
    iso = start.isocalendar()
    return start, start + timedelta(days=7), f"{iso.year:04d}-W{iso.week:02d}"


def _day_us(d: date) -> int:
    return _us(datetime(d.year, d.month, d.day, tzinfo=UTC))


# ---- the computation -------------------------------------------------------


def compute(
    entities: pd.DataFrame, milestones: pd.DataFrame, cfg: FrameworkConfig, as_of: date
) -> FunnelResult:
    """Every number of metrics.md for one as_of."""
    f = cfg.funnel
    end = as_of_end(as_of)
    M = build_matrix(entities, milestones, cfg, end)
    R = reached_matrix(M.T, f.window_days, f.mode)
    created = M.created_us
    k = len(M.step_keys)

    cur_end = end - timedelta(days=f.window_days)
    cur_start = cur_end - timedelta(days=f.lookback_days)
    prev_start = cur_start - timedelta(days=f.lookback_days)
    in_cur = (created >= _us(cur_start)) & (created < _us(cur_end))
    in_prev = (created >= _us(prev_start)) & (created < _us(cur_start))

    reached_cur, reached_prev = _counts(R, in_cur), _counts(R, in_prev)
    entered_cur, entered_prev = _entered(reached_cur), _entered(reached_prev)
    conv_cur = [ratio(int(reached_cur[j]), int(entered_cur[j])) for j in range(k)]
    conv_prev = [ratio(int(reached_prev[j]), int(entered_prev[j])) for j in range(k)]

    cohorts, best = _cohort_table(M, R, cfg, as_of, end)
    segments = _segment_rows(M, R, in_cur)
    # time-to-convert looks at the current period only: its rows, once
    T_cur, R_cur = M.T[in_cur], R[in_cur]
    every_cur = np.ones(len(T_cur), dtype=bool)

    # opportunity: (target - conversion) * entered * prod(min(1, conversion of later steps))
    def opportunity(j: int, target: float | None) -> float | None:
        if target is None or conv_cur[j] is None:
            return None
        downstream = 1.0
        for later in conv_cur[j + 1 :]:
            if later is None:
                return None
            downstream *= min(1.0, later)
        return max(0.0, target - conv_cur[j]) * int(entered_cur[j]) * downstream

    col_of = {key: i for i, key in enumerate(M.step_keys)}
    steps: list[StepResult] = []
    for position, step in enumerate(cfg.steps, start=1):
        if not step.tracked:
            steps.append(StepResult(step.key, step.name, position, False, step.qualifying))
            continue
        j = col_of[step.key]
        conv, prev = conv_cur[j], conv_prev[j]
        if j == 0:
            med = p90 = target = opp = p_value = None
        else:
            med, p90 = _hours(T_cur, R_cur, every_cur, j)
            target = step.target if step.target is not None else best.get(step.key)
            opp = opportunity(j, target)
            p_value = (
                two_proportion_p_value(
                    int(reached_cur[j]), int(entered_cur[j]), int(reached_prev[j]), int(entered_prev[j])
                )
                if conv is not None and prev is not None
                else None
            )
        steps.append(
            StepResult(
                key=step.key,
                name=step.name,
                position=position,
                tracked=True,
                qualifying=step.qualifying,
                entered=int(entered_cur[j]),
                reached=int(reached_cur[j]),
                conversion=conv,
                overall_conversion=ratio(int(reached_cur[j]), int(reached_cur[0])),
                lost=int(entered_cur[j] - reached_cur[j]),
                median_hours=med,
                p90_hours=p90,
                previous_conversion=prev,
                delta_pp=None if conv is None or prev is None else 100.0 * (conv - prev),
                p_value=p_value,
                target=target,
                opportunity=opp,
                previous_entered=int(entered_prev[j]),
                previous_reached=int(reached_prev[j]),
            )
        )

    ranking = rank_lowest(steps, f.min_sample)
    return FunnelResult(
        as_of=as_of.isoformat(),
        mode=f.mode,
        window_days=f.window_days,
        entity=cfg.entity.name,
        current_period=Period(cur_start.date().isoformat(), cur_end.date().isoformat(), int(in_cur.sum())),
        previous_period=Period(prev_start.date().isoformat(), cur_start.date().isoformat(), int(in_prev.sum())),
        steps=steps,
        cohorts=cohorts,
        segments=segments,
        ranking=ranking,
        lowest_converting=ranking[: cfg.report.top_n],
        qualifying=[s.key for s in cfg.steps if s.qualifying],
        untracked=[{"key": s.key, "proposed_metric": s.proposed_metric or ""} for s in cfg.steps if not s.tracked],
    )


def rank_lowest(steps: list[StepResult], min_sample: int) -> list[str]:
    """Candidates in order: conversion ascending, opportunity descending, then position."""
    candidates = [
        s
        for s in steps
        if s.tracked
        and s.position > 1
        and s.entered is not None
        and s.entered > 0
        and not s.qualifying
        and s.conversion is not None
        and s.entered >= min_sample
    ]
    candidates.sort(
        key=lambda s: (
            s.conversion,
            -(s.opportunity if s.opportunity is not None else float("-inf")),
            s.position,
        )
    )
    return [s.key for s in candidates]


def _grouped_counts(R: np.ndarray | tuple, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Reached counts per group: (n_groups, k). ``codes`` < 0 are left out.

    Each entity's reached steps are one bit pattern (k <= 16): one bincount over
    (group, pattern) cells, then a small product with the patterns' bits, instead of a pass
    per step. ``R`` may be given as `_reached_cells` (patterns found once)."""
    patterns, bits, R = _reached_cells(R) if isinstance(R, np.ndarray) else R
    k = R.shape[1]
    if not n_groups:
        return np.zeros((0, k), dtype=np.int64)
    ok = codes >= 0
    if patterns is not None and n_groups << k <= 1 << 24:
        cells = (codes[ok] << k) + patterns[ok]
        hist = np.bincount(cells, minlength=n_groups << k)[: n_groups << k].reshape(n_groups, 1 << k)
        return hist @ bits
    out = np.zeros((n_groups, k), dtype=np.int64)
    group = codes[ok]
    for j in range(k):
        out[:, j] = np.bincount(group[R[ok, j]], minlength=n_groups)[:n_groups]
    return out


def _reached_cells(R: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(pattern per entity, bits of every pattern (2**k, k), R); no patterns beyond 16 steps."""
    k = R.shape[1]
    if k > 16 or not len(R):
        return None, None, R
    packed = np.packbits(R, axis=1, bitorder="little")
    patterns = packed[:, 0].astype(np.int64)
    if k > 8:
        patterns |= packed[:, 1].astype(np.int64) << 8
    bits = ((np.arange(1 << k, dtype=np.int64)[:, None] >> np.arange(k)) & 1).astype(np.int64)
    return patterns, bits, R


def _cohort_table(
    M: Matrix, R: np.ndarray, cfg: FrameworkConfig, as_of: date, end: datetime
) -> tuple[list[CohortRow], dict[str, float]]:
    """Grain: cohort x (overall | attribute value) x tracked step. Also the best mature conversion per step."""
    f = cfg.funnel
    last = int(_cohort_index(np.array([_day_us(as_of)]), f.cohort)[0])
    first = last - f.history_cohorts + 1
    periods = [_period_bounds(i, f.cohort) for i in range(first, last + 1)]
    idx = _cohort_index(M.created_us, f.cohort) - first
    idx = np.where((idx >= 0) & (idx < len(periods)), idx, -1)
    end_date = end.date()
    mature = [pend + timedelta(days=f.window_days) <= end_date for _, pend, _ in periods]

    rows: list[CohortRow] = []
    best: dict[str, float] = {}

    def emit(counts: np.ndarray, segment: str | None, value: str | None) -> None:
        reached, entered = counts, _entered(counts)
        for c, (_, _, label) in enumerate(periods):
            for j, key in enumerate(M.step_keys):
                conv = ratio(int(reached[c, j]), int(entered[c, j]))
                rows.append(
                    CohortRow(label, segment, value, mature[c], key, int(entered[c, j]), int(reached[c, j]), conv)
                )
                if (
                    segment is None
                    and j > 0
                    and mature[c]
                    and conv is not None
                    and entered[c, j] >= f.min_sample
                    and conv > best.get(key, float("-inf"))
                ):
                    best[key] = conv

    RC = _reached_cells(R)
    emit(_grouped_counts(RC, idx, len(periods)), None, None)
    in_table = idx >= 0
    n_periods = len(periods)
    for attr in cfg.entity.attributes:
        values = sorted(M.attributes.loc[in_table, attr].unique().tolist()) if len(M.attributes) else []
        if not values:
            continue
        vcode = _codes(M.attributes[attr], values)
        # one pass for every value: group = value x cohort
        cell = np.where(in_table & (vcode >= 0), vcode * n_periods + idx, -1)
        counts = _grouped_counts(RC, cell, len(values) * n_periods).reshape(len(values), n_periods, -1)
        for vi, v in enumerate(values):
            emit(counts[vi], attr, v)
    return rows, best


def _segment_rows(M: Matrix, R: np.ndarray, in_cur: np.ndarray) -> list[SegmentRow]:
    """Grain: attribute x value x tracked step, current period."""
    RC = _reached_cells(R)
    rows: list[SegmentRow] = []
    for attr in M.attributes.columns:
        values = sorted(M.attributes.loc[in_cur, attr].unique().tolist())
        if not values:
            continue
        codes_of = {v: i for i, v in enumerate(values)}
        codes = np.where(in_cur, _codes(M.attributes[attr], values), -1)
        reached = _grouped_counts(RC, codes, len(values))
        entered = _entered(reached)
        for v, vi in codes_of.items():
            for j, key in enumerate(M.step_keys):
                rows.append(
                    SegmentRow(
                        attr, v, key, int(entered[vi, j]), int(reached[vi, j]), ratio(int(reached[vi, j]), int(entered[vi, j]))
                    )
                )
    return rows

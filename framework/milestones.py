"""From per-step aggregates to milestones and extraction statistics (pure).

Frames and their grain:

* step aggregate (input, one per tracked step 2..n, as the source database
  returned it): one row per distinct entity-id value among the step's
  matching records (NULL included: records whose entity column is NULL or
  whose ``via`` key has no match). Columns ``entity_id``, ``first_at``,
  ``last_at`` (earliest/newest timestamp before as_of_end), ``records``
  (records with a timestamp before as_of_end), ``null_timestamps`` (records
  whose timestamp is NULL or unreadable), ``newest_any`` (the newest timestamp
  of all, as_of_end or later included).
* ``milestones`` (output): one row per known entity per step:
  ``step``, ``entity_id``, ``reached_at``.
* ``stats`` (output): one row per tracked step 2..n: ``step``, ``source``,
  ``table``, ``records``, ``orphan_records`` (records before as_of_end of no
  known entity, NULL ids included), ``null_entity_records`` (of those, the
  records whose entity id is NULL; for a ``via`` step, NULL after the join: a
  NULL foreign key or one the ``via`` table does not hold), ``null_timestamps``, ``newest``: the newest
  matching record the source holds up to the run's clock (``now``), records at
  or after as_of_end included (they prove the source is loaded; a backfill of
  an old date must not look stale because a low-volume table had a quiet day),
  but never one dated after ``now + FUTURE_TOLERANCE``: a record in year 9999
  must not make a stale source look fresh; ``future_entities``: how many
  entities have records dated after that, and ``newest_future`` the latest of
  them (NaT when none). Such records are never counted (they lie after
  as_of_end).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from framework.config import FrameworkConfig
from framework.engine import normalize_ids

AGGREGATE_COLUMNS = ["entity_id", "first_at", "last_at", "records", "null_timestamps", "newest_any"]
STATS_COLUMNS = [
    "step", "source", "table", "records", "orphan_records", "null_entity_records", "null_timestamps", "newest",
    "future_entities", "newest_future",
]
# A record dated later than the run's clock plus this is "in the future" (clocks of different
# systems disagree by seconds, not hours).
FUTURE_TOLERANCE = timedelta(hours=1)


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC at microsecond resolution (naive taken as UTC, unreadable -> NaT)."""
    s = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return s.astype("datetime64[us, UTC]")


def assemble(
    cfg: FrameworkConfig, entities: pd.DataFrame, aggregates: dict[str, pd.DataFrame],
    now: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each step aggregate into milestones of known entities and orphan counts.

    ``now``: the run's clock (default: the current time, UTC), which tells records dated in
    the future from late-loaded ones (see ``stats`` above).

    Vectorised: ids are matched with one hash lookup per step (no Python sets, no object arrays).
    """
    future_after = pd.Timestamp(now or datetime.now(UTC)) + FUTURE_TOLERANCE
    if future_after.tzinfo is None:
        future_after = future_after.tz_localize("UTC")
    known = normalize_ids(entities["entity_id"].dropna())
    known_text: pd.Series | None = None
    frames, rows = [], []
    for step in cfg.tracked_steps[1:]:
        agg = aggregates.get(step.key)
        if agg is None:
            agg = pd.DataFrame(columns=AGGREGATE_COLUMNS)
        ids = agg["entity_id"]
        present = ids.notna().to_numpy()
        ids_norm = normalize_ids(ids[present])
        if ids_norm.dtype != known.dtype:
            if known_text is None:
                known_text = known.astype("string")
            ids_norm, known_cmp = ids_norm.astype("string"), known_text
        else:
            known_cmp = known
        is_known = np.zeros(len(agg), dtype=bool)
        is_known[present] = ids_norm.isin(known_cmp).to_numpy(dtype=bool)
        records = agg["records"].fillna(0).astype("int64").to_numpy()
        first = to_utc(agg["first_at"])
        ok = is_known & first.notna().to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "step": step.key,
                    "entity_id": agg["entity_id"].to_numpy()[ok],
                    "reached_at": first[ok].reset_index(drop=True),
                }
            )
        )
        newest = to_utc(agg["newest_any"])
        future = (newest > future_after).to_numpy(dtype=bool)
        # The newest plausible record: an entity with a future record still has its newest
        # record before as_of_end (last_at), which is never in the future.
        plausible = pd.concat([newest[~future], to_utc(agg["last_at"])], ignore_index=True)
        rows.append(
            {
                "step": step.key,
                "source": step.source,
                "table": step.table,
                "records": int(records.sum()),
                "orphan_records": int(records[~is_known].sum()),
                "null_entity_records": int(records[~present].sum()),
                "null_timestamps": int(agg["null_timestamps"].fillna(0).astype("int64").sum()),
                "newest": plausible.max() if plausible.notna().any() else pd.NaT,
                "future_entities": int(future.sum()),
                "newest_future": newest[future].max() if future.any() else pd.NaT,
            }
        )
    milestones = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["step", "entity_id", "reached_at"])
    )
    milestones["reached_at"] = pd.to_datetime(milestones["reached_at"], utc=True)
    # the step as a categorical: later selections and renames of steps cost per step, not per row
    keys = [s.key for s in cfg.tracked_steps[1:]]
    milestones["step"] = pd.Categorical.from_codes(
        np.repeat(np.arange(len(frames), dtype=np.int32), [len(f) for f in frames]), categories=keys
    ) if frames else pd.Categorical([], categories=keys)
    stats = pd.DataFrame(rows, columns=STATS_COLUMNS)
    stats["newest"] = pd.to_datetime(stats["newest"], utc=True)
    stats["newest_future"] = pd.to_datetime(stats["newest_future"], utc=True)
    return milestones, stats


# ---- incremental extraction ---------------------------------------------------------


def step_definition(cfg: FrameworkConfig, key: str) -> str:
    """A short hash of everything that decides a step's milestones (its source, table, columns,
    join and filters, and the entity's id). Stored milestones and watermarks are keyed by
    ``<step>#<hash>``: a changed definition starts from scratch instead of merging stale times."""
    import hashlib
    import json

    step = cfg.step(key)
    basis = {
        "entity": [cfg.entity.source, cfg.entity.table, cfg.entity.id],
        "step": step.model_dump(include={"source", "table", "entity_id", "timestamp", "via", "where"}),
    }
    digest = hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{key}#{digest}"


def ids_as_text(values: pd.Series) -> pd.Series:
    """Entity ids as the store keeps them: text, integral numbers without a decimal part."""
    return normalize_ids(values).astype("string").astype(object)


_CANONICAL_INT = r"0|-?[1-9][0-9]{0,18}"


def int_keys(values: pd.Series) -> np.ndarray | None:
    """Text ids as int64 when every one is the canonical text of an integer ("42", not "042"
    or "4.2"), so that comparing the integers is comparing the texts; else None."""
    s = pd.Series(values)
    if pd.api.types.is_integer_dtype(s.dtype) and not s.isna().any():
        return s.to_numpy(dtype=np.int64)
    if not len(s):
        return np.array([], dtype=np.int64)
    if not pd.api.types.is_string_dtype(s.dtype):
        s = s.astype("str")
    if not bool(s.str.fullmatch(_CANONICAL_INT).fillna(False).all()):
        return None
    try:  # the text parsed in C when the strings are Arrow-backed
        import pyarrow as pa
        import pyarrow.compute as pc

        return np.asarray(pc.cast(pa.array(s.array), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    except Exception:  # noqa: BLE001 - not Arrow-backed, or beyond int64: the slow path decides
        try:
            return s.astype("int64").to_numpy()
        except (ValueError, OverflowError, TypeError):
            return None


def _keys(stored: pd.Series, fresh: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids of both frames as comparable keys, equal exactly when their text is equal: int64 when
    every id is an integer (the store's text ids when each is the canonical text of one), else
    text (``ids_as_text``)."""
    f = normalize_ids(fresh) if len(fresh) else pd.Series([], dtype="int64")
    s = pd.Series(stored).reset_index(drop=True)
    if pd.api.types.is_integer_dtype(f.dtype) and not f.isna().any():
        if not len(s):
            return pd.Series([], dtype="int64"), f.astype("int64")
        ints = int_keys(s)
        if ints is not None:
            return pd.Series(ints), f.astype("int64")
    return ids_as_text(s).astype("string"), ids_as_text(fresh).astype("string")


def _micros(values: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch microseconds (NaT as numpy's NaT integer)."""
    return np.asarray(pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]").dt.tz_localize(None)).view("int64")


def _first_per_id(ids: np.ndarray, us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One entry per id, the earliest time (ids already unique: unchanged)."""
    index = pd.Index(ids)
    if index.is_unique:
        return ids, us
    order = np.lexsort((us,))
    keep = ~pd.Index(ids[order]).duplicated(keep="first")
    return ids[order][keep], us[order][keep]


def _step_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, list]:
    """Codes of two step columns over their common, sorted step names (one hash per column)."""
    a_codes, a_names = pd.factorize(a)
    b_codes, b_names = pd.factorize(b)
    names = sorted(set(a_names.tolist()) | set(b_names.tolist()))
    position = {name: i for i, name in enumerate(names)}
    a_map = np.array([position[n] for n in a_names.tolist()] + [-1], dtype=np.int64)
    b_map = np.array([position[n] for n in b_names.tolist()] + [-1], dtype=np.int64)
    return a_map[a_codes], b_map[b_codes], names


def merge_milestones(stored: pd.DataFrame, fresh: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge stored milestones with freshly read ones: the earlier time wins.

    Both frames: ``step``, ``entity_id``, ``reached_at`` (UTC). Returns ``(merged, changed)``:
    ``merged`` one row per (step, entity) for the engine; ``changed`` the rows that are new or
    earlier than stored, which is all the store needs to write (on a tie the stored row
    stands). Ids are compared as text (the store keeps them as text); both frames carry them
    as integers when every id is an integer, else as text.

    Grain of the work: per step, one hash lookup of the fresh ids in the stored ids, so an
    incremental run costs O(stored + fresh), not a sort of everything.
    """
    s_ids, f_ids = _keys(stored["entity_id"], fresh["entity_id"])
    s_step, f_step, names = _step_codes(stored["step"], fresh["step"])
    s_id, f_id = s_ids.to_numpy(dtype=object if s_ids.dtype == "string" else None), f_ids.to_numpy(
        dtype=object if f_ids.dtype == "string" else None
    )
    s_us, f_us = _micros(stored["reached_at"]), _micros(fresh["reached_at"])
    out_step, out_id, out_us, ch_step, ch_id, ch_us = [], [], [], [], [], []
    for code in range(len(names)):
        old_id, old_us = _first_per_id(s_id[s_step == code], s_us[s_step == code])
        new_id, new_us = _first_per_id(f_id[f_step == code], f_us[f_step == code])
        pos = pd.Index(old_id).get_indexer(new_id) if len(old_id) else np.full(len(new_id), -1)
        found = pos >= 0
        earlier = np.zeros(len(new_id), dtype=bool)
        earlier[found] = new_us[found] < old_us[pos[found]]
        merged_us = old_us.copy()
        merged_us[pos[earlier]] = new_us[earlier]
        added = ~found
        out_id += [old_id, new_id[added]]
        out_us += [merged_us, new_us[added]]
        out_step.append(np.full(len(old_id) + int(added.sum()), code))
        write = earlier | added
        ch_id.append(new_id[write])
        ch_us.append(new_us[write])
        ch_step.append(np.full(int(write.sum()), code))

    def frame(step_codes: list, ids: list, us: list) -> pd.DataFrame:
        dtype = object if s_ids.dtype == "string" else "int64"
        id_values = np.concatenate(ids) if ids else np.array([], dtype=dtype)
        times = np.concatenate(us) if us else np.array([], dtype="int64")
        codes = np.concatenate(step_codes) if step_codes else np.array([], dtype="int64")
        return pd.DataFrame({
            "step": pd.Categorical.from_codes(codes.astype(np.int32), categories=names) if len(names)
            else pd.Categorical([]),
            "entity_id": pd.Series(id_values, dtype="string" if s_ids.dtype == "string" else "int64"),
            "reached_at": pd.Series(times.view("datetime64[us]")).dt.tz_localize("UTC"),
        })

    return frame(out_step, out_id, out_us), frame(ch_step, ch_id, ch_us)

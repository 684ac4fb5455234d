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
  ``table``, ``records``, ``orphan_records``, ``null_timestamps``, ``newest``:
  the newest matching record the source holds, records at or after as_of_end
  included (they prove the source is loaded; a backfill of an old date must
  not look stale because a low-volume table had a quiet day).
"""

from __future__ import annotations

import pandas as pd

from framework.config import FrameworkConfig
from framework.engine import normalize_ids

AGGREGATE_COLUMNS = ["entity_id", "first_at", "last_at", "records", "null_timestamps", "newest_any"]


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC at microsecond resolution (naive taken as UTC, unreadable -> NaT)."""
    s = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return s.astype("datetime64[us, UTC]")


def assemble(
    cfg: FrameworkConfig, entities: pd.DataFrame, aggregates: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each step aggregate into milestones of known entities and orphan counts."""
    known = normalize_ids(entities["entity_id"].dropna())
    frames, rows = [], []
    for step in cfg.tracked_steps[1:]:
        agg = aggregates.get(step.key)
        if agg is None:
            agg = pd.DataFrame(columns=AGGREGATE_COLUMNS)
        ids = agg["entity_id"]
        present = ids.notna().to_numpy()
        ids_norm = normalize_ids(ids[present])
        if ids_norm.dtype != known.dtype:
            ids_norm, known_cmp = ids_norm.astype("string"), known.astype("string")
        else:
            known_cmp = known
        is_known = pd.Series(False, index=agg.index)
        is_known.loc[agg.index[present]] = ids_norm.isin(set(known_cmp.tolist())).to_numpy()
        records = agg["records"].fillna(0).astype("int64")
        first = to_utc(agg["first_at"])
        ok = is_known.to_numpy() & first.notna().to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "step": step.key,
                    "entity_id": agg.loc[ok, "entity_id"].to_numpy(),
                    "reached_at": first[ok].to_numpy(),
                }
            )
        )
        newest = to_utc(agg["newest_any"])
        rows.append(
            {
                "step": step.key,
                "source": step.source,
                "table": step.table,
                "records": int(records.sum()),
                "orphan_records": int(records[~is_known.to_numpy()].sum()),
                "null_timestamps": int(agg["null_timestamps"].fillna(0).astype("int64").sum()),
                "newest": newest.max() if newest.notna().any() else pd.NaT,
            }
        )
    milestones = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["step", "entity_id", "reached_at"])
    )
    milestones["reached_at"] = pd.to_datetime(milestones["reached_at"], utc=True)
    stats = pd.DataFrame(
        rows, columns=["step", "source", "table", "records", "orphan_records", "null_timestamps", "newest"]
    )
    stats["newest"] = pd.to_datetime(stats["newest"], utc=True)
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


def merge_milestones(stored: pd.DataFrame, fresh: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge stored milestones with freshly read ones: the earlier time wins.

    Both frames: ``step``, ``entity_id``, ``reached_at`` (UTC). Returns ``(merged, changed)``:
    ``merged`` one row per (step, entity) for the engine; ``changed`` the rows that are new or
    earlier than stored, which is all the store needs to write. Ids are compared as text.
    """
    cols = ["step", "entity_id", "reached_at"]
    s = stored[cols].assign(entity_id=ids_as_text(stored["entity_id"]), _new=False)
    f = fresh[cols].assign(entity_id=ids_as_text(fresh["entity_id"]), _new=True)
    both = pd.concat([s, f], ignore_index=True)
    both["reached_at"] = pd.to_datetime(both["reached_at"], utc=True).astype("datetime64[us, UTC]")
    # earliest first; on a tie the stored row wins (nothing to write)
    both = both.sort_values(["step", "entity_id", "reached_at", "_new"], kind="stable")
    merged = both.drop_duplicates(["step", "entity_id"], keep="first")
    changed = merged[merged["_new"]]
    return merged[cols].reset_index(drop=True), changed[cols].reset_index(drop=True)

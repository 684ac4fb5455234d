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


def _utc(values: pd.Series) -> pd.Series:
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
        first = _utc(agg["first_at"])
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
        newest = _utc(agg["newest_any"])
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

"""framework.milestones.merge_milestones against a plain pandas statement of the same rule:
per (step, entity) the earlier time wins; ``changed`` holds what is new or earlier than stored."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.milestones import merge_milestones

BASE = pd.Timestamp("2026-01-01", tz="UTC")

rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 12), st.integers(0, 50)), max_size=40
)


def frame(data: list[tuple[str, int, int]], text_ids: bool) -> pd.DataFrame:
    ids = [str(i) if text_ids else i for _, i, _ in data]
    return pd.DataFrame({
        "step": [s for s, _, _ in data],
        "entity_id": pd.Series(ids, dtype=object if text_ids else "int64"),
        "reached_at": pd.Series([BASE + pd.Timedelta(hours=h) for _, _, h in data], dtype="datetime64[ns, UTC]"),
    })


def as_set(f: pd.DataFrame) -> set[tuple[str, str, pd.Timestamp]]:
    return {(str(s), str(i), pd.Timestamp(t)) for s, i, t in zip(f["step"], f["entity_id"], f["reached_at"], strict=True)}


@settings(max_examples=200, deadline=None)
@given(stored_rows=rows, fresh_rows=rows, drop=st.sets(st.sampled_from(["a", "b", "c"])), text_ids=st.booleans())
def test_merge_is_the_earliest_time_per_step_and_entity(stored_rows, fresh_rows, drop, text_ids) -> None:
    stored_all = frame(stored_rows, text_ids)
    # the flow filters out stored steps whose definition changed: the index has gaps
    stored = stored_all[~stored_all["step"].isin(list(drop))]
    fresh = frame(fresh_rows, text_ids)
    merged, changed = merge_milestones(stored, fresh)

    both = pd.concat([stored.assign(entity_id=stored["entity_id"].astype(str)),
                      fresh.assign(entity_id=fresh["entity_id"].astype(str))])
    expected = both.groupby(["step", "entity_id"], as_index=False)["reached_at"].min()
    assert as_set(merged) == as_set(expected)
    assert len(merged) == len(expected)  # one row per (step, entity)

    old = stored.assign(entity_id=stored["entity_id"].astype(str)).groupby(["step", "entity_id"])["reached_at"].min()
    new = fresh.assign(entity_id=fresh["entity_id"].astype(str)).groupby(["step", "entity_id"])["reached_at"].min()
    expected_changed = {(s, i, t) for (s, i), t in new.items() if (s, i) not in old.index or t < old[(s, i)]}
    assert as_set(changed) == expected_changed

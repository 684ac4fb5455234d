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


def test_assemble_counts_future_records_and_keeps_them_out_of_freshness() -> None:
    from datetime import datetime

    from framework.config import parse_config
    from framework.milestones import FUTURE_TOLERANCE, assemble

    cfg = parse_config(
        """
name: t
sources: {app: {url: "sqlite://"}}
entity: {name: user, source: app, table: users, id: id, created_at: created_at}
steps:
  - {key: signup, name: Sign up, entity_created: true}
  - {key: team, name: Make a team, source: app, table: teams, entity_id: owner, timestamp: made_at}
""",
        env={},
    )
    now = datetime(2026, 12, 4, 8, 0)  # naive: taken as UTC
    t = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    entities = pd.DataFrame({"entity_id": [1, 2, 3], "created_at": [t("2026-11-01")] * 3})
    agg = pd.DataFrame({
        # entity 1: newest record 1 h after the clock (within the tolerance: not future)
        # entity 2: a record in 9999, its newest before as_of_end (last_at) is Nov 20
        # entity 3: only a future record; NULL id: 2 records
        "entity_id": pd.Series([1, 2, 3, None], dtype="Int64"),
        "first_at": [t("2026-11-02"), t("2026-11-03"), pd.NaT, t("2026-11-05")],
        "last_at": [t("2026-11-02"), t("2026-11-20"), pd.NaT, t("2026-11-05")],
        "records": [1, 2, 0, 2],
        "null_timestamps": [0, 0, 0, 0],
        "newest_any": [t("2026-12-04T08:00") + FUTURE_TOLERANCE, t("9999-12-31"), t("2027-01-01"), t("2026-11-05")],
    })
    milestones, stats = assemble(cfg, entities, {"team": agg}, now=now)
    row = stats.iloc[0]
    assert row.future_entities == 2  # entities 2 and 3
    assert row.newest_future == t("9999-12-31")
    assert row.newest == t("2026-12-04T09:00")  # entity 1's record, not 9999
    assert (row.records, row.orphan_records, row.null_entity_records) == (5, 2, 2)
    assert sorted(milestones["entity_id"].tolist()) == [1, 2]  # entity 3 reached nothing before as_of_end
    # a clock a day later: entity 1's record is no longer in the future, the rest still is
    _, later = assemble(cfg, entities, {"team": agg}, now=datetime(2026, 12, 5, 8, 0))
    assert later.iloc[0].future_entities == 2 and later.iloc[0].newest == t("2026-12-04T09:00")
    _, earlier = assemble(cfg, entities, {"team": agg}, now=datetime(2026, 12, 3, 8, 0))
    assert earlier.iloc[0].future_entities == 3 and earlier.iloc[0].newest == t("2026-11-20")

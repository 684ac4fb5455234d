"""Milestones stored as one compressed set per framework x step (``gf_milestone_sets``,
revision 0004): the rows of ``gf_milestones`` (revision 0003) survive the upgrade and the
downgrade exactly, and merges keep the earliest time per entity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from tasks.store import (
    MetricStore,
    _make_engine,
    _migration_config,
    _write_connection,
    decode_milestones,
    encode_milestones,
    migrate,
)

FW = "Sets Framework"
# (step, entity_id, reached_at) as a 0003 store holds them: ids as text, times in UTC
ROWS = [
    ("paid#abc", "1", datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
    ("paid#abc", "17", datetime(2026, 2, 1, tzinfo=UTC)),
    ("workspace#def", "1", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("workspace#def", "u-9", datetime(2026, 3, 1, 12, tzinfo=UTC)),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url, schema = request.getfixturevalue("pg_schema")
    return f"{url}?options=-csearch_path%3D{schema}"


def _as_set(frame: pd.DataFrame) -> set[tuple[str, str, pd.Timestamp]]:
    return {(r.step, r.entity_id, pd.Timestamp(r.reached_at)) for r in frame.itertuples()}


def test_upgrade_to_sets_and_back_keeps_every_milestone(store_url: str) -> None:
    migrate(store_url, "0003")
    engine = sa.create_engine(store_url)
    old = sa.table("gf_milestones", sa.column("framework"), sa.column("step"), sa.column("entity_id"),
                   sa.column("reached_at", sa.DateTime(timezone=True)))
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            conn.execute(old.insert(), [
                {"framework": f, "step": s, "entity_id": i, "reached_at": t.replace(tzinfo=None) if sqlite else t}
                for f in (FW, "Other") for s, i, t in ROWS
            ])
    finally:
        engine.dispose()

    with MetricStore.open(store_url) as store:  # upgrades to head: 0004 moves the rows into sets
        assert _as_set(store.load_milestones(FW)) == {(s, i, pd.Timestamp(t)) for s, i, t in ROWS}
        assert len(store.load_milestones("Other")) == len(ROWS)
        engine = store.engine
        with engine.connect() as conn:
            assert "gf_milestones" not in sa.inspect(conn).get_table_names()
            counts = dict(conn.execute(sa.text(
                "SELECT step, entities FROM gf_milestone_sets WHERE framework = :f"), {"f": FW}).all())
        assert counts == {"paid#abc": 2, "workspace#def": 2}

    engine = _make_engine(store_url)
    try:
        with _write_connection(engine) as conn, conn.begin():
            command.downgrade(_migration_config(conn), "0003")
        with engine.connect() as conn:
            back = conn.execute(sa.select(old.c.step, old.c.entity_id, old.c.reached_at)
                                .where(old.c.framework == FW)).all()
    finally:
        engine.dispose()
    assert {(s, i, pd.Timestamp(t).tz_localize("UTC") if pd.Timestamp(t).tz is None else pd.Timestamp(t))
            for s, i, t in back} == {(s, i, pd.Timestamp(t)) for s, i, t in ROWS}


def test_payload_round_trip_is_exact() -> None:
    ids = pd.Series(["1", "0042", "u-9", "é"])
    reached = pd.Series(pd.to_datetime([
        "2026-01-02 03:04:05.678901", "1970-01-01 00:00:00.000000", "2099-12-31 23:59:59.999999", "2026-06-01 00:00:00.000001",
    ], utc=True))
    got_ids, got_at = decode_milestones(encode_milestones(ids, reached))
    assert got_ids.tolist() == ids.tolist()
    assert got_at.tolist() == reached.tolist() and str(got_at.dtype) == "datetime64[us, UTC]"


def test_large_merge_keeps_the_earliest_time_per_entity(store_url: str) -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    base = pd.Timestamp("2026-01-01", tz="UTC")
    first = pd.DataFrame({"step": "runs", "entity_id": np.arange(n),
                          "reached_at": base + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")})
    later = pd.DataFrame({"step": "runs", "entity_id": rng.integers(0, 2 * n, n // 5),
                          "reached_at": base + pd.to_timedelta(rng.integers(0, 10**6, n // 5), unit="s")})
    with MetricStore.open(store_url) as store:
        store.upsert_milestones(FW, first)
        store.upsert_milestones(FW, later)
        got = store.load_milestones(FW)
    expected = pd.concat([first, later]).groupby("entity_id")["reached_at"].min()
    got = got.assign(entity_id=got["entity_id"].astype("int64")).set_index("entity_id")["reached_at"]
    assert len(got) == len(expected) and got.index.is_unique
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)

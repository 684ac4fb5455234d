"""Seeding the demo into SQLite: tables, row counts, meta, mixed timestamp text."""

from __future__ import annotations

import re
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from framework.demo import DemoData, generate_demo
from tasks.seed import read_demo_meta, seed_demo

END = date(2026, 3, 1)
N = 800
APP_TABLES = {"accounts", "workspaces", "deployments", "invitations", "subscriptions", "demo_meta"}

FORMATS = {
    "space": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"),
    "zulu": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"),
    "micro_utc": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$"),
    "plus_two": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+02:00$"),
}
DATETIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture(scope="module")
def frames() -> DemoData:
    return generate_demo(N, 7, end_date=END)


@pytest.fixture(scope="module")
def two_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, list]:
    root = tmp_path_factory.mktemp("seed")
    app, events = root / "app.db", root / "sub" / "events.db"  # a missing folder is created
    calls: list[tuple[str, int, int]] = []
    meta = seed_demo(
        f"sqlite:///{app}", f"sqlite:///{events}", accounts=N, seed=7, end_date=END,
        progress=lambda table, done, total: calls.append((table, done, total)),
    )
    return app, events, meta, calls


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as con:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_tables_and_row_counts_match_the_frames(two_dbs, frames: DemoData) -> None:
    app, events, _, _ = two_dbs
    assert _tables(app) == APP_TABLES
    assert _tables(events) == {"workspaces", "flow_runs"}
    for name, frame in frames.app.items():
        assert _count(app, name) == len(frame), name
    for name, frame in frames.events.items():
        assert _count(events, name) == len(frame), name


def test_demo_meta_is_readable(two_dbs, frames: DemoData) -> None:
    app, events, meta, _ = two_dbs
    assert meta == frames.meta
    assert read_demo_meta(f"sqlite:///{app}") == frames.meta
    assert read_demo_meta(f"sqlite:///{events}") is None


def test_progress_reports_every_table(two_dbs, frames: DemoData) -> None:
    *_, calls = two_dbs
    finals = {table: (done, total) for table, done, total in calls}
    expected = {f"app.{t}": len(f) for t, f in frames.app.items()}
    expected |= {f"events.{t}": len(f) for t, f in frames.events.items()}
    assert finals == {t: (n, n) for t, n in expected.items()}


def test_values_round_trip(two_dbs, frames: DemoData) -> None:
    app, events, _, _ = two_dbs
    with sqlite3.connect(app) as con:
        acc = pd.read_sql("SELECT * FROM accounts ORDER BY id", con)
        inv = pd.read_sql("SELECT * FROM invitations ORDER BY id", con)
    want = frames.app["accounts"]
    assert acc["email"].tolist() == want["email"].tolist()
    assert acc["origin"].isna().sum() == want["origin"].isna().sum() > 0
    assert acc["created_at"].map(DATETIME_TEXT.match).all()
    assert (pd.to_datetime(acc["created_at"]) == want["created_at"]).all()
    assert inv["accepted_at"].isna().sum() == frames.app["invitations"]["accepted_at"].isna().sum()
    with sqlite3.connect(events) as con:
        runs = pd.read_sql("SELECT id, deployment_id, state FROM flow_runs ORDER BY id", con)
    assert runs["deployment_id"].isna().sum() == frames.events["flow_runs"]["deployment_id"].isna().sum()
    assert runs["state"].tolist() == frames.events["flow_runs"]["state"].astype(str).tolist()


def test_start_time_text_mixes_four_formats(two_dbs, frames: DemoData) -> None:
    _, events, _, _ = two_dbs
    with sqlite3.connect(events) as con:
        rows = con.execute(
            "SELECT id, start_time, strftime('%Y-%m-%d %H:%M:%f', start_time) FROM flow_runs ORDER BY id"
        ).fetchall()
    want = frames.events["flow_runs"].set_index("id")["start_time"]
    seen = dict.fromkeys(FORMATS, 0)
    nulls = 0
    for run_id, text, parsed in rows:
        if text is None:
            nulls += 1
            assert parsed is None and pd.isna(want[run_id])
            continue
        kinds = [k for k, rx in FORMATS.items() if rx.match(text)]
        assert len(kinds) == 1, text
        seen[kinds[0]] += 1
        instant = want[run_id]
        # SQLite's strftime gives the UTC instant (to the millisecond), whatever the spelling.
        assert abs(pd.Timestamp(parsed) - instant) <= pd.Timedelta(microseconds=500), text
        if kinds[0] == "plus_two":
            assert parsed == instant.strftime("%Y-%m-%d %H:%M:%S.000")
            local = (instant + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
            assert text == local
    assert nulls == frames.events["flow_runs"]["start_time"].isna().sum() > 0
    assert all(count > 0 for count in seen.values()), seen


def test_duplicated_runs_share_one_spelling(two_dbs) -> None:
    _, events, _, _ = two_dbs
    with sqlite3.connect(events) as con:
        (spellings,) = con.execute(
            "SELECT MAX(n) FROM (SELECT COUNT(DISTINCT start_time) AS n FROM flow_runs "
            "WHERE start_time IS NOT NULL "
            "GROUP BY workspace_id, strftime('%Y-%m-%d %H:%M:%f', start_time))"
        ).fetchone()
    assert spellings == 1


def test_single_database(tmp_path: Path, frames: DemoData) -> None:
    db = tmp_path / "demo.db"
    seed_demo(f"sqlite:///{db}", None, accounts=N, seed=7, end_date=END)
    assert _tables(db) == APP_TABLES | {"flow_runs"}
    assert _count(db, "workspaces") == len(frames.app["workspaces"])
    assert _count(db, "flow_runs") == len(frames.events["flow_runs"])
    # Same URL twice is one database too; reseeding replaces the previous demo.
    seed_demo(f"sqlite:///{db}", f"sqlite:///{db}", accounts=300, seed=7, end_date=END)
    assert _tables(db) == APP_TABLES | {"flow_runs"}
    assert _count(db, "accounts") == 300
    assert read_demo_meta(f"sqlite:///{db}")["accounts"] == "300"


def _server_checks(url: str, frames_small: DemoData, qualify: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for name, frame in frames_small.app.items():
                count = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {qualify}{name}").scalar_one()
                assert count == len(frame), name
            runs = pd.read_sql(
                sa.text(f"SELECT id, start_time FROM {qualify}flow_runs ORDER BY id"), conn
            )
            created = pd.read_sql(sa.text(f"SELECT created_at FROM {qualify}accounts ORDER BY id"), conn)
    finally:
        engine.dispose()
    want = frames_small.events["flow_runs"]["start_time"]
    got = pd.to_datetime(runs["start_time"], utc=True).dt.tz_localize(None).astype("datetime64[us]")
    pd.testing.assert_series_equal(got, want, check_names=False)  # NULLs and microseconds kept
    assert (created["created_at"].astype("datetime64[us]") == frames_small.app["accounts"]["created_at"]).all()


@pytest.mark.postgres
def test_postgresql_real_timestamps(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    seed_demo(scoped, None, accounts=300, seed=7, end_date=END)
    assert read_demo_meta(scoped)["accounts"] == "300"
    _server_checks(scoped, generate_demo(300, 7, end_date=END), f'"{schema}".')


@pytest.mark.mariadb
def test_mariadb_keeps_microseconds(mariadb_database: tuple[str, str]) -> None:
    url, database = mariadb_database
    scoped = url.rsplit("/", 1)[0] + f"/{database}"
    seed_demo(scoped, None, accounts=300, seed=7, end_date=END)
    assert read_demo_meta(scoped)["accounts"] == "300"
    _server_checks(scoped, generate_demo(300, 7, end_date=END), "")


# ---- bulk paths: the same data in every database ------------------------------------------

SMALL = 300


def _fingerprint_sql(table: str, frame: pd.DataFrame, dialect: str) -> dict[str, str]:
    """Aggregates of one table, as SQL expressions: counts, sums, distinct labels, time range."""
    exprs = {"rows": "COUNT(*)"}
    for column, dtype in frame.dtypes.items():
        exprs[f"{column}:n"] = f"COUNT({column})"
        if pd.api.types.is_datetime64_any_dtype(dtype):
            ts = column
            if dialect == "sqlite" and (table, column) == ("flow_runs", "start_time"):
                ts = f"strftime('%Y-%m-%d %H:%M:%f', {column})"  # mixed ISO spellings
            exprs[f"{column}:min"], exprs[f"{column}:max"] = f"MIN({ts})", f"MAX({ts})"
        elif pd.api.types.is_integer_dtype(dtype):
            exprs[f"{column}:sum"] = f"SUM({column})"
        else:
            exprs[f"{column}:distinct"] = f"COUNT(DISTINCT {column})"
            exprs[f"{column}:length"] = f"SUM(LENGTH({column}))"
    return exprs


def _normal(key: str, value: object) -> object:
    if value is None:
        return None
    if key.endswith((":min", ":max")):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_convert("UTC").tz_localize(None) if stamp.tz is not None else stamp
        return stamp.round("ms")  # SQLite reads the mixed start_time text at millisecond precision
    return int(value)


def _fingerprint(url: str, frames: DemoData) -> dict[str, dict[str, object]]:
    engine = sa.create_engine(url)
    out = {}
    try:
        with engine.connect() as conn:
            for table, frame in {**frames.app, "flow_runs": frames.events["flow_runs"]}.items():
                exprs = _fingerprint_sql(table, frame, engine.dialect.name)
                row = conn.exec_driver_sql(f"SELECT {', '.join(exprs.values())} FROM {table}").one()
                out[table] = {k: _normal(k, v) for k, v in zip(exprs, row, strict=True)}
    finally:
        engine.dispose()
    return out


def _expected_fingerprint(frames: DemoData) -> dict[str, dict[str, object]]:
    out = {}
    for table, frame in {**frames.app, "flow_runs": frames.events["flow_runs"]}.items():
        got: dict[str, object] = {"rows": len(frame)}
        for column, dtype in frame.dtypes.items():
            s = frame[column]
            got[f"{column}:n"] = int(s.notna().sum())
            if pd.api.types.is_datetime64_any_dtype(dtype):
                got[f"{column}:min"], got[f"{column}:max"] = s.min().round("ms"), s.max().round("ms")
            elif pd.api.types.is_integer_dtype(dtype):
                got[f"{column}:sum"] = int(s.sum())
            else:
                text = s.dropna().astype(str)
                got[f"{column}:distinct"] = text.nunique()
                got[f"{column}:length"] = int(text.str.len().sum()) if len(text) else None
        out[table] = got
    return out


def _seed_recording(url: str) -> dict[str, tuple[int, int]]:
    calls: list[tuple[str, int, int]] = []
    seed_demo(url, None, accounts=SMALL, seed=7, end_date=END,
              progress=lambda table, done, total: calls.append((table, done, total)))
    for table in {t for t, _, _ in calls}:  # progress only moves forward, up to the total
        done = [d for t, d, _ in calls if t == table]
        assert done == sorted(done), table
    return {table: (done, total) for table, done, total in calls}


@pytest.fixture(scope="module")
def small_frames() -> DemoData:
    return generate_demo(SMALL, 7, end_date=END)


@pytest.fixture(scope="module")
def sqlite_fingerprint(tmp_path_factory: pytest.TempPathFactory, small_frames: DemoData) -> dict:
    url = f"sqlite:///{tmp_path_factory.mktemp('bulk') / 'demo.db'}"
    finals = _seed_recording(url)
    assert finals == _expected_progress(small_frames)
    return _fingerprint(url, small_frames)


def _expected_progress(frames: DemoData) -> dict[str, tuple[int, int]]:
    expected = {f"app.{t}": (len(f), len(f)) for t, f in frames.app.items()}
    n = len(frames.events["flow_runs"])
    return expected | {"events.flow_runs": (n, n)}


def test_sqlite_bulk_path_writes_the_frames(sqlite_fingerprint: dict, small_frames: DemoData) -> None:
    assert sqlite_fingerprint == _expected_fingerprint(small_frames)


@pytest.mark.postgres
def test_postgresql_copy_writes_what_sqlite_holds(
    pg_schema: tuple[str, str], sqlite_fingerprint: dict, small_frames: DemoData
) -> None:
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    assert _seed_recording(scoped) == _expected_progress(small_frames)
    assert _fingerprint(scoped, small_frames) == sqlite_fingerprint
    engine = sa.create_engine(scoped)
    try:
        with engine.connect() as conn:  # primary keys (added after COPY) and the secondary indexes
            indexes = {r[0] for r in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %(s)s", {"s": schema})}
    finally:
        engine.dispose()
    tables = [*small_frames.app, "flow_runs", "demo_meta"]
    assert {f"{t}_pkey" for t in tables} <= indexes
    assert {"ix_flow_runs_workspace_id", "ix_flow_runs_start_time", "ix_invitations_account_id"} <= indexes
    seed_demo(scoped, None, accounts=SMALL, seed=7, end_date=END)  # reseeding replaces the load
    assert _fingerprint(scoped, small_frames) == sqlite_fingerprint


@pytest.mark.mariadb
def test_mariadb_batched_inserts_write_what_sqlite_holds(
    mariadb_database: tuple[str, str], sqlite_fingerprint: dict, small_frames: DemoData
) -> None:
    url, database = mariadb_database
    scoped = url.rsplit("/", 1)[0] + f"/{database}"
    assert _seed_recording(scoped) == _expected_progress(small_frames)
    assert _fingerprint(scoped, small_frames) == sqlite_fingerprint


@pytest.mark.postgres
def test_postgresql_copy_encodes_edge_values(pg_schema: tuple[str, str]) -> None:
    """Binary COPY of the value kinds the writer knows: NULLs of each, non-ASCII and empty
    text, int4 limits, times before 2000 and with microseconds, aware timestamps."""
    from datetime import UTC, datetime

    from tasks.seed import _WRITERS

    url, schema = pg_schema
    table = sa.Table(
        "edge", sa.MetaData(),
        sa.Column("id", sa.BigInteger), sa.Column("small", sa.Integer), sa.Column("note", sa.Text),
        sa.Column("label", sa.Text), sa.Column("at", sa.DateTime), sa.Column("at_tz", sa.DateTime(timezone=True)),
        sa.Column("ref", sa.BigInteger),
    )
    at = [datetime(1999, 12, 31, 23, 59, 59, 999999), None, datetime(2026, 3, 1, 0, 0, 0, 1)]
    frame = pd.DataFrame({
        "id": [-(2**63), 0, 2**63 - 1],
        "small": [-(2**31), 0, 2**31 - 1],
        "note": pd.array(["héllo ✓ \"quoted\"\\", "", None], dtype="str"),
        "label": pd.Categorical(["a", None, "ünï"]),
        "at": pd.to_datetime(at).astype("datetime64[us]"),
        "at_tz": pd.to_datetime(at).tz_localize("UTC").tz_convert("Europe/Berlin"),
        "ref": pd.array([None, 7, -1], dtype="Int64"),
    })
    ticks: list[tuple[int, int]] = []
    engine = sa.create_engine(f"{url}?options=-csearch_path%3D{schema}")
    try:
        with engine.begin() as conn:
            table.create(conn)
            _WRITERS["postgresql"](conn, table, frame, lambda done, total: ticks.append((done, total)))
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TIME ZONE 'UTC'")
            rows = conn.execute(sa.select(table).order_by(table.c.small)).all()
    finally:
        engine.dispose()
    assert ticks == [(3, 3)]
    assert [tuple(r) for r in rows] == [
        (-(2**63), -(2**31), "héllo ✓ \"quoted\"\\", "a", at[0], at[0].replace(tzinfo=UTC), None),
        (0, 0, "", None, None, None, 7),
        (2**63 - 1, 2**31 - 1, None, "ünï", at[2], at[2].replace(tzinfo=UTC), -1),
    ]

"""The same small schema and rows as test_extract_sqlite, loaded into PostgreSQL and MariaDB
with native timestamp types and schema-qualified tables: the milestones, stats and metrics
must equal SQLite's exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from framework.engine import compute
from tests.integration.test_extract_sqlite import (
    AS_OF,
    FRAMEWORK,
    JOBS,
    TEAM_DIM,
    TEAMS,
    USERS,
    _make,
    _run,
)

pytestmark = pytest.mark.integration



def _as_utc_datetime(text: str | None) -> datetime | None:
    if text is None:
        return None
    ts = pd.Timestamp(text)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _load(url: str, schema: str, aware: bool) -> None:
    """Create the four tables in ``schema`` with native types; aware=False stores naive UTC."""
    md = sa.MetaData(schema=schema)
    ts = sa.DateTime(timezone=aware)
    users = sa.Table("users", md, sa.Column("user_uuid", sa.String(20)), sa.Column("signed_up", ts),
                     sa.Column("channel", sa.String(20)))
    teams = sa.Table("teams", md, sa.Column("team_id", sa.Integer), sa.Column("owner", sa.String(20)),
                     sa.Column("made_at", sa.DateTime(timezone=False)))
    team_dim = sa.Table("team_dim", md, sa.Column("tid", sa.Integer), sa.Column("owner_uuid", sa.String(20)))
    jobs = sa.Table("jobs", md, sa.Column("job_id", sa.Integer), sa.Column("team_ref", sa.Integer),
                    sa.Column("kind", sa.String(20)), sa.Column("ran_at", ts))

    def t(text: str | None) -> datetime | None:
        value = _as_utc_datetime(text)
        return value if value is None or aware else value.replace(tzinfo=None)

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
        conn.execute(users.insert(), [dict(user_uuid=u, signed_up=t(s), channel=c) for u, s, c in USERS])
        conn.execute(teams.insert(), [dict(team_id=i, owner=o, made_at=t(m) and t(m).replace(tzinfo=None))
                                      for i, o, m in TEAMS])
        conn.execute(team_dim.insert(), [dict(tid=i, owner_uuid=o) for i, o in TEAM_DIM])
        conn.execute(jobs.insert(), [dict(job_id=i, team_ref=r, kind=k, ran_at=t(a)) for i, r, k, a in JOBS])
    engine.dispose()


def _qualified(schema: str) -> str:
    text = FRAMEWORK
    for table in ("users", "teams", "team_dim", "jobs"):
        text = text.replace(f"table: {table},", f"table: {schema}.{table},")
        text = text.replace(f"table: {table}\n", f"table: {schema}.{table}\n")
    return text


def _sqlite_reference(tmp_path: Path):
    crm, usage = f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'usage.db'}"
    _make(crm, ["CREATE TABLE users (user_uuid TEXT, signed_up TEXT, channel TEXT)",
                "CREATE TABLE teams (team_id INTEGER, owner TEXT, made_at TEXT)"],
          {"users": USERS, "teams": TEAMS})
    _make(usage, ["CREATE TABLE team_dim (tid INTEGER, owner_uuid TEXT)",
                  "CREATE TABLE jobs (job_id INTEGER, team_ref INTEGER, kind TEXT, ran_at TEXT)"],
          {"team_dim": TEAM_DIM, "jobs": JOBS})
    return _run({"CRM_URL": crm, "USAGE_URL": usage})


def _compare(reference, other) -> None:
    cfg, entities, milestones, stats = reference
    cfg2, entities2, milestones2, stats2 = other
    key = ["step", "entity_id"]
    pd.testing.assert_frame_equal(
        milestones.sort_values(key).reset_index(drop=True),
        milestones2.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    pd.testing.assert_frame_equal(stats.drop(columns="table"), stats2.drop(columns="table"), check_dtype=False)
    assert compute(entities, milestones, cfg, AS_OF).steps == compute(entities2, milestones2, cfg2, AS_OF).steps


@pytest.mark.postgres
def test_postgresql_matches_sqlite(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    _load(url, schema, aware=True)
    _compare(_sqlite_reference(tmp_path), _run({"CRM_URL": url, "USAGE_URL": url}, _qualified(schema)))


@pytest.mark.mariadb
def test_mariadb_matches_sqlite(tmp_path: Path, mariadb_database: tuple[str, str]) -> None:
    url, database = mariadb_database
    _load(url, database, aware=False)
    _compare(_sqlite_reference(tmp_path), _run({"CRM_URL": url, "USAGE_URL": url}, _qualified(database)))


def test_reference_helper_is_utc() -> None:
    assert _as_utc_datetime("2026-02-02T12:00:00+02:00") == datetime(2026, 2, 2, 10, tzinfo=UTC)

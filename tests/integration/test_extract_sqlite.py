"""Extraction on SQLite with a schema unlike the demo's: two databases, a ``via`` join,
text timestamps in mixed ISO formats, NULLs, orphans, duplicates and future records.

Every expected number is derived in a comment from the rows inserted below.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from framework.config import parse_config
from framework.engine import as_of_end, compute
from framework.errors import SchemaError, SourceError
from framework.milestones import assemble
from tasks import extract

AS_OF = date(2026, 3, 31)  # as_of_end = 2026-04-01 00:00 UTC

FRAMEWORK = """
name: Team funnel
sources:
  crm: {url: "${CRM_URL}"}
  usage: {url: "${USAGE_URL}"}
entity: {name: user, source: crm, table: users, id: user_uuid, created_at: signed_up, attributes: [channel]}
funnel: {window_days: 10, lookback_days: 60, min_sample: 1, history_cohorts: 3}
steps:
  - {key: signup, name: Sign up, entity_created: true}
  - {key: team, name: Make a team, source: crm, table: teams, entity_id: owner, timestamp: made_at}
  - {key: idea, name: Have an idea, tracked: false, proposed_metric: ideas per user}
  - key: job
    name: Run a job
    source: usage
    table: jobs
    timestamp: ran_at
    via: {table: team_dim, key: tid, foreign_key: team_ref, entity_id: owner_uuid}
    where: {kind: [batch, stream]}
"""

USERS = [
    # user_uuid, signed_up (mixed text formats), channel
    ("u1", "2026-02-01 10:00:00", "ads"),
    ("u2", "2026-02-01T10:00:00Z", "ads"),
    ("u3", "2026-02-02T12:00:00+02:00", "seo"),  # = 2026-02-02 10:00:00 UTC
    ("u4", "2026-02-03 08:30:00.250", None),  # channel missing -> "(none)"
    ("u5", "2026-04-01 00:00:00", "ads"),  # signs up exactly at as_of_end: invisible
    ("u6", None, "seo"),  # NULL signup time: not an entity of the funnel
]
TEAMS = [
    # team_id, owner, made_at
    (1, "u1", "2026-02-01 11:00:00"),  # u1: 1 h after signup
    (2, "u1", "2026-02-05 11:00:00"),  # duplicate team of u1: later, MIN keeps the first
    (3, "u2", "2026-02-11T10:00:00Z"),  # u2: exactly 10 days after signup -> inside the window
    (4, "u3", "2026-02-12 10:00:01"),  # u3: 10 days + 1 s -> outside the window
    (5, "u4", None),  # NULL timestamp: ignored, counted
    (6, "ghost", "2026-02-10 09:00:00"),  # orphan: unknown user
]
TEAM_DIM = [(1, "u1"), (2, "u1"), (3, "u2"), (4, "u3")]
JOBS = [
    # job_id, team_ref, kind, ran_at
    (10, 1, "batch", "2026-02-01T13:00:00+00:00"),  # u1: 3 h after signup
    (11, 1, "batch", "2026-02-01 12:00:00"),  # u1 earlier: 2 h after signup (MIN)
    (12, 3, "stream", "2026-02-01T11:30:00Z"),  # u2: 1.5 h after signup; before its team (journey skips)
    (13, 4, "adhoc", "2026-02-02 11:00:00"),  # u3: kind not in the where list
    (14, 99, "batch", "2026-02-03 10:00:00"),  # orphan: team 99 has no row in team_dim
    (15, 4, "batch", "2026-04-01 00:00:00"),  # u3: at as_of_end -> invisible
]


def _make(url: str, ddl: list[str], rows: dict[str, list[tuple]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for stmt in ddl:
            conn.exec_driver_sql(stmt)
        for table, values in rows.items():
            marks = ",".join("?" * len(values[0]))
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({marks})", values)
    engine.dispose()


@pytest.fixture()
def team_sources(tmp_path: Path) -> dict[str, str]:
    crm, usage = f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'usage.db'}"
    _make(
        crm,
        ["CREATE TABLE users (user_uuid TEXT, signed_up TEXT, channel TEXT)",
         "CREATE TABLE teams (team_id INTEGER, owner TEXT, made_at TEXT)"],
        {"users": USERS, "teams": TEAMS},
    )
    _make(
        usage,
        ["CREATE TABLE team_dim (tid INTEGER, owner_uuid TEXT)",
         "CREATE TABLE jobs (job_id INTEGER, team_ref INTEGER, kind TEXT, ran_at TEXT)"],
        {"team_dim": TEAM_DIM, "jobs": JOBS},
    )
    return {"CRM_URL": crm, "USAGE_URL": usage}


def _run(env: dict[str, str], text: str = FRAMEWORK, as_of: date = AS_OF):
    cfg = parse_config(text, "team.yaml", env)
    sources = extract.open_sources({n: s.url for n, s in cfg.sources.items()})
    try:
        extract.check_schema(cfg, sources)
        entities, aggregates = extract.extract_all(cfg, sources, as_of_end(as_of))
    finally:
        sources.dispose()
    milestones, stats = assemble(cfg, entities, aggregates)
    return cfg, entities, milestones, stats


def test_other_schema_two_databases_via_join(team_sources: dict[str, str]) -> None:
    cfg, entities, milestones, stats = _run(team_sources)
    # u5 (at as_of_end) is left in the database; u6 (NULL signup) is read for the quality gate
    assert sorted(entities["entity_id"].tolist()) == ["u1", "u2", "u3", "u4", "u6"]
    got = {(r.step, r.entity_id): r.reached_at for r in milestones.itertuples()}
    assert got == {
        ("team", "u1"): pd.Timestamp("2026-02-01 11:00:00", tz="UTC"),  # team 1, not the later team 2
        ("team", "u2"): pd.Timestamp("2026-02-11 10:00:00", tz="UTC"),
        ("team", "u3"): pd.Timestamp("2026-02-12 10:00:01", tz="UTC"),
        ("job", "u1"): pd.Timestamp("2026-02-01 12:00:00", tz="UTC"),  # MIN of jobs 10, 11
        ("job", "u2"): pd.Timestamp("2026-02-01 11:30:00", tz="UTC"),  # Z suffix read as UTC
    }
    team, job = stats.set_index("step").loc["team"], stats.set_index("step").loc["job"]
    # teams: 5 rows with a timestamp (1,2,3,4,6); team 6 is an orphan; team 5 has a NULL time
    assert (team.records, team.orphan_records, team.null_timestamps) == (5, 1, 0 + 1)
    # jobs matching the where list before as_of_end: 10, 11, 12, 14 -> 4; job 14's team is unknown
    assert (job.records, job.orphan_records, job.null_timestamps) == (4, 1, 0)
    assert team.newest == pd.Timestamp("2026-02-12 10:00:01", tz="UTC")
    # freshness sees every record the source holds: job 15 (at as_of_end, not a milestone) is the newest
    assert job.newest == pd.Timestamp("2026-04-01 00:00:00", tz="UTC")


def test_window_boundary_to_the_second_and_untracked_denominator(team_sources: dict[str, str]) -> None:
    cfg, entities, milestones, _ = _run(team_sources)
    result = compute(entities, milestones, cfg, AS_OF)
    # current period: signups in [as_of_end - 10 d - 60 d, as_of_end - 10 d) = [2026-01-21, 2026-03-22)
    # entities: u1, u2, u3, u4 (u5 invisible, u6 has no signup time) -> 4
    steps = {s.key: s for s in result.steps}
    assert steps["signup"].reached == 4
    # team within 10 days: u1 (1 h), u2 (exactly 10 d) -> 2; u3 is 1 s late
    assert (steps["team"].entered, steps["team"].reached) == (4, 2)
    assert steps["team"].conversion == pytest.approx(0.5)
    # job: u1 and u2 -> 2; denominator is the team step (the untracked 'idea' step is skipped)
    assert (steps["job"].entered, steps["job"].reached) == (2, 2)
    assert steps["idea"].entered is None and steps["idea"].tracked is False
    # segments: channel ads -> u1, u2; seo -> u3; (none) -> u4
    seg = {(r.value, r.step): r.reached for r in result.segments}
    assert seg[("ads", "team")] == 2 and seg[("seo", "team")] == 0 and seg[("(none)", "signup")] == 1


def test_unknown_table_and_column_name_step_source_and_existing_names(team_sources: dict[str, str]) -> None:
    bad = FRAMEWORK.replace("table: jobs", "table: job_runs").replace("owner, timestamp", "owner_id, timestamp")
    with pytest.raises(SchemaError) as err:
        _run(team_sources, bad)
    text = str(err.value)
    assert "steps[3] (job): source 'usage' has no table 'job_runs' (tables: jobs, team_dim)" in text
    assert "steps[1] (team): source 'crm' table 'teams' has no column 'owner_id'" in text
    assert "columns: made_at, owner, team_id" in text


def test_where_values_are_bound_parameters_not_sql(team_sources: dict[str, str]) -> None:
    hostile = FRAMEWORK.replace("kind: [batch, stream]", "kind: \"batch' OR '1'='1\"")
    cfg, entities, milestones, stats = _run(team_sources, hostile)
    assert milestones[milestones.step == "job"].empty  # no row has that literal kind
    engine = sa.create_engine(team_sources["USAGE_URL"])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == len(JOBS)
    engine.dispose()


def test_unreachable_source_is_a_source_error_without_password(tmp_path: Path) -> None:
    env = {"CRM_URL": "postgresql+psycopg://growth:s3cret@127.0.0.1:1/nowhere", "USAGE_URL": "sqlite://"}
    cfg = parse_config(FRAMEWORK, "team.yaml", env)
    sources = extract.open_sources({n: s.url for n, s in cfg.sources.items()})
    try:
        with pytest.raises(SourceError) as err:
            extract.check_schema(cfg, sources)
    finally:
        sources.dispose()
    assert "source 'crm'" in str(err.value) and "s3cret" not in str(err.value)
    assert err.value.transient


def test_future_records_and_null_ids_reach_the_gate(team_sources: dict[str, str]) -> None:
    """A stale table with one record dated in year 9999 and one with a NULL owner, through real
    extraction and the real gate: the future record is counted and warned about but does not
    make the table look fresh; the NULL owner is named (and counted as an orphan)."""
    from framework.report import DataQuality
    from tasks.quality import run_quality_checks

    engine = sa.create_engine(team_sources["CRM_URL"])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO teams VALUES (7, NULL, '2026-02-20 09:00:00'), (8, 'u1', '9999-12-31 00:00:00')"
        )
    engine.dispose()
    cfg, entities, milestones, stats = _run(team_sources)
    team = stats.set_index("step").loc["team"]
    # records before as_of_end: teams 1, 2, 3, 4, 6 and the new 7 -> 6; orphans: 6 (ghost) and 7 (NULL owner)
    assert (team.records, team.orphan_records, team.null_entity_records) == (6, 2, 1)
    # one user (u1) has a record after the run's clock (team 8); the newest plausible record is team 7
    assert team.future_entities == 1
    assert team.newest_future == pd.Timestamp("9999-12-31 00:00:00", tz="UTC")
    assert team.newest == pd.Timestamp("2026-02-20 09:00:00", tz="UTC")
    result = compute(entities, milestones, cfg, AS_OF)
    checks = {c.name: c for c in run_quality_checks(entities, milestones, stats, result, cfg, AS_OF)}
    fresh = checks["steps.team.freshness"]
    # as_of_end 2026-04-01 00:00 - 2026-02-20 09:00 = 39 days 15 h = 951 h > 36 h
    assert (fresh.success, fresh.severity) == (False, "error")
    assert fresh.observed == "newest 2026-02-20T09:00Z, 951.0 h before as_of_end (limit 36 h)"
    future = checks["steps.team.future_records"]
    assert (future.success, future.severity) == (False, "warn")
    assert future.observed == (
        "1 users with records dated after the run's clock (latest 9999-12-31T00:00Z; not counted, not used for freshness)"
    )
    nulls = checks["steps.team.entity_id_not_null"]
    assert (nulls.success, nulls.severity) == (False, "warn")
    assert nulls.observed == "1 of 6 records with a NULL teams.owner (not counted; part of the orphan ratio)"
    assert "steps.job.entity_id_not_null" not in checks  # a via step: its NULLs are orphans
    assert checks["steps.job.future_records"].success
    assert DataQuality.from_checks(list(checks.values())).status == "failed"

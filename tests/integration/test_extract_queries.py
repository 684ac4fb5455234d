"""One scan per source table (issue 9): every step that reads the same table is computed by one
grouped query, and that query gives exactly what reading each step on its own gives.

Observed from outside the extraction: on SQLite every statement the engines send is counted
with SQLAlchemy's ``before_cursor_execute`` event; on PostgreSQL (whose rows come through
COPY, below SQLAlchemy) the server's own per-table scan counters (``pg_stat_user_tables``)
are read before and after.
"""

from __future__ import annotations

import re
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from framework.config import load_config
from framework.engine import as_of_end
from tasks import extract
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
ACCOUNTS = 600
# the demo: accounts (entities) and five step tables; flow_runs holds two steps
# (first_flow_run, first_scheduled_run), joined to the entity through workspaces
SOURCE_TABLES = {"accounts", "workspaces", "flow_runs", "deployments", "invitations", "subscriptions"}


def _open(url: str):
    cfg = load_config(DEMO_FRAMEWORK, env={"GROWTH_DEMO_APP_URL": url, "GROWTH_DEMO_EVENTS_URL": url})
    sources = extract.open_sources({name: s.url for name, s in cfg.sources.items()})
    extract.check_schema(cfg, sources)
    return cfg, sources


def _since(cfg) -> dict:
    """An incremental read: first_flow_run from 3 days before the end, the other steps whole."""
    return {"first_flow_run": as_of_end(END) - timedelta(days=3)}


def _each_step_alone(cfg, sources, since: dict) -> dict[str, pd.DataFrame]:
    """The reference: every step read by a query of its own."""
    out = {}
    for step in cfg.tracked_steps[1:]:
        read = extract.TableRead(step.source, step.table, (step,))
        out.update(extract.extract_table(read, sources, as_of_end(END), since))
    return out


def _assert_same(together: dict[str, pd.DataFrame], alone: dict[str, pd.DataFrame]) -> None:
    assert set(together) == set(alone)
    for key in alone:
        a = alone[key].sort_values("entity_id", na_position="first").reset_index(drop=True)
        b = together[key].sort_values("entity_id", na_position="first").reset_index(drop=True)
        assert len(a) > 0, key
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=key)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('queries') / 'demo.db'}"
    seed_demo(url, None, accounts=ACCOUNTS, seed=5, end_date=END)
    return url


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_sqlite_sends_one_statement_per_source_table(sqlite_url: str, incremental: bool) -> None:
    cfg, sources = _open(sqlite_url)
    sent: list[str] = []
    for engine in sources.engines.values():
        event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    try:
        entities, aggregates = extract.extract_all(cfg, sources, as_of_end(END), _since(cfg) if incremental else None)
    finally:
        sources.dispose()
    # one statement per source table, each reading its table once (FROM it exactly once)...
    assert len(sent) == len(SOURCE_TABLES) == 6
    read_from = [re.findall(r"\bFROM\s+(\w+)", sql) for sql in sent]
    main_tables = [[t for t in names if t in SOURCE_TABLES] for names in read_from]
    assert sorted(t for names in main_tables for t in names) == sorted(SOURCE_TABLES)
    # ...the two flow_runs steps in one query, joined to workspaces once
    (runs,) = [sql for sql in sent if re.search(r"\bFROM\s+flow_runs\b", sql)]
    assert len(re.findall(r"\bJOIN\s+workspaces\b", runs)) == 1
    assert len(aggregates) == 6 and len(entities) == ACCOUNTS


@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_sqlite_one_query_gives_what_each_step_alone_gives(sqlite_url: str, incremental: bool) -> None:
    cfg, sources = _open(sqlite_url)
    since = _since(cfg) if incremental else {}
    try:
        _, together = extract.extract_all(cfg, sources, as_of_end(END), since)
        alone = _each_step_alone(cfg, sources, since)
    finally:
        sources.dispose()
    _assert_same(together, alone)
    # the two steps of flow_runs are not the same numbers (else the comparison proves little)
    assert together["first_flow_run"]["records"].sum() != together["first_scheduled_run"]["records"].sum()


def _scans(engine: sa.Engine, schema: str) -> dict[str, int]:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(sa.text(
            "SELECT relname, COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE schemaname = :schema"), {"schema": schema}).all()
    return {name: int(n) for name, n in rows if name in SOURCE_TABLES}


def _settled(engine: sa.Engine, schema: str, until=lambda scans: True) -> dict[str, int]:
    """The scan counters once the backends that ran the queries have reported them (a backend
    flushes its counters when it exits; the client does not wait for that)."""
    deadline = time.monotonic() + 20
    last = _scans(engine, schema)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _scans(engine, schema)
        if now == last and until(now):
            return now
        last = now
    return last


@pytest.mark.postgres
def test_postgresql_scans_each_source_table_once(pg_schema: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}%20-cmax_parallel_workers_per_gather%3D0"
    seed_demo(f"{url}?options=-csearch_path%3D{schema}", None, accounts=ACCOUNTS, seed=5, end_date=END)
    observer = sa.create_engine(url)
    try:
        before = _settled(observer, schema)
        cfg, sources = _open(scoped)
        try:
            entities, together = extract.extract_all(cfg, sources, as_of_end(END))
        finally:
            sources.dispose()
        # every source table was read, so wait until each backend has reported (each flushes its
        # own counters when it exits: one late backend must not read as "not scanned")
        after = _settled(observer, schema, until=lambda scans: all(scans[t] > before[t] for t in SOURCE_TABLES))
    finally:
        observer.dispose()
    delta = {t: after[t] - before[t] for t in SOURCE_TABLES}
    # each table read once; workspaces twice: its own step, and once more as the via dimension
    # of flow_runs (joined once for both flow_runs steps)
    assert delta == {"accounts": 1, "flow_runs": 1, "deployments": 1, "invitations": 1, "subscriptions": 1,
                     "workspaces": 2}
    assert len(entities) == ACCOUNTS and len(together) == 6


@pytest.mark.postgres
@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_postgresql_one_query_gives_what_each_step_alone_gives(pg_schema: tuple[str, str], incremental: bool) -> None:
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    seed_demo(scoped, None, accounts=ACCOUNTS, seed=5, end_date=END)
    cfg, sources = _open(scoped)
    since = _since(cfg) if incremental else {}
    try:
        _, together = extract.extract_all(cfg, sources, as_of_end(END), since)
        alone = _each_step_alone(cfg, sources, since)
    finally:
        sources.dispose()
    _assert_same(together, alone)


@pytest.mark.postgres
def test_postgresql_copy_and_row_fetch_give_the_same_frames(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Columns of types the CSV stream cannot carry alike (e.g. UUID ids) are fetched as DBAPI
    rows instead: both paths must give identical frames."""
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    seed_demo(scoped, None, accounts=ACCOUNTS, seed=5, end_date=END)

    def read() -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list]:
        cfg, sources = _open(scoped)
        try:
            entities, aggregates = extract.extract_all(cfg, sources, as_of_end(END), _since(cfg))
        finally:
            sources.dispose()
        return entities, aggregates, sources.statements

    entities, aggregates, copied = read()
    monkeypatch.setattr(extract, "_csv_readable", lambda outs, engine: False)
    entities2, aggregates2, fetched = read()
    assert all(sql.startswith("SELECT") for _, _, sql in copied)  # the SELECT inside each COPY
    assert all("%(" in sql for _, _, sql in fetched)  # bound parameters on the row path
    # the CSV path reads text attributes as categoricals, the row path as objects: same values
    for frame in (entities, entities2):
        for col in ("origin", "region"):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    pd.testing.assert_frame_equal(entities, entities2, check_dtype=False)
    _assert_same(aggregates, aggregates2)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql", "mssql", "oracle"])
def test_the_grouped_query_is_plain_portable_sql(dialect: str) -> None:
    """What a warehouse's SQLAlchemy dialect must run (docs/scaling.md): one statement with
    GROUP BY, CASE, a LEFT JOIN and derived tables; no window functions, no CTEs. Dialects that
    cannot select a predicate as a column get CASE ... 1/0 flags instead."""
    from datetime import UTC, datetime

    cfg = load_config(DEMO_FRAMEWORK, env={})
    engine = sa.create_mock_engine(f"{dialect}://", executor=None) if dialect != "sqlite" else sa.create_engine("sqlite://")
    md = sa.MetaData()
    runs = sa.Table("flow_runs", md, sa.Column("workspace_id", sa.Integer), sa.Column("state", sa.Text),
                    sa.Column("run_type", sa.Text), sa.Column("start_time", sa.DateTime(timezone=True)))
    spaces = sa.Table("workspaces", md, sa.Column("id", sa.Integer), sa.Column("account_id", sa.Integer))
    (read,) = [r for r in extract.table_reads(cfg) if r.table == "flow_runs"]
    query, outs = extract.table_query(read, engine, {("events", "flow_runs"): runs, ("events", "workspaces"): spaces},
                                      datetime(2026, 11, 30, tzinfo=UTC))
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True}))
    assert [o.name for o in outs][:3] == ["entity_id", "first_at__0", "last_at__0"] and len(outs) == 11
    assert len(re.findall(r"\bFROM flow_runs\b", sql)) == 1 and len(re.findall(r"\bJOIN workspaces\b", sql)) == 1
    assert " OVER " not in sql.upper() and not sql.lstrip().upper().startswith("WITH")
    assert sql.upper().count("GROUP BY") == 2  # per foreign key, then per entity
    if dialect in extract.NO_PREDICATE_COLUMNS:
        assert re.search(r"END AS m0\b", sql) and re.search(r"END AS b\b", sql)
    else:
        assert re.search(r"\) AS m0\b", sql) and not re.search(r"END AS m0\b", sql)

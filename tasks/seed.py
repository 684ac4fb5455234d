"""Write the demo data (`framework.demo.generate_demo`) to SQL databases.

Layout (SQLAlchemy Core; no foreign keys: the demo holds orphans on purpose):

app database
    accounts(id PK, email, created_at, origin NULL, region)
    workspaces(id PK, account_id, name, created_at)
    deployments(id PK, workspace_id, account_id, created_at, schedule NULL)
    invitations(id PK, account_id, email, sent_at, accepted_at NULL)
    subscriptions(id PK, account_id, plan, status, started_at)
    demo_meta(key TEXT PK, value TEXT)            -- written last: "seed complete"
events database (or the app database when there is only one)
    workspaces(id PK, account_id)                 -- only with a separate events database
    flow_runs(id PK, workspace_id, deployment_id NULL, state, run_type, start_time NULL)

Timestamps are UTC. On SQLite they are DATETIME columns holding text
``YYYY-MM-DD HH:MM:SS.ffffff``, except ``flow_runs.start_time``: a TEXT column
with mixed ISO-8601 spellings of the UTC instant, chosen per row from its
value (so duplicated runs share one spelling):

- sub-second start times: ``2026-03-01T10:00:00.123456+00:00``
- whole-second start times, by a hash of the second:
  ``2026-03-01 10:00:00``, ``2026-03-01T10:00:00Z`` or the same instant with a
  local offset, ``2026-03-01T12:00:00+02:00``.

Other dialects get real timestamp columns (microsecond precision; ``timestamptz``
for ``flow_runs.start_time`` on PostgreSQL). Rows are written in chunks with
``executemany`` of ``insert()``; `_WRITERS` is the hook for dialect-specific bulk
paths (e.g. PostgreSQL COPY).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from framework.demo import DemoData, generate_demo

META_TABLE = "demo_meta"
CHUNK_ROWS = 50_000

Progress = Callable[[str, int, int], None]

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY on SQLite
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_RUN_TS = (
    sa.DateTime(timezone=True)
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.Text(), "sqlite")
)
_KEY = sa.Text().with_variant(sa.String(191), "mysql", "mariadb")
_TEXT = sa.Text()


def _app_tables(md: sa.MetaData) -> dict[str, sa.Table]:
    def pk() -> sa.Column:
        return sa.Column("id", _ID, primary_key=True, autoincrement=False)

    return {
        "accounts": sa.Table(
            "accounts", md, pk(),
            sa.Column("email", _TEXT, nullable=False),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("origin", _TEXT),
            sa.Column("region", _TEXT, nullable=False),
        ),
        "workspaces": sa.Table(
            "workspaces", md, pk(),
            sa.Column("account_id", sa.BigInteger, nullable=False),
            sa.Column("name", _TEXT, nullable=False),
            sa.Column("created_at", _TS, nullable=False),
        ),
        "deployments": sa.Table(
            "deployments", md, pk(),
            sa.Column("workspace_id", sa.BigInteger, nullable=False),
            sa.Column("account_id", sa.BigInteger, nullable=False),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("schedule", _TEXT),
        ),
        "invitations": sa.Table(
            "invitations", md, pk(),
            sa.Column("account_id", sa.BigInteger, nullable=False),
            sa.Column("email", _TEXT, nullable=False),
            sa.Column("sent_at", _TS, nullable=False),
            sa.Column("accepted_at", _TS),
        ),
        "subscriptions": sa.Table(
            "subscriptions", md, pk(),
            sa.Column("account_id", sa.BigInteger, nullable=False),
            sa.Column("plan", _TEXT, nullable=False),
            sa.Column("status", _TEXT, nullable=False),
            sa.Column("started_at", _TS, nullable=False),
        ),
    }


def _events_tables(md: sa.MetaData, *, dimension: bool) -> dict[str, sa.Table]:
    tables = {}
    if dimension:
        tables["workspaces"] = sa.Table(
            "workspaces", md,
            sa.Column("id", _ID, primary_key=True, autoincrement=False),
            sa.Column("account_id", sa.BigInteger, nullable=False),
        )
    tables["flow_runs"] = sa.Table(
        "flow_runs", md,
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("workspace_id", sa.BigInteger, nullable=False),
        sa.Column("deployment_id", sa.BigInteger),
        sa.Column("state", _TEXT, nullable=False),
        sa.Column("run_type", _TEXT, nullable=False),
        sa.Column("start_time", _RUN_TS),
    )
    return tables


def _meta_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        META_TABLE, md,
        sa.Column("key", _KEY, primary_key=True),
        sa.Column("value", _TEXT, nullable=False),
    )


# Secondary indexes, built after the load: the columns the framework joins and filters on.
_INDEXES = {
    "workspaces": ("account_id",),
    "deployments": ("account_id",),
    "invitations": ("account_id",),
    "subscriptions": ("account_id",),
    "flow_runs": ("workspace_id", "start_time"),
}


def seed_demo(
    app_url: str,
    events_url: str | None = None,
    *,
    accounts: int = 5000,
    seed: int = 7,
    end_date: date | None = None,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Generate the demo and (re)write it to ``app_url`` (and ``events_url``); return its meta.

    Existing demo tables are dropped first. With ``events_url`` None or equal to
    ``app_url`` everything goes to one database and ``app.workspaces`` doubles as
    the flow runs' workspace dimension (the few events-only workspaces are then
    absent, so their runs count as orphans there). ``end_date`` defaults to
    yesterday (UTC). ``progress(table, rows_done, rows_total)`` is called after
    each chunk, ``table`` being ``app.accounts``, ``events.flow_runs``, ...
    ``demo_meta`` is written last, so its presence marks a complete seed.
    """
    if end_date is None:
        end_date = datetime.now(UTC).date() - timedelta(days=1)
    data = generate_demo(accounts, seed, end_date=end_date)
    single = events_url is None or events_url == app_url
    app_engine = _engine(app_url)
    events_engine = app_engine if single else _engine(events_url)
    try:
        _write_all(data, app_engine, events_engine, single=single, progress=progress)
    finally:
        app_engine.dispose()
        if events_engine is not app_engine:
            events_engine.dispose()
    return dict(data.meta)


def read_demo_meta(url: str) -> dict[str, str] | None:
    """The ``demo_meta`` key/value pairs of the database at ``url``; None without that table."""
    engine = _engine(url, create_dirs=False)
    try:
        if not sa.inspect(engine).has_table(META_TABLE):
            return None
        table = _meta_table(sa.MetaData())
        with engine.connect() as conn:
            return {k: v for k, v in conn.execute(sa.select(table.c.key, table.c.value))}
    finally:
        engine.dispose()


# ---- internals -------------------------------------------------------------------------


def _engine(url: str, *, create_dirs: bool = True) -> sa.Engine:
    parsed = sa.make_url(url)
    if create_dirs and parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url)


def _write_all(
    data: DemoData,
    app_engine: sa.Engine,
    events_engine: sa.Engine,
    *,
    single: bool,
    progress: Progress | None,
) -> None:
    app_md, events_md = sa.MetaData(), sa.MetaData()
    app_tables = _app_tables(app_md)
    meta_table = _meta_table(app_md)
    events_tables = _events_tables(app_md if single else events_md, dimension=not single)

    with app_engine.begin() as conn:
        meta_table.drop(conn, checkfirst=True)  # first out, last in: no meta = incomplete
    for engine, tables in ((app_engine, app_tables), (events_engine, events_tables)):
        with engine.begin() as conn:
            for table in tables.values():
                table.drop(conn, checkfirst=True)
                table.create(conn)

    jobs = [("app", name, t, data.app[name]) for name, t in app_tables.items()]
    jobs += [("events", name, t, data.events[name]) for name, t in events_tables.items()]
    for db, name, table, frame in jobs:
        engine = app_engine if db == "app" else events_engine
        writer = _WRITERS.get(engine.dialect.name, _insert_chunks)
        tick = partial(_report, progress, f"{db}.{name}")
        with engine.begin() as conn:
            writer(conn, table, frame, tick)
            for column in _INDEXES.get(name, ()):
                sa.Index(f"ix_{name}_{column}", table.c[column]).create(conn)

    with app_engine.begin() as conn:
        meta_table.create(conn)
        conn.execute(sa.insert(meta_table), [{"key": k, "value": v} for k, v in data.meta.items()])


def _report(progress: Progress | None, label: str, done: int, total: int) -> None:
    if progress is not None:
        progress(label, done, total)


def _insert_chunks(
    conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Callable[[int, int], None]
) -> None:
    """Generic path: ``executemany`` of ``insert()`` per chunk of ``CHUNK_ROWS`` rows."""
    sqlite = conn.dialect.name == "sqlite"
    target = _text_timestamps(table) if sqlite else table
    total = len(frame)
    done = 0
    for chunk in _chunks(frame):
        columns = {c.name: _values(chunk[c.name], c, conn.dialect) for c in table.columns}
        names = list(columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        conn.execute(sa.insert(target), rows)
        done += len(chunk)
        tick(done, total)
    if total == 0:
        tick(0, 0)


# Dialect-specific bulk writers (same signature as _insert_chunks), e.g. "postgresql": COPY.
_WRITERS: dict[str, Callable[[sa.Connection, sa.Table, pd.DataFrame, Callable[[int, int], None]], None]] = {}


def _chunks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), CHUNK_ROWS):
        yield frame.iloc[start : start + CHUNK_ROWS]


def _text_timestamps(table: sa.Table) -> sa.Table:
    """A twin of ``table`` whose timestamp columns take pre-formatted text (SQLite loads)."""
    twin = sa.Table(table.name, sa.MetaData())
    for c in table.columns:
        kind = _TEXT if isinstance(c.type, sa.DateTime | sa.Text) else c.type
        twin.append_column(sa.Column(c.name, kind, primary_key=c.primary_key))
    return twin


def _values(series: pd.Series, column: sa.Column, dialect: sa.Dialect) -> list:
    """One chunk of one column as Python values (None for missing) ready for the driver."""
    sqlite = dialect.name == "sqlite"
    if isinstance(series.dtype, pd.CategoricalDtype):
        labels = np.append(np.asarray(series.cat.categories, dtype=object), None)
        return labels[series.cat.codes.to_numpy()].tolist()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series.to_numpy(dtype="datetime64[us]")
        if sqlite:
            if column.table.name == "flow_runs" and column.name == "start_time":
                return sqlite_start_time_text(stamps)
            return _sqlite_datetime_text(stamps)
        values = stamps.astype(object)  # datetime.datetime, None for NaT
        if getattr(column.type.dialect_impl(dialect), "timezone", False):
            return [None if v is None else v.replace(tzinfo=UTC) for v in values]
        return values.tolist()
    return series.to_numpy(dtype=object, na_value=None).tolist()


def _sqlite_datetime_text(stamps: np.ndarray) -> list[str | None]:
    text = np.strings.replace(np.datetime_as_string(stamps, unit="us"), "T", " ")
    return np.where(np.isnat(stamps), None, text.astype(object)).tolist()


_SEC = 1_000_000
_PLUS_2H = np.timedelta64(2, "h")


def sqlite_start_time_text(stamps: np.ndarray) -> list[str | None]:
    """``flow_runs.start_time`` values (datetime64, UTC) as SQLite text in mixed ISO formats.

    The spelling depends on the value only: sub-second instants use
    ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``; whole seconds use, by a hash of the
    second, ``YYYY-MM-DD HH:MM:SS``, ``YYYY-MM-DDTHH:MM:SSZ`` or the local time
    at ``+02:00`` (``YYYY-MM-DDTHH:MM:SS+02:00``). NaT becomes None.
    """
    stamps = np.asarray(stamps, dtype="datetime64[us]")
    nat = np.isnat(stamps)
    us = np.where(nat, 0, stamps.astype(np.int64))
    secs = (us // _SEC).astype(np.uint64)
    pick = (((secs * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) * np.uint64(3)) >> np.uint64(32)
    seconds = np.datetime_as_string(stamps, unit="s")
    out = np.where(
        us % _SEC != 0,
        np.strings.add(np.datetime_as_string(stamps, unit="us"), "+00:00"),
        np.where(
            pick == 0,
            np.strings.replace(seconds, "T", " "),
            np.where(
                pick == 1,
                np.strings.add(seconds, "Z"),
                np.strings.add(np.datetime_as_string(stamps + _PLUS_2H, unit="s"), "+02:00"),
            ),
        ),
    ).astype(object)
    out[nat] = None
    return out.tolist()

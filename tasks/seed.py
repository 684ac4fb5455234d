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
for ``flow_runs.start_time`` on PostgreSQL).

Bulk paths (`_WRITERS`, by dialect; every path writes the same values):

- PostgreSQL: ``COPY ... FROM STDIN (FORMAT binary, FREEZE)`` through psycopg 3,
  the binary rows built with numpy a block of rows at a time and sent from a
  writer thread while the next block is built. Each table is created in its
  load's transaction (so FREEZE applies: no hint-bit rewrite on first read),
  its primary key and indexes are built after the load, then it is ANALYZEd.
- MySQL/MariaDB: the DBAPI cursor's ``executemany`` in batches of
  ``MYSQL_BATCH_ROWS`` (PyMySQL and mysqlclient send each batch as multi-row
  INSERTs), timestamps as text.
- SQLite: the raw ``sqlite3`` cursor's ``executemany`` (no SQLAlchemy
  per-row parameter processing).

Anything else takes the generic path: ``executemany`` of ``insert()`` per chunk.
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
from sqlalchemy.schema import AddConstraint

from framework.demo import DemoData, generate_demo

META_TABLE = "demo_meta"
CHUNK_ROWS = 50_000  # generic and SQLite paths: rows per executemany (and per progress tick)
COPY_CHUNK_ROWS = 200_000  # PostgreSQL: rows per binary COPY block (and per progress tick)
MYSQL_BATCH_ROWS = 10_000  # MySQL/MariaDB: rows per executemany (multi-row INSERT)

Progress = Callable[[str, int, int], None]
Tick = Callable[[int, int], None]

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

    jobs = [("app", name, t, data.app[name]) for name, t in app_tables.items()]
    jobs += [("events", name, t, data.events[name]) for name, t in events_tables.items()]
    for db, name, table, frame in jobs:
        engine = app_engine if db == "app" else events_engine
        dialect = engine.dialect.name
        writer = _WRITERS.get(dialect, _insert_chunks)
        tick = partial(_report, progress, f"{db}.{name}")
        late_key = dialect == "postgresql"  # a sorted index build after COPY beats per-row upkeep
        with engine.begin() as conn:  # create, load and index in one transaction
            _create_table(conn, table, primary_key=not late_key)
            writer(conn, table, frame, tick)
            if late_key:
                conn.execute(AddConstraint(table.primary_key))
            for column in _INDEXES.get(name, ()):
                sa.Index(f"ix_{name}_{column}", table.c[column]).create(conn)
            if dialect == "postgresql":
                conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")

    with app_engine.begin() as conn:
        meta_table.create(conn)
        conn.execute(sa.insert(meta_table), [{"key": k, "value": v} for k, v in data.meta.items()])


def _report(progress: Progress | None, label: str, done: int, total: int) -> None:
    if progress is not None:
        progress(label, done, total)


def _create_table(conn: sa.Connection, table: sa.Table, *, primary_key: bool) -> None:
    """CREATE TABLE; without its primary key constraint when ``primary_key`` is False."""
    if primary_key:
        table.create(conn)
        return
    bare = sa.Table(table.name, sa.MetaData(), schema=table.schema)
    for c in table.columns:
        bare.append_column(sa.Column(c.name, c.type, nullable=c.nullable and not c.primary_key))
    bare.create(conn)


def _insert_chunks(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Tick) -> None:
    """Generic path: ``executemany`` of ``insert()`` per chunk of ``CHUNK_ROWS`` rows."""
    sqlite = conn.dialect.name == "sqlite"
    target = _text_timestamps(table) if sqlite else table
    total = len(frame)
    done = 0
    for chunk in _chunks(frame, CHUNK_ROWS):
        columns = {c.name: _values(chunk[c.name], c, conn.dialect) for c in table.columns}
        names = list(columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        conn.execute(sa.insert(target), rows)
        done += len(chunk)
        tick(done, total)
    if total == 0:
        tick(0, 0)


def _insert_sql(conn: sa.Connection, table: sa.Table, marker: str) -> str:
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(c.name) for c in table.columns)
    markers = ", ".join([marker] * len(table.columns))
    return f"INSERT INTO {quote.format_table(table)} ({names}) VALUES ({markers})"


def _dbapi_executemany(
    conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Tick, *, rows_per_call: int
) -> None:
    """``executemany`` of tuples on the DBAPI cursor, ``rows_per_call`` rows a call."""
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    if marker is None:
        _insert_chunks(conn, table, frame, tick)
        return
    sql = _insert_sql(conn, table, marker)
    cursor = conn.connection.cursor()
    total = len(frame)
    done = 0
    try:
        for chunk in _chunks(frame, rows_per_call):
            columns = [_values(chunk[c.name], c, conn.dialect) for c in table.columns]
            cursor.executemany(sql, list(zip(*columns, strict=True)))
            done += len(chunk)
            tick(done, total)
    finally:
        cursor.close()
    if total == 0:
        tick(0, 0)


def _sqlite_executemany(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Tick) -> None:
    _dbapi_executemany(conn, table, frame, tick, rows_per_call=CHUNK_ROWS)


def _mysql_executemany(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Tick) -> None:
    _dbapi_executemany(conn, table, frame, tick, rows_per_call=MYSQL_BATCH_ROWS)


def _chunks(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]


# ---- PostgreSQL: binary COPY -------------------------------------------------------------

_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
_PGCOPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = int(np.datetime64("2000-01-01T00:00:00", "us").astype(np.int64))
_NULL_FIELD = np.full(4, 0xFF, dtype=np.uint8)  # field length -1


def _pg_kind(column: sa.Column, dialect: sa.Dialect) -> str | None:
    """How a column's values travel in binary COPY; None when this writer does not know the type."""
    impl = column.type.dialect_impl(dialect)
    if isinstance(impl, sa.DateTime):
        return "timestamp"  # timestamp and timestamptz: int64 microseconds since 2000-01-01 UTC
    if isinstance(impl, sa.BigInteger):
        return "int8"
    if isinstance(impl, sa.SmallInteger):
        return None
    if isinstance(impl, sa.Integer):
        return "int4"
    if isinstance(impl, sa.String):  # TEXT, VARCHAR: UTF-8 bytes
        return "text"
    return None


def _copy_binary(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, tick: Tick) -> None:
    """PostgreSQL path: binary COPY of numpy-built blocks, FREEZE (the table is new in this transaction)."""
    kinds = [_pg_kind(c, conn.dialect) for c in table.columns]
    if None in kinds or conn.dialect.driver != "psycopg":  # psycopg2 & co.: the generic path
        _insert_chunks(conn, table, frame, tick)
        return
    from psycopg.copy import QueuedLibpqWriter

    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(c.name) for c in table.columns)
    sql = f"COPY {quote.format_table(table)} ({names}) FROM STDIN (FORMAT binary, FREEZE)"
    conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")  # the index builds that follow
    total = len(frame)
    cursor = conn.connection.driver_connection.cursor()
    try:
        # The writer thread sends one block while numpy (GIL released) builds the next.
        with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
            copy.write(_PGCOPY_HEADER)
            done = 0
            for chunk in _chunks(frame, COPY_CHUNK_ROWS):
                copy.write(_pg_binary_rows(chunk, [c.name for c in table.columns], kinds))
                done += len(chunk)
                tick(done, total)
            copy.write(_PGCOPY_TRAILER)
    finally:
        cursor.close()
    if total == 0:
        tick(0, 0)


def _pg_binary_rows(chunk: pd.DataFrame, names: list[str], kinds: list[str]) -> bytes:
    """The binary COPY tuples of ``chunk``: per row, the field count, then per field its
    length (-1 for NULL) and its bytes, all big-endian. Fields are laid out at fixed
    offsets in an ``(n, width)`` byte matrix and the unused bytes dropped with a mask."""
    n = len(chunk)
    fields = [_pg_field(chunk[name], kind) for name, kind in zip(names, kinds, strict=True)]
    width = 2 + sum(m.shape[1] for m, _ in fields)
    out = np.empty((n, width), dtype=np.uint8)
    out[:, :2] = np.frombuffer(len(fields).to_bytes(2, "big"), dtype=np.uint8)
    keep = np.ones((n, width), dtype=bool)
    offset = 2
    for matrix, used in fields:
        w = matrix.shape[1]
        out[:, offset : offset + w] = matrix
        if used is not None:
            keep[:, offset : offset + w] = np.arange(w) < used[:, None]
        offset += w
    return out.tobytes() if keep.all() else out[keep].tobytes()


def _pg_field(series: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One column as an ``(n, width)`` byte matrix (4-byte length, then the value) and the
    bytes used per row (None: all of them)."""
    if kind == "text":
        return _pg_text(series)
    if kind == "timestamp":
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = series.to_numpy(dtype="datetime64[us]")
        null = np.isnat(stamps)
        values = np.where(null, 0, stamps.view(np.int64) - _PG_EPOCH_US)
        size = 8
    else:
        null = series.isna().to_numpy()
        values = series.to_numpy(dtype=np.int64, na_value=0)
        size = 8 if kind == "int8" else 4
    n = len(values)
    matrix = np.empty((n, 4 + size), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(size.to_bytes(4, "big"), dtype=np.uint8)
    matrix[:, 4:] = values.astype(f">i{size}").view(np.uint8).reshape(n, size)
    if not null.any():
        return matrix, None
    matrix[null, :4] = _NULL_FIELD
    return matrix, np.where(null, 4, 4 + size)


def _pg_text(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(series.dtype, pd.CategoricalDtype):  # a lookup table of the encoded labels
        labels = [str(c).encode("utf-8") for c in series.cat.categories]
        width = 4 + max((len(b) for b in labels), default=0)
        lut = np.zeros((len(labels) + 1, width), dtype=np.uint8)
        lut_used = np.full(len(labels) + 1, 4, dtype=np.int64)
        for i, b in enumerate(labels):
            lut[i, :4] = np.frombuffer(len(b).to_bytes(4, "big"), dtype=np.uint8)
            lut[i, 4 : 4 + len(b)] = np.frombuffer(b, dtype=np.uint8)
            lut_used[i] = 4 + len(b)
        lut[-1, :4] = _NULL_FIELD  # code -1: missing
        codes = series.cat.codes.to_numpy()
        return lut[codes], lut_used[codes]
    null = series.isna().to_numpy()
    text = series.to_numpy(dtype=object, na_value="").astype(np.str_)
    encoded = np.strings.encode(text, "utf-8")  # fixed-width bytes, zero padded
    lengths = np.strings.str_len(encoded).astype(np.int64)
    n, size = len(encoded), encoded.dtype.itemsize
    matrix = np.empty((n, 4 + size), dtype=np.uint8)
    matrix[:, :4] = lengths.astype(">i4").view(np.uint8).reshape(n, 4)
    matrix[:, 4:] = encoded.view(np.uint8).reshape(n, size)
    used = 4 + lengths
    if null.any():
        matrix[null, :4] = _NULL_FIELD
        used[null] = 4
    return matrix, used


# Dialect-specific bulk writers (same signature as _insert_chunks); others use _insert_chunks.
_WRITERS: dict[str, Callable[[sa.Connection, sa.Table, pd.DataFrame, Tick], None]] = {
    "postgresql": _copy_binary,
    "mysql": _mysql_executemany,
    "mariadb": _mysql_executemany,
    "sqlite": _sqlite_executemany,
}


def _text_timestamps(table: sa.Table) -> sa.Table:
    """A twin of ``table`` whose timestamp columns take pre-formatted text (SQLite loads)."""
    twin = sa.Table(table.name, sa.MetaData())
    for c in table.columns:
        kind = _TEXT if isinstance(c.type, sa.DateTime | sa.Text) else c.type
        twin.append_column(sa.Column(c.name, kind, primary_key=c.primary_key))
    return twin


def _values(series: pd.Series, column: sa.Column, dialect: sa.Dialect) -> list:
    """One chunk of one column as Python values (None for missing) ready for the driver.

    Timestamps: text on SQLite (see the module doc) and on MySQL/MariaDB (naive UTC
    ``YYYY-MM-DD HH:MM:SS.ffffff``: cheaper for the driver than datetime objects),
    ``datetime`` elsewhere.
    """
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
        if dialect.name in ("mysql", "mariadb"):
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

"""Extraction from the source databases (SQLAlchemy Core). One I/O concern: reading sources.

One query per source table (issue 9): every step that reads the same table (and
reaches the entity the same way) is computed by one grouped query with
conditional aggregates, so the table is scanned once whatever the number of
steps on it. Per step, grouped per entity: the earliest and newest time before
as_of_end (``MIN/MAX(CASE WHEN <step's where> AND ts < end THEN ts END)``), the
count of records before as_of_end, the count of NULL times, and the newest time
of all (for freshness). The ``WHERE`` of the query is the union of the steps'
filters, so records no step wants are skipped by the database. ``where`` values
are bound as parameters. A ``via`` join is done once per table, after a first
aggregation by the foreign key (MIN, MAX and COUNT decompose), so the join
matches one row per foreign-key value instead of one per record. Identifiers
come from reflected ``Table`` objects (checked before any query runs), never
from pasted SQL text. The SQL is plain GROUP BY / CASE / LEFT JOIN (no window
functions), so any SQLAlchemy dialect can run it.

Fetching: rows never become SQLAlchemy ``Row`` objects. On PostgreSQL the query
runs as ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` with timestamps as integer
epoch microseconds, parsed by pandas' CSV reader; elsewhere the DBAPI cursor's
tuples are turned into columns. Either way the frames are the same.

Timestamps: naive values are UTC. On SQLite, text timestamps in any ISO-8601
form (space or ``T``, ``Z`` or ``+HH:MM`` offsets, fractional seconds) are
normalised in the query with ``strftime('%Y-%m-%d %H:%M:%f', ts)``, which
also converts offsets to UTC, so comparisons and MIN/MAX are exact. Every
database is read at millisecond precision (rounded half up, as SQLite rounds).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from framework.config import FrameworkConfig, StepConfig
from framework.errors import SchemaError, SourceError, UsageError
from framework.milestones import AGGREGATE_COLUMNS, to_utc
from tasks.faults import fault_point
from tasks.secrets import redact

log = logging.getLogger("growth.extract")

SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%f"
FETCH_CHUNK = 100_000
# PostgreSQL session settings for the extraction's transaction (SET LOCAL: nothing outlives it).
# A hash aggregate over a year of events has hundreds of thousands of groups: with the default
# 4MB it spills to disk in batches; JIT compilation of the many CASE expressions costs more
# than it saves at these sizes.
PG_SETTINGS = {"work_mem": "256MB", "jit": "off"}
NULL_TEXT = "\\N"  # the NULL marker of the PostgreSQL CSV stream
# Dialects that cannot select a predicate as a column (``a < b AS flag``): flags become CASE.
NO_PREDICATE_COLUMNS = {"mssql", "oracle", "ibm_db_sa", "db2", "sybase", "teradatasql", "teradata"}


@dataclass
class Sources:
    """Open SQLAlchemy engines, one per named source. Close with ``dispose()``.

    ``statements`` lists every extraction statement sent (source, table, SQL), in order.
    """

    engines: dict[str, sa.Engine]
    tables: dict[tuple[str, str], sa.Table] = field(default_factory=dict)
    rows_read: dict[str, int] = field(default_factory=dict)
    statements: list[tuple[str, str, str]] = field(default_factory=list)

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


def open_sources(urls: dict[str, str]) -> Sources:
    engines = {}
    for name, url in urls.items():
        try:
            engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError) as exc:
            raise SourceError(f"source '{name}' ({redact(url)}): cannot use this URL: {exc}") from None
        _sqlite_file_must_exist(name, engine)
        engines[name] = engine
    return Sources(engines)


def _sqlite_file_must_exist(name: str, engine: sa.Engine) -> None:
    """SQLite creates a missing database file on connect: a typo in a source path would read
    an empty database (and leave an empty file behind). A missing file is a source that
    cannot be read (exit 4), as for any other database."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return
    if not Path(database).is_file():
        engine.dispose()
        raise SourceError(f"source '{name}' ({redact(url)}): no such SQLite database file: {database}")


@contextmanager
def _reading(source: str, engine: sa.Engine) -> Iterator[sa.Connection]:
    dbapi_error = getattr(engine.dialect.loaded_dbapi, "Error", None) or sa_exc.DBAPIError
    try:
        with engine.connect() as conn:
            yield conn
    except sa_exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        transient = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        raise SourceError(f"source '{source}' ({redact(engine.url)}): {detail}", transient) from None
    except dbapi_error as exc:  # raised by the driver's cursor itself (the fetch paths below)
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        dbapi = engine.dialect.loaded_dbapi
        transient = isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError)
        raise SourceError(f"source '{source}' ({redact(engine.url)}): {detail}", transient) from None


def _split_schema(name: str) -> tuple[str | None, str]:
    if "." in name:
        schema, table = name.split(".", 1)
        return schema, table
    return None, name


def check_schema(cfg: FrameworkConfig, sources: Sources) -> dict[tuple[str, str], sa.Table]:
    """Reflect every table the framework names and check every column. Raises SchemaError."""
    needed: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def need(source: str, table: str, column: str, who: str) -> None:
        needed.setdefault((source, table), []).append((column, who))

    e = cfg.entity
    for col in (e.id, e.created_at, *e.attributes):
        need(e.source, e.table, col, "entity")
    for i, step in enumerate(cfg.steps):
        if not step.tracked or step.entity_created:
            continue
        who = f"steps[{i}] ({step.key})"
        assert step.source and step.table and step.timestamp
        need(step.source, step.table, step.timestamp, who)
        if step.entity_id:
            need(step.source, step.table, step.entity_id, who)
        if step.via:
            need(step.source, step.table, step.via.foreign_key, who)
            need(step.source, step.via.table, step.via.key, who + " via")
            need(step.source, step.via.table, step.via.entity_id, who + " via")
        for col in step.where or {}:
            need(step.source, step.table, col, who + " where")

    problems: list[str] = []
    tables: dict[tuple[str, str], sa.Table] = {}
    by_source: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {}
    for (source, table_name), columns in needed.items():
        by_source.setdefault(source, []).append((table_name, columns))
    for source, wanted in by_source.items():
        engine = sources.engines[source]
        with _reading(source, engine) as conn:
            inspector = sa.inspect(conn)
            schemas: list[str] | None = None
            longest = engine.dialect.max_identifier_length
            for table_name, columns in wanted:
                schema, name = _split_schema(table_name)
                whos = sorted({w for _, w in columns})
                missing = f"{whos[0]}: source '{source}' has no table '{table_name}'"
                # names the database could not hold, and unknown schemas, are answered here:
                # asking the database about them is an error on some dialects, not "no table"
                too_long = [n for n in (schema, name) if n is not None and len(n) > longest]
                if too_long:
                    problems.append(f"{missing} (a name longer than the {longest} characters it allows)")
                    continue
                if schema is not None:
                    schemas = sorted(inspector.get_schema_names()) if schemas is None else schemas
                    if schema not in schemas:
                        problems.append(f"{missing} (no schema '{schema}'; schemas: {', '.join(schemas) or 'none'})")
                        continue
                # columns only (names and types): keys, indexes and constraints are not needed
                if not inspector.has_table(name, schema=schema):
                    existing = sorted(inspector.get_table_names(schema=schema))
                    problems.append(f"{missing} (tables: {', '.join(existing) or 'none'})")
                    continue
                reflected = inspector.get_columns(name, schema=schema)
                table = sa.Table(
                    name, sa.MetaData(), *(sa.Column(c["name"], c["type"]) for c in reflected), schema=schema
                )
                have = {c.name for c in table.columns}
                for column, who in dict.fromkeys(columns):
                    if column not in have:
                        problems.append(
                            f"{who}: source '{source}' table '{table_name}' has no column '{column}' "
                            f"(columns: {', '.join(sorted(have))})"
                        )
                tables[(source, table_name)] = table
    if problems:
        raise SchemaError(list(dict.fromkeys(problems)))
    sources.tables = tables
    return tables


# ---- timestamps ------------------------------------------------------------------


def _ts_expr(engine: sa.Engine, column: sa.ColumnElement) -> sa.ColumnElement:
    if engine.dialect.name == "sqlite":
        return sa.func.strftime(SQLITE_TS_FORMAT, column)
    return column


def _ts_bound(engine: sa.Engine, column: sa.Column, moment: datetime) -> object:
    """The comparison value for ``moment`` (aware UTC) in the column's own terms."""
    if engine.dialect.name == "sqlite":
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    if isinstance(column.type, sa.DateTime) and column.type.timezone:
        return moment
    return moment.replace(tzinfo=None)


def _round_ms(values: pd.Series) -> pd.Series:
    """Millisecond precision, rounded half up as SQLite's date functions round."""
    return (values + pd.Timedelta(microseconds=500)).dt.floor("ms")


def _to_utc(values: pd.Series) -> pd.Series:
    """UTC timestamps at millisecond precision from driver values (datetimes or ISO text),
    so every database is read alike and gives the same numbers."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _round_ms(to_utc(values))
    # the common shapes (SQLite's strftime text, driver datetimes) in one vectorised pass; the
    # rest (other ISO-8601 spellings) value by value, as framework.milestones.to_utc reads them
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601").astype("datetime64[us, UTC]")
    missed = parsed.isna().to_numpy() & values.notna().to_numpy()
    if missed.any():
        parsed[missed] = to_utc(values[missed]).to_numpy()
    return _round_ms(parsed)


def _from_epoch_us(values: pd.Series) -> pd.Series:
    """Integer epoch microseconds (nullable) as UTC timestamps at millisecond precision."""
    us = pd.array(values, dtype="Int64")
    nat = np.iinfo(np.int64).min  # numpy's NaT
    raw = np.asarray(us.to_numpy(dtype="int64", na_value=nat))
    stamps = pd.Series(raw.view("datetime64[us]"), index=values.index).dt.tz_localize("UTC")
    return _round_ms(stamps)


def _pg_epoch_us(value: sa.ColumnElement) -> sa.ColumnElement:
    """A PostgreSQL timestamp as integer epoch microseconds (naive values taken as UTC); NULL
    for +-infinity. Exact: EXTRACT returns numeric (PostgreSQL 14+); before, a double whose
    error (< 0.5 us for this century) the cast to bigint rounds away."""
    return sa.case((sa.func.isfinite(value), sa.cast(sa.extract("epoch", value) * 1_000_000, sa.BigInteger)))


# ---- fetching ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Out:
    """One output column of an extraction query and how to read it."""

    name: str
    kind: str  # "value" (an id), "attr" (an attribute), "time", "count"
    type: sa.types.TypeEngine | None = None  # the source column's type (values and times)

    def epoch(self, engine: sa.Engine) -> bool:
        """On PostgreSQL, timestamp columns travel as epoch microseconds."""
        return engine.dialect.name == "postgresql" and self.kind == "time" and isinstance(self.type, sa.DateTime)


def _select(engine: sa.Engine, outs: list[_Out], exprs: list[sa.ColumnElement]) -> list[sa.ColumnElement]:
    return [
        (_pg_epoch_us(e) if o.epoch(engine) else e).label(o.name) for o, e in zip(outs, exprs, strict=True)
    ]


def _csv_readable(outs: list[_Out], engine: sa.Engine) -> bool:
    """Whether every column's CSV text reads back as the driver's value would."""
    for o in outs:
        if o.kind == "count" or o.epoch(engine):
            continue
        if not isinstance(o.type, sa.Integer | sa.String):
            return False
    return True


def _statement(conn: sa.Connection, query: sa.Select) -> tuple[str, Any]:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    if compiled.positional:
        return str(compiled), tuple(params[name] for name in compiled.positiontup or ())
    return str(compiled), params


def _fetch(
    conn: sa.Connection, engine: sa.Engine, query: sa.Select, outs: list[_Out], sources: Sources, where: tuple[str, str]
) -> pd.DataFrame:
    """Run ``query`` and return its rows as a frame typed by ``outs`` (no Row objects)."""
    sql, params = _statement(conn, query)
    if engine.dialect.name == "postgresql" and _csv_readable(outs, engine):
        frame, inline = _fetch_pg_csv(conn, sql, params, outs, engine)
        sources.statements.append((*where, inline))
    else:
        frame = _fetch_rows(conn, sql, params, outs)
        sources.statements.append((*where, sql))
    for o in outs:
        col = frame[o.name]
        if o.kind == "count":
            frame[o.name] = col.fillna(0).astype("int64")
        elif o.kind == "time":
            frame[o.name] = _from_epoch_us(col) if o.epoch(engine) else _to_utc(col)
        elif isinstance(col.dtype, pd.Int64Dtype):
            frame[o.name] = _plain_ints(col)
    return frame


def _plain_ints(col: pd.Series) -> pd.Series:
    """A nullable integer column as the driver path gives it: int64, or float64 with NaN for
    NULLs (objects beyond 2**53, where a float would change the value)."""
    if not col.isna().any():
        return col.astype("int64")
    values = col.dropna()
    if len(values) and int(values.abs().max()) >= 2**53:
        return col.astype(object).where(col.notna(), None)
    return col.astype("float64")


def _fetch_pg_csv(
    conn: sa.Connection, sql: str, params: Any, outs: list[_Out], engine: sa.Engine
) -> tuple[pd.DataFrame, str]:
    """The rows of ``sql`` through ``COPY (...) TO STDOUT (FORMAT csv)``, and the SELECT as sent
    (COPY takes no parameters: psycopg quotes the values into the text, as it would bind them)."""
    import psycopg

    dbapi = conn.connection.driver_connection
    for name, value in PG_SETTINGS.items():
        conn.exec_driver_sql(f"SET LOCAL {name} = '{value}'")
    inline = psycopg.ClientCursor(dbapi).mogrify(sql, params)
    buffer = io.BytesIO()
    with dbapi.cursor() as cursor, cursor.copy(
        f"COPY ({inline}) TO STDOUT (FORMAT csv, NULL '{NULL_TEXT}')"
    ) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    # text attributes as categoricals: segments have few values, each kept once
    dtypes = {
        o.name: "Int64" if o.kind == "count" or o.epoch(engine) or isinstance(o.type, sa.Integer)
        else "category" if o.kind == "attr" else object
        for o in outs
    }
    if not buffer.getbuffer().nbytes:
        return pd.DataFrame({o.name: pd.Series([], dtype=dtypes[o.name]) for o in outs}), inline
    frame = pd.read_csv(
        buffer, header=None, names=[o.name for o in outs], dtype=dtypes, na_values=[NULL_TEXT],
        keep_default_na=False, engine="c",
    )
    return frame, inline


def _fetch_rows(conn: sa.Connection, sql: str, params: Any, outs: list[_Out]) -> pd.DataFrame:
    result = conn.exec_driver_sql(sql, params)
    cursor = result.cursor  # the DBAPI cursor: plain tuples
    columns: list[list[Any]] = [[] for _ in outs]
    try:
        while rows := cursor.fetchmany(FETCH_CHUNK):
            for values, column in zip(zip(*rows, strict=True), columns, strict=True):
                column.extend(values)
    finally:
        result.close()
    return pd.DataFrame({o.name: pd.Series(c, dtype=object if not c else None) for o, c in zip(outs, columns, strict=True)})


# ---- entities ------------------------------------------------------------------------


def extract_entities(cfg: FrameworkConfig, sources: Sources, end: datetime) -> pd.DataFrame:
    """Grain: one row per entity record (duplicates and NULLs kept for the quality gate).

    Columns ``entity_id``, ``created_at`` (UTC), one column per attribute.
    Records created at or after ``end`` are left in the database.
    """
    e = cfg.entity
    engine = sources.engines[e.source]
    table = sources.tables[(e.source, e.table)]
    created = _ts_expr(engine, table.c[e.created_at])
    outs = [
        _Out("entity_id", "value", table.c[e.id].type),
        _Out("created_at", "time", table.c[e.created_at].type),
        *[_Out(f"attr_{i}", "attr", table.c[a].type) for i, a in enumerate(e.attributes)],
    ]
    exprs = [table.c[e.id], created, *[table.c[a] for a in e.attributes]]
    query = sa.select(*_select(engine, outs, exprs)).where(
        sa.or_(created < _ts_bound(engine, table.c[e.created_at], end), created.is_(None))
    )
    with _reading(e.source, engine) as conn:
        frame = _fetch(conn, engine, query, outs, sources, (e.source, e.table))
    frame.columns = ["entity_id", "created_at", *e.attributes]
    sources.rows_read[f"entity:{e.table}"] = len(frame)
    log.info("read %d %s records from %s.%s", len(frame), e.name, e.source, e.table)
    return frame


# ---- time limits ---------------------------------------------------------------------------

EXTRACT_TIMEOUT_ENV = "GROWTH_EXTRACT_TIMEOUT_SECONDS"
DEFAULT_EXTRACT_TIMEOUT = 3600.0
CHECK_SCHEMA_TIMEOUT = 300.0
"""Seconds: a schema check reads the catalogue only (never more than the extraction's own)."""


def extract_timeout() -> float:
    """The extraction's timeout in seconds: $GROWTH_EXTRACT_TIMEOUT_SECONDS, default an hour."""
    raw = os.environ.get(EXTRACT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_EXTRACT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{EXTRACT_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def too_slow(limit: float) -> SourceError:
    """The error of a source read that outlasted ``limit`` seconds (exit 4)."""
    return SourceError(
        f"reading the sources took longer than {limit:g} s ({EXTRACT_TIMEOUT_ENV}; check-schema at most "
        f"{min(CHECK_SCHEMA_TIMEOUT, limit):g} s): a slow or locked source; raise the limit or look at the "
        "source's load"
    )


# ---- steps: one grouped query per table -------------------------------------------------


@dataclass(frozen=True)
class TableRead:
    """Steps read together: same source, table and way to the entity id (``via`` or column)."""

    source: str
    table: str
    steps: tuple[StepConfig, ...]


def table_reads(cfg: FrameworkConfig) -> list[TableRead]:
    """The tracked steps after the first, grouped into one read per source table (config order).

    Steps of one table that reach the entity differently (another ``via`` or id column) or
    time it by another column need another GROUP BY key, hence another read.
    """
    groups: dict[tuple, list[StepConfig]] = {}
    for step in cfg.tracked_steps[1:]:
        assert step.source and step.table
        path = step.via.model_dump_json() if step.via else step.entity_id
        groups.setdefault((step.source, step.table, path, step.timestamp), []).append(step)
    return [TableRead(source, table, tuple(steps)) for (source, table, *_), steps in groups.items()]


def _aggregates(name: str) -> list[str]:
    return [f"{c}__{name}" for c in AGGREGATE_COLUMNS[1:]]


def table_query(
    read: TableRead, engine: sa.Engine, tables: dict[tuple[str, str], sa.Table], end: datetime,
    since: dict[str, datetime] | None = None,
) -> tuple[sa.Select, list[_Out]]:
    """The one grouped query of a table read, and its output columns.

    Output: ``entity_id``, then per step (in ``read.steps`` order, suffix ``__<i>``) its
    ``first_at``, ``last_at``, ``records``, ``null_timestamps``, ``newest_any``. An entity
    appears once; its columns of a step it has no record of are NULL / 0.
    ``since``: step key -> read only that step's records at or after it (incremental).

    One step on its own table without ``via``: one GROUP BY by the entity, its filter in the
    ``WHERE`` (``_single_query``). Otherwise two levels, each one GROUP BY:

    1. ``per_key``: the table's records (``WHERE`` the union of the steps' filters) grouped by
       the key (the ``via`` foreign key, else the entity id), by each step's filter as a flag
       (``m<i>``: does the record count for step i) and by ``b`` (is its time before as_of_end;
       NULL for a NULL time), with MIN, MAX and COUNT(*) of the time: each filter is evaluated
       once per record and no aggregate carries a CASE, so this level costs little more than
       the plainest GROUP BY;
    2. the few rows per key joined once to the ``via`` table (when there is one) and regrouped
       by entity, the steps told apart by their flags (``MIN(CASE WHEN m<i> AND b THEN ...)``).
    """
    since = since or {}
    table = tables[(read.source, read.table)]
    times = {s.timestamp for s in read.steps}
    if len(times) != 1:  # another time column: another read (table_reads keeps them apart)
        raise ValueError(f"steps of one read must share their timestamp column: {sorted(times)}")
    first = read.steps[0]
    assert first.timestamp
    ts_col = table.c[first.timestamp]
    ts = _ts_expr(engine, ts_col)
    matches: list[sa.ColumnElement | None] = []
    for step in read.steps:
        conditions = [
            table.c[col].in_(v) if isinstance(v, list) else table.c[col] == v for col, v in (step.where or {}).items()
        ]
        if step.key in since:  # incremental: only records at or after the watermark minus the margin
            conditions.append(ts >= _ts_bound(engine, ts_col, since[step.key]))
        matches.append(sa.and_(*conditions) if conditions else None)
    where = None if any(m is None for m in matches) else sa.or_(*matches)
    if where is not None and len(read.steps) > 1 and all(s.key in since for s in read.steps):
        # every step reads from a watermark: the earliest, as a plain range the database can index
        earliest = min(since[s.key] for s in read.steps)
        where = sa.and_(ts >= _ts_bound(engine, ts_col, earliest), where)

    if len(read.steps) == 1 and first.via is None:
        return _single_query(table, first, ts_col, ts, where, engine, end)

    key = table.c[first.via.foreign_key] if first.via else table.c[first.entity_id]
    flags = {f"m{i}": m for i, m in enumerate(matches) if m is not None and len(read.steps) > 1}
    bound = _ts_bound(engine, ts_col, end)
    # Flags as boolean columns where the dialect selects predicates (PostgreSQL then knows each
    # has two values and picks a hash aggregate); else as CASE ... 1/0 (NULL time: b NULL).
    predicates = engine.dialect.name not in NO_PREDICATE_COLUMNS
    if predicates:
        flag_cols = [m.label(name) for name, m in flags.items()]
        before_col = (ts < bound).label("b")
    else:
        flag_cols = [sa.case((m, 1), else_=0).label(name) for name, m in flags.items()]
        before_col = sa.case((ts < bound, 1), (ts >= bound, 0)).label("b")
    rows = sa.select(key.label("k"), *flag_cols, before_col, ts.label("ts"))
    if where is not None:
        rows = rows.where(where)
    rows = rows.subquery("matched")
    group = [rows.c.k, *[rows.c[name] for name in flags], rows.c.b]
    per_key = (
        sa.select(
            *group, sa.func.min(rows.c.ts).label("lo"), sa.func.max(rows.c.ts).label("hi"),
            sa.func.count().label("n"),
        )
        .group_by(*group)
        .subquery("per_key")
    )

    exprs: list[sa.ColumnElement] = []
    outs: list[_Out] = []
    def true(column: sa.ColumnElement) -> sa.ColumnElement:
        return column if predicates else column == 1

    before = true(per_key.c.b)
    for i, _step in enumerate(read.steps):
        mine = true(per_key.c[f"m{i}"]) if f"m{i}" in flags else None
        counted = sa.and_(mine, before) if mine is not None else before
        nulls = sa.and_(mine, per_key.c.b.is_(None)) if mine is not None else per_key.c.b.is_(None)
        exprs += [
            sa.func.min(sa.case((counted, per_key.c.lo))),
            sa.func.max(sa.case((counted, per_key.c.hi))),
            sa.cast(sa.func.sum(sa.case((counted, per_key.c.n), else_=0)), sa.BigInteger),
            sa.cast(sa.func.sum(sa.case((nulls, per_key.c.n), else_=0)), sa.BigInteger),
            sa.func.max(sa.case((mine, per_key.c.hi)) if mine is not None else per_key.c.hi),
        ]
        names = _aggregates(str(i))
        outs += [
            _Out(names[0], "time", ts_col.type), _Out(names[1], "time", ts_col.type),
            _Out(names[2], "count"), _Out(names[3], "count"), _Out(names[4], "time", ts_col.type),
        ]
    if first.via is None:
        entity, source_from = per_key.c.k, per_key
        entity_type = table.c[first.entity_id].type
    else:  # the join, once, on the few rows per foreign key
        via = tables[(read.source, first.via.table)]
        entity = via.c[first.via.entity_id]
        entity_type = entity.type
        source_from = per_key.outerjoin(via, per_key.c.k == via.c[first.via.key])
    out_all = [_Out("entity_id", "value", entity_type), *outs]
    query = sa.select(*_select(engine, out_all, [entity, *exprs])).select_from(source_from).group_by(entity)
    return query, out_all


def _single_query(
    table: sa.Table, step: StepConfig, ts_col: sa.Column, ts: sa.ColumnElement, where: sa.ColumnElement | None,
    engine: sa.Engine, end: datetime,
) -> tuple[sa.Select, list[_Out]]:
    """One step on its own table, no join: one level, its filter in the WHERE."""
    before_end = sa.case((ts < _ts_bound(engine, ts_col, end), ts))
    entity = table.c[step.entity_id]
    names = _aggregates("0")
    outs = [
        _Out("entity_id", "value", entity.type),
        _Out(names[0], "time", ts_col.type), _Out(names[1], "time", ts_col.type),
        _Out(names[2], "count"), _Out(names[3], "count"), _Out(names[4], "time", ts_col.type),
    ]
    exprs = [
        entity, sa.func.min(before_end), sa.func.max(before_end), sa.func.count(before_end),
        sa.func.count() - sa.func.count(ts), sa.func.max(ts),
    ]
    query = sa.select(*_select(engine, outs, exprs))
    if where is not None:
        query = query.where(where)
    return query.group_by(entity), outs


def extract_table(
    read: TableRead, sources: Sources, end: datetime, since: dict[str, datetime] | None = None
) -> dict[str, pd.DataFrame]:
    """The step aggregates of one table read: step key -> frame (grain: see framework.milestones),
    one row per distinct entity-id value among the step's matching records."""
    since = since or {}
    engine = sources.engines[read.source]
    query, outs = table_query(read, engine, sources.tables, end, since)
    with _reading(read.source, engine) as conn:
        frame = _fetch(conn, engine, query, outs, sources, (read.source, read.table))
        fault_point("extract.table")  # test hook (tasks/faults.py): a table read, its connection open
    out: dict[str, pd.DataFrame] = {}
    for i, step in enumerate(read.steps):
        part = frame[["entity_id", *_aggregates(str(i))]]
        part.columns = AGGREGATE_COLUMNS
        if len(read.steps) > 1:  # entities with records of other steps of the table only
            seen = (part["records"] > 0) | (part["null_timestamps"] > 0) | part["newest_any"].notna()
            part = part[seen.to_numpy()]
        part = part.reset_index(drop=True)
        out[step.key] = part
        sources.rows_read[f"step:{step.key}"] = len(part)
        log.info(
            "step %s: %d entity rows from %s.%s%s", step.key, len(part), read.source, read.table,
            f" (records since {since[step.key]:%Y-%m-%d %H:%M})" if step.key in since else " (full read)",
        )
    return out


def extract_all(
    cfg: FrameworkConfig, sources: Sources, end: datetime, since: dict[str, datetime] | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Entities (always read whole: one row each) and one aggregate per step, read with one
    query per source table; ``since`` maps a step key to the time its incremental read starts
    from (steps not in it are read whole)."""
    since = since or {}
    entities = extract_entities(cfg, sources, end)
    aggregates: dict[str, pd.DataFrame] = {}
    for read in table_reads(cfg):
        aggregates.update(extract_table(read, sources, end, since))
    return entities, {s.key: aggregates[s.key] for s in cfg.tracked_steps[1:]}

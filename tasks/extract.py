"""Extraction from the source databases (SQLAlchemy Core). One I/O concern: reading sources.

Every query is an aggregate pushed down to the source: per step, grouped per
entity, the earliest and newest time before as_of_end, the count of records
before as_of_end, the count of NULL times, and the newest time of all (for
freshness); ``where`` values bound as parameters, ``via`` as one LEFT JOIN.
Identifiers come from reflected ``Table`` objects (checked before any query
runs), never from pasted SQL text.

Timestamps: naive values are UTC. On SQLite, text timestamps in any ISO-8601
form (space or ``T``, ``Z`` or ``+HH:MM`` offsets, fractional seconds) are
normalised in the query with ``strftime('%Y-%m-%d %H:%M:%f', ts)``, which
also converts offsets to UTC, so comparisons and MIN/MAX are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from framework.config import FrameworkConfig, StepConfig
from framework.errors import SchemaError, SourceError
from framework.milestones import AGGREGATE_COLUMNS, to_utc

log = logging.getLogger("growth.extract")

SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%f"
FETCH_CHUNK = 100_000


def redact(url: str | sa.URL) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown by its scheme only
        return str(url).split(":", 1)[0] + "://***"


@dataclass
class Sources:
    """Open SQLAlchemy engines, one per named source. Close with ``dispose()``."""

    engines: dict[str, sa.Engine]
    tables: dict[tuple[str, str], sa.Table] = field(default_factory=dict)
    rows_read: dict[str, int] = field(default_factory=dict)

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


def open_sources(urls: dict[str, str]) -> Sources:
    engines = {}
    for name, url in urls.items():
        try:
            engines[name] = sa.create_engine(url, pool_pre_ping=True)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError) as exc:
            raise SourceError(f"source '{name}' ({redact(url)}): cannot use this URL: {exc}") from None
    return Sources(engines)


@contextmanager
def _reading(source: str, engine: sa.Engine) -> Iterator[sa.Connection]:
    try:
        with engine.connect() as conn:
            yield conn
    except sa_exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        transient = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
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
    for (source, table_name), columns in needed.items():
        engine = sources.engines[source]
        schema, name = _split_schema(table_name)
        with _reading(source, engine) as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(name, schema=schema):
                existing = sorted(inspector.get_table_names(schema=schema))
                whos = sorted({w for _, w in columns})
                problems.append(
                    f"{whos[0]}: source '{source}' has no table '{table_name}' "
                    f"(tables: {', '.join(existing) or 'none'})"
                )
                continue
            table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
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


def _to_utc(values: pd.Series) -> pd.Series:
    """UTC timestamps at millisecond precision, rounded half up as SQLite's date functions
    round them, so every database is read alike and gives the same numbers."""
    return (to_utc(values) + pd.Timedelta(microseconds=500)).dt.floor("ms")


def _fetch(conn: sa.Connection, query: sa.Select, columns: list[str]) -> tuple[pd.DataFrame, int]:
    result = conn.execution_options(stream_results=True, yield_per=FETCH_CHUNK).execute(query)
    parts = [pd.DataFrame.from_records(list(chunk), columns=columns) for chunk in result.partitions()]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame, len(frame)


def extract_entities(cfg: FrameworkConfig, sources: Sources, end: datetime) -> pd.DataFrame:
    """Grain: one row per entity record (duplicates and NULLs kept for the quality gate).

    Columns ``entity_id``, ``created_at`` (UTC), one column per attribute.
    Records created at or after ``end`` are left in the database.
    """
    e = cfg.entity
    engine = sources.engines[e.source]
    table = sources.tables[(e.source, e.table)]
    created = _ts_expr(engine, table.c[e.created_at])
    query = sa.select(
        table.c[e.id].label("entity_id"),
        created.label("created_at"),
        *[table.c[a].label(f"attr_{i}") for i, a in enumerate(e.attributes)],
    ).where(sa.or_(created < _ts_bound(engine, table.c[e.created_at], end), created.is_(None)))
    with _reading(e.source, engine) as conn:
        frame, n = _fetch(conn, query, ["entity_id", "created_at", *e.attributes])
    sources.rows_read[f"entity:{e.table}"] = n
    frame["created_at"] = _to_utc(frame["created_at"])
    log.info("read %d %s records from %s.%s", n, e.name, e.source, e.table)
    return frame


def step_query(
    step: StepConfig, engine: sa.Engine, tables: dict[tuple[str, str], sa.Table], end: datetime,
    since: datetime | None = None,
) -> sa.Select:
    """The one aggregate query of a step."""
    assert step.source and step.table and step.timestamp
    table = tables[(step.source, step.table)]
    ts_col = table.c[step.timestamp]
    ts = _ts_expr(engine, ts_col)
    if step.via:
        via = tables[(step.source, step.via.table)]
        entity = via.c[step.via.entity_id]
        source_from = table.outerjoin(via, table.c[step.via.foreign_key] == via.c[step.via.key])
    else:
        entity = table.c[step.entity_id]
        source_from = table
    conditions = [table.c[col].in_(v) if isinstance(v, list) else table.c[col] == v for col, v in (step.where or {}).items()]
    if since is not None:  # incremental: only records at or after the watermark minus the late-arrival margin
        conditions.append(ts >= _ts_bound(engine, ts_col, since))
    before_end = sa.case((ts < _ts_bound(engine, ts_col, end), ts))
    return (
        sa.select(
            entity.label("entity_id"),
            sa.func.min(before_end).label("first_at"),
            sa.func.max(before_end).label("last_at"),
            sa.func.count(before_end).label("records"),
            (sa.func.count() - sa.func.count(ts)).label("null_timestamps"),
            sa.func.max(ts).label("newest_any"),
        )
        .select_from(source_from)
        .where(*conditions)
        .group_by(entity)
    )


def extract_step(
    cfg: FrameworkConfig, step: StepConfig, sources: Sources, end: datetime, since: datetime | None = None
) -> pd.DataFrame:
    """Grain: one row per distinct entity-id value among the step's records (see framework.milestones).

    ``since``: read only records at or after it (incremental runs); None reads everything.
    """
    assert step.source
    engine = sources.engines[step.source]
    query = step_query(step, engine, sources.tables, end, since)
    with _reading(step.source, engine) as conn:
        frame, n = _fetch(conn, query, AGGREGATE_COLUMNS)
    for col in ("first_at", "last_at", "newest_any"):
        frame[col] = _to_utc(frame[col])
    sources.rows_read[f"step:{step.key}"] = n
    log.info(
        "step %s: %d entity rows from %s.%s%s", step.key, n, step.source, step.table,
        f" (records since {since:%Y-%m-%d %H:%M})" if since else " (full read)",
    )
    return frame


def extract_all(
    cfg: FrameworkConfig, sources: Sources, end: datetime, since: dict[str, datetime] | None = None
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Entities (always read whole: one row each) and one aggregate per step; ``since`` maps a
    step key to the time its incremental read starts from (steps not in it are read whole)."""
    since = since or {}
    entities = extract_entities(cfg, sources, end)
    aggregates = {s.key: extract_step(cfg, s, sources, end, since.get(s.key)) for s in cfg.tracked_steps[1:]}
    return entities, aggregates

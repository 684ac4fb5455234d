"""The metric store: every run's results in SQL tables a team can query (SQLAlchemy Core).

SQLite file by default (``sqlite:///data/growth.db``), PostgreSQL in production.
The schema is managed by Alembic (``tasks/store_migrations``, version table
``gf_alembic_version``) and upgraded to head by `MetricStore.open`.

Tables and their grain (see docs/store.md):

* ``gf_runs``: one row per run attempt (id autoincrement): framework,
  framework_hash, as_of, started_at, ended_at, status (``running``,
  ``succeeded``, ``failed``, ``failed_quality``, ``superseded``),
  quality_status, delivery_status, flow_run_id, error.
* ``gf_snapshots``: one row per framework x as_of: the committed results
  (run_id, version: 1 for the first commit, +1 per later commit,
  committed_at, report_json: the full report, status: ``succeeded`` or
  ``failed_quality``: results the quality gate blocked are stored too, but
  trends, the previous-run comparison and the history export leave them out).
* ``gf_step_metrics``: one row per framework x as_of x step: every scalar key
  of the report's ``steps`` (``key`` is column ``step``).
* ``gf_cohort_metrics``: one row per framework x as_of x cohort x segment x
  value x step; the overall population has ``segment = value = ''``.
* ``gf_segment_metrics``: one row per framework x as_of x segment x value x
  step (current period).
* ``gf_quality_checks``: one row per framework x as_of x check name.
* ``gf_milestone_sets``: one row per framework x step: the earliest known
  reached_at of every entity that reached the step (for incremental
  extraction), as one Arrow IPC stream (``payload``; columns ``entity_id``
  text, ``reached_at`` timestamp[us, UTC]; see `encode_milestones`).
* ``gf_watermarks``: one row per framework x step: the extraction watermark.
* ``gf_deliveries``: one row per framework x as_of x channel: the Slack
  message (channel_id, ts), status, first_posted_at, updated_at.

Writes of one as_of are one transaction (``commit_results``): the metric rows
of (framework, as_of) are replaced and the snapshot's version is bumped with
optimistic concurrency (the primary key of ``gf_snapshots`` or
``UPDATE ... WHERE version = <base>``), so two runs of the same as_of cannot
both commit. Timestamps are stored in UTC and returned timezone-aware (UTC).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from framework.errors import GrowthError
from framework.milestones import ids_as_text, int_keys
from tasks.faults import fault_point
from tasks.secrets import redact

log = logging.getLogger("growth.store")

DEFAULT_URL = "sqlite:///data/growth.db"
VERSION_TABLE = "gf_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "store_migrations"
RUN_STATUSES = ("running", "succeeded", "failed", "failed_quality", "superseded")
SQLITE_BUSY_TIMEOUT_S = 60.0
PG_LOCK_NAME = "growth-framework metric store migrations"
CHUNK = 20_000
MILESTONE_LOCK = "growth-framework milestones"


class StoreError(GrowthError):
    """The metric store is unreachable or unwritable (the message never shows a password)."""

    exit_code = 4


class ConcurrentRunError(GrowthError):
    """Another run for the same framework and as_of committed first; its results stand."""

    exit_code = 0


@dataclass(frozen=True)
class RunHandle:
    run_id: int
    framework: str
    as_of: date
    base_version: int  # the snapshot version seen by begin_run; 0 when nothing was stored yet


@dataclass(frozen=True)
class DeliveryRecord:
    channel: str
    channel_id: str | None
    ts: str | None
    status: str


# --------------------------------------------------------------------------- schema (head)


class UTCDateTime(sa.TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()


def _key(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Date if n == "as_of" else sa.Text, primary_key=True) for n in names]


runs = sa.Table(
    "gf_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("framework", sa.Text, nullable=False),
    sa.Column("framework_hash", sa.Text, nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("quality_status", sa.String(32)),
    sa.Column("delivery_status", sa.String(32)),
    sa.Column("flow_run_id", sa.Text),
    sa.Column("error", sa.Text),
    sa.Index("ix_gf_runs_framework_as_of", "framework", "as_of"),
)
snapshots = sa.Table(
    "gf_snapshots", metadata,
    *_key("framework", "as_of"),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("gf_runs.id", name="fk_gf_snapshots_run_id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("committed_at", UTCDateTime, nullable=False),
    sa.Column("report_json", sa.Text),
    sa.Column("status", sa.String(32), nullable=False, server_default="succeeded"),
)
SNAPSHOT_STATUSES = ("succeeded", "failed_quality")
STEP_INT = ("entered", "reached", "lost", "previous_entered", "previous_reached")
STEP_FLOAT = (
    "conversion", "overall_conversion", "median_hours", "p90_hours", "previous_conversion",
    "delta_pp", "p_value", "target", "opportunity",
)
step_metrics = sa.Table(
    "gf_step_metrics", metadata,
    *_key("framework", "as_of", "step"),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("tracked", sa.Boolean),
    sa.Column("qualifying", sa.Boolean),
    sa.Column("entered", sa.BigInteger),
    sa.Column("reached", sa.BigInteger),
    sa.Column("conversion", sa.Double),
    sa.Column("overall_conversion", sa.Double),
    sa.Column("lost", sa.BigInteger),
    sa.Column("median_hours", sa.Double),
    sa.Column("p90_hours", sa.Double),
    sa.Column("previous_conversion", sa.Double),
    sa.Column("delta_pp", sa.Double),
    sa.Column("p_value", sa.Double),
    sa.Column("target", sa.Double),
    sa.Column("opportunity", sa.Double),
    sa.Column("previous_entered", sa.BigInteger),
    sa.Column("previous_reached", sa.BigInteger),
)
cohort_metrics = sa.Table(
    "gf_cohort_metrics", metadata,
    *_key("framework", "as_of", "cohort", "segment", "value", "step"),
    sa.Column("mature", sa.Boolean),
    sa.Column("entered", sa.BigInteger),
    sa.Column("reached", sa.BigInteger),
    sa.Column("conversion", sa.Double),
)
segment_metrics = sa.Table(
    "gf_segment_metrics", metadata,
    *_key("framework", "as_of", "segment", "value", "step"),
    sa.Column("entered", sa.BigInteger),
    sa.Column("reached", sa.BigInteger),
    sa.Column("conversion", sa.Double),
)
quality_checks = sa.Table(
    "gf_quality_checks", metadata,
    *_key("framework", "as_of", "name"),
    sa.Column("target", sa.Text),
    sa.Column("severity", sa.String(16)),
    sa.Column("success", sa.Boolean),
    sa.Column("observed", sa.Text),
)
# Per-entity state is entities x steps: one row per (step, entity) made every full run write,
# and every incremental run read, millions of rows (issue 9). One compressed Arrow stream per
# step is written and read in a fraction of a second (docs/performance.md).
milestone_sets = sa.Table(
    "gf_milestone_sets", metadata,
    *_key("framework", "step"),
    sa.Column("entities", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

watermarks = sa.Table(
    "gf_watermarks", metadata,
    *_key("framework", "step"),
    sa.Column("watermark", UTCDateTime, nullable=False),
)
deliveries = sa.Table(
    "gf_deliveries", metadata,
    *_key("framework", "as_of", "channel"),
    sa.Column("channel_id", sa.Text),
    sa.Column("ts", sa.Text),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("first_posted_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
METRIC_TABLES = (step_metrics, cohort_metrics, segment_metrics, quality_checks)

HISTORY_COLUMNS = [
    "framework", "as_of", "step", "position", "entered", "reached", "conversion",
    "name", "tracked", "qualifying", "overall_conversion", "lost", "median_hours", "p90_hours",
    "previous_conversion", "delta_pp", "p_value", "target", "opportunity",
    "previous_entered", "previous_reached",
]


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _py(value: Any) -> Any:
    """Plain Python scalars for the driver and JSON: numpy scalars unwrapped, NaN/inf -> None."""
    if value is None or isinstance(value, str | bool):
        return value
    if hasattr(value, "item") and not isinstance(value, int | float):
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return _py(value)


def _int(value: Any) -> int | None:
    value = _py(value)
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    value = _py(value)
    return None if value is None else float(value)


def _bool(value: Any) -> bool | None:
    value = _py(value)
    return None if value is None else bool(value)


def _text(value: Any) -> str:
    value = _py(value)
    return "" if value is None else str(value)


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _chunks(rows: list[dict], size: int = CHUNK) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    for chunk in _chunks(rows):
        conn.execute(table.insert(), chunk)


def _upsert(conn: sa.Connection, table: sa.Table):
    """The dialect's INSERT construct that supports ON CONFLICT (PostgreSQL and SQLite)."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"metric store: unsupported database '{name}' (use SQLite or PostgreSQL)")


def _migration_config(connection: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_migration_config()).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@functools.cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(s.revision for s in ScriptDirectory.from_config(_migration_config()).walk_revisions())


def _make_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise StoreError(f"metric store ({redact(url)}): cannot use this URL: {exc}") from None
    connect_args: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"metric store ({redact(url)}): cannot create its folder: {exc}") from None
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = 10
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError, TypeError) as exc:
        raise StoreError(f"metric store ({redact(url)}): cannot use this URL: {exc}") from None
    if engine.dialect.name not in ("sqlite", "postgresql"):
        engine.dispose()
        raise StoreError(f"metric store ({redact(url)}): unsupported database (use SQLite or PostgreSQL)")
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Real SQLite transactions: SQLAlchemy emits BEGIN (DDL included), BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling is switched off (it neither begins before
    DDL nor lets us take the write lock up front). Write transactions take the
    database's write lock at BEGIN, so two writers queue (busy timeout) instead of
    failing on a lock upgrade.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("gf_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _write_connection(engine: sa.Engine) -> sa.Connection:
    return engine.connect().execution_options(gf_write=True)


def migrate(engine: sa.Engine | str, revision: str = "head") -> None:
    """Upgrade the store's schema to ``revision`` under a lock (PostgreSQL advisory lock, SQLite write lock).

    Safe when several processes start at once: they queue on the lock and the
    later ones find the schema already upgraded.
    """
    from alembic import command

    own = isinstance(engine, str)
    eng = _make_engine(engine) if isinstance(engine, str) else engine
    try:
        with _write_connection(eng) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text(
                        "SELECT pg_advisory_xact_lock(hashtext(CAST(:name AS text) || coalesce(current_schema(), '')))"
                    ),
                    {"name": PG_LOCK_NAME},
                )
            command.upgrade(_migration_config(conn), revision)
    finally:
        if own:
            eng.dispose()


# --------------------------------------------------------------------------- the store


class MetricStore:
    """An open metric store. Create with `MetricStore.open(url)`; `close()` when done."""

    def __init__(self, engine: sa.Engine, url: str):
        self.engine = engine
        self.url = url
        self._shown = redact(url)
        self._password = sa.make_url(url).password

    # ---- opening

    @classmethod
    def open(cls, url: str | None = None) -> MetricStore:
        """Open (creating the SQLite file and its folder if needed) and upgrade the schema to head."""
        url = url or DEFAULT_URL
        store = cls(_make_engine(url), url)
        try:
            store._upgrade()
        except BaseException:
            store.close()
            raise
        return store

    def _upgrade(self) -> None:
        head = head_revision()
        with self._guard("open"):
            with self.engine.connect() as conn:
                current = current_revision(conn)
            if current == head:
                return
            if current is not None and current not in _known_revisions():
                raise StoreError(
                    f"metric store ({self._shown}) is at schema revision {current}, newer than this "
                    f"version of growth-framework knows (head {head}): upgrade growth-framework"
                )
            log.info("upgrading the metric store schema from %s to %s", current or "nothing", head)
            for attempt in range(3):
                try:
                    migrate(self.engine)
                    return
                except sa_exc.OperationalError as exc:  # SQLite: locked beyond the busy timeout
                    if self.engine.dialect.name != "sqlite" or "locked" not in str(exc.orig) or attempt == 2:
                        raise
                    time.sleep(0.5 * (attempt + 1))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> MetricStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing

    def _message(self, what: str, exc: BaseException) -> str:
        orig = getattr(exc, "orig", None)
        detail = (str(orig) if orig is not None else str(exc)).strip().splitlines()
        text = f"metric store ({self._shown}): cannot {what}: {detail[0] if detail else type(exc).__name__}"
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(self._message(what, exc)) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("alembic", "psycopg", "sqlite3")):
                raise StoreError(self._message(what, exc)) from None
            raise

    @contextmanager
    def _read(self, what: str) -> Iterator[sa.Connection]:
        with self._guard(what), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sa.Connection]:
        with self._guard(what), _write_connection(self.engine) as conn, conn.begin():
            yield conn

    # ---- runs

    def begin_run(self, framework: str, framework_hash: str, as_of: date, flow_run_id: str | None) -> RunHandle:
        """Record a run attempt (status ``running``) and the snapshot version it builds on."""
        as_of = _as_date(as_of)
        with self._write("record the run") as conn:
            run_id = conn.execute(
                runs.insert().values(
                    framework=framework, framework_hash=framework_hash, as_of=as_of,
                    started_at=_now(), status="running", flow_run_id=flow_run_id,
                )
            ).inserted_primary_key[0]
            base = conn.execute(
                sa.select(snapshots.c.version).where(
                    snapshots.c.framework == framework, snapshots.c.as_of == as_of
                )
            ).scalar_one_or_none()
        return RunHandle(int(run_id), framework, as_of, int(base or 0))

    def finish_run(
        self, run: RunHandle, status: str, quality_status: str | None = None,
        delivery_status: str | None = None, error: str | None = None,
    ) -> None:
        """Close a run attempt: status, ended_at, and the given statuses/error (None leaves a field as is).

        A run already marked ``superseded`` (a later run replaced its results, or
        it lost the race to commit) keeps that status.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        values: dict[str, Any] = {
            "ended_at": _now(),
            "status": sa.case((runs.c.status == "superseded", "superseded"), else_=status),
        }
        for key, value in (("quality_status", quality_status), ("delivery_status", delivery_status), ("error", error)):
            if value is not None:
                values[key] = value
        with self._write("record the run") as conn:
            conn.execute(runs.update().where(runs.c.id == run.run_id).values(**values))

    # ---- results

    def commit_results(
        self, run: RunHandle, report: dict, watermarks: dict[str, datetime] | None = None,
        milestones: pd.DataFrame | None = None, reset_steps: list[str] | None = None,
        status: str = "succeeded",
    ) -> int:
        """Store ``report`` as the results of (run.framework, run.as_of), in one transaction.

        Replaces every metric row of that as_of, writes the snapshot (version + 1,
        report_json) and, when given, watermarks and milestones (``reset_steps``: the
        stored milestones of these steps are deleted first, for a full refresh). Returns the new
        version. Raises `ConcurrentRunError` (and marks this run ``superseded``)
        when another run committed the same as_of since `begin_run`.

        ``status`` ``failed_quality``: results the quality gate blocked. They replace the
        as_of's results like any commit (the newest computation of a day is the one
        stored), but `trend`, `step_history` and ``load_report(passed_only=True)`` skip
        them; store no milestones or watermarks with them (the next run must re-read).
        """
        if status not in SNAPSHOT_STATUSES:
            raise ValueError(f"snapshot status must be one of {', '.join(SNAPSHOT_STATUSES)}, not {status!r}")
        reported = report.get("as_of")
        if reported is not None and _as_date(reported) != run.as_of:
            raise ValueError(f"report as_of {reported} does not match the run's as_of {run.as_of}")
        report = _clean(report)
        payload = json.dumps(report, ensure_ascii=False, allow_nan=False)
        rows = _metric_rows(run.framework, run.as_of, report)
        lost = False
        with self._write("write the results") as conn:
            claimed, previous_run = self._claim_snapshot(conn, run, payload, status)
            if not claimed:
                lost = True
            else:
                for table in METRIC_TABLES:
                    conn.execute(table.delete().where(table.c.framework == run.framework, table.c.as_of == run.as_of))
                fault_point("store.write")
                for table in METRIC_TABLES:
                    _insert_many(conn, table, rows[table.name])
                if watermarks:
                    self._set_watermarks(conn, run.framework, watermarks)
                if reset_steps or (milestones is not None and len(milestones)):
                    self._upsert_milestones(conn, run.framework, milestones, replace=reset_steps or ())
                if previous_run is not None and previous_run != run.run_id:
                    conn.execute(runs.update().where(runs.c.id == previous_run).values(status="superseded"))
        message = f"another run for {run.framework} {run.as_of} committed first; its results stand"
        if lost:
            with self._write("record the run") as conn:
                conn.execute(
                    runs.update().where(runs.c.id == run.run_id)
                    .values(status="superseded", ended_at=_now(), error=message)
                )
            raise ConcurrentRunError(message)
        return run.base_version + 1

    def _claim_snapshot(
        self, conn: sa.Connection, run: RunHandle, payload: str, status: str = "succeeded"
    ) -> tuple[bool, int | None]:
        """Insert (base 0) or bump (base n) the snapshot row, locking it until commit.

        Returns (claimed, the run id of the results being replaced); claimed is
        False when another run got there first.
        """
        where = (snapshots.c.framework == run.framework, snapshots.c.as_of == run.as_of)
        values = {"run_id": run.run_id, "version": run.base_version + 1,
                  "committed_at": _now(), "report_json": payload, "status": status}
        if run.base_version == 0:
            try:
                with conn.begin_nested():
                    conn.execute(snapshots.insert().values(framework=run.framework, as_of=run.as_of, **values))
            except sa_exc.IntegrityError:
                return False, None
            return True, None
        current = conn.execute(
            sa.select(snapshots.c.version, snapshots.c.run_id).where(*where).with_for_update()
        ).first()
        if current is None or current.version != run.base_version:
            return False, None
        done = conn.execute(
            snapshots.update().where(*where, snapshots.c.version == run.base_version).values(**values)
        )
        return done.rowcount == 1, current.run_id

    def has_results(self, framework: str, as_of: date, passed_only: bool = False) -> bool:
        """Whether results of (framework, as_of) are stored (``passed_only``: and not ``failed_quality``)."""
        where = [snapshots.c.framework == framework, snapshots.c.as_of == _as_date(as_of)]
        if passed_only:
            where.append(snapshots.c.status == "succeeded")
        with self._read("read the store") as conn:
            return conn.execute(sa.select(sa.literal(1)).where(*where)).first() is not None

    def stored_dates(self, framework: str) -> list[date]:
        with self._read("read the store") as conn:
            return list(conn.execute(
                sa.select(snapshots.c.as_of).where(snapshots.c.framework == framework).order_by(snapshots.c.as_of)
            ).scalars())

    def stored_version(self, framework: str, as_of: date) -> int:
        """The snapshot version of (framework, as_of); 0 when nothing is stored."""
        with self._read("read the store") as conn:
            version = conn.execute(
                sa.select(snapshots.c.version).where(snapshots.c.framework == framework, snapshots.c.as_of == _as_date(as_of))
            ).scalar_one_or_none()
        return int(version or 0)

    def load_report(self, framework: str, as_of: date, passed_only: bool = False) -> dict | None:
        """The stored report of (framework, as_of), or None (also when ``passed_only`` and
        the stored results are ``failed_quality``).

        Snapshots written before schema revision 0002 have no report JSON: their
        report is rebuilt from the metric tables (framework, as_of, steps, cohorts,
        segments, data_quality checks).
        """
        as_of = _as_date(as_of)
        with self._read("read the store") as conn:
            row = conn.execute(
                sa.select(snapshots.c.report_json, snapshots.c.status)
                .where(snapshots.c.framework == framework, snapshots.c.as_of == as_of)
            ).first()
            if row is None or (passed_only and row.status != "succeeded"):
                return None
            if row.report_json:
                return json.loads(row.report_json)
            return _rebuild_report(conn, framework, as_of)

    def trend(self, framework: str, as_of: date, limit: int = 28) -> dict[str, list[tuple[date, float | None]]]:
        """Per step key, the conversion of the last ``limit`` passed snapshots with as_of' <= as_of,
        oldest first (``failed_quality`` results are left out).

        Every list has one entry per such snapshot (the same dates for every step;
        conversion None where the step was untracked or absent). Steps are in the
        order of their position in the newest snapshot that has them.
        """
        as_of = _as_date(as_of)
        if limit <= 0:
            return {}
        with self._read("read the store") as conn:
            dates = sorted(conn.execute(
                sa.select(snapshots.c.as_of)
                .where(snapshots.c.framework == framework, snapshots.c.as_of <= as_of, snapshots.c.status == "succeeded")
                .order_by(snapshots.c.as_of.desc()).limit(limit)
            ).scalars())
            if not dates:
                return {}
            rows = conn.execute(
                sa.select(step_metrics.c.as_of, step_metrics.c.step, step_metrics.c.position, step_metrics.c.conversion)
                .where(step_metrics.c.framework == framework, step_metrics.c.as_of.in_(dates))
                .order_by(step_metrics.c.as_of, step_metrics.c.position)
            ).all()
        values: dict[str, dict[date, float | None]] = {}
        position: dict[str, int] = {}
        for row in rows:
            values.setdefault(row.step, {})[row.as_of] = row.conversion
            position[row.step] = row.position  # rows are oldest first: the newest position wins
        order = sorted(values, key=lambda k: (position[k], k))
        return {k: [(d, values[k].get(d)) for d in dates] for k in order}

    def step_history(self, framework: str) -> pd.DataFrame:
        """One row per as_of x step (ordered by as_of, position): the stored step metrics of
        passed runs (``failed_quality`` results are left out)."""
        cols = [step_metrics.c[c] for c in HISTORY_COLUMNS]
        passed = sa.select(snapshots.c.as_of).where(snapshots.c.framework == framework, snapshots.c.status == "succeeded")
        with self._read("read the store") as conn:
            rows = conn.execute(
                sa.select(*cols).where(step_metrics.c.framework == framework, step_metrics.c.as_of.in_(passed))
                .order_by(step_metrics.c.as_of, step_metrics.c.position, step_metrics.c.step)
            ).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=HISTORY_COLUMNS)
        for col in ("position", *STEP_INT):
            frame[col] = frame[col].astype("Int64")
        for col in STEP_FLOAT:
            frame[col] = frame[col].astype("float64")
        for col in ("tracked", "qualifying"):
            frame[col] = frame[col].astype("boolean")
        frame["as_of"] = frame["as_of"].astype(object)  # datetime.date values
        return frame

    # ---- deliveries

    def get_delivery(self, framework: str, as_of: date, channel: str) -> DeliveryRecord | None:
        with self._read("read the store") as conn:
            row = conn.execute(
                sa.select(deliveries.c.channel, deliveries.c.channel_id, deliveries.c.ts, deliveries.c.status).where(
                    deliveries.c.framework == framework, deliveries.c.as_of == _as_date(as_of),
                    deliveries.c.channel == channel,
                )
            ).first()
        return None if row is None else DeliveryRecord(row.channel, row.channel_id, row.ts, row.status)

    def record_delivery(
        self, framework: str, as_of: date, channel: str, channel_id: str | None, ts: str | None, status: str,
    ) -> None:
        """Upsert the delivery of (framework, as_of, channel).

        A later record with ``channel_id``/``ts`` None keeps the stored ones (a
        failed update must not forget the message it failed to update);
        ``first_posted_at`` is set the first time a ``ts`` is recorded.
        """
        now = _now()
        with self._write("record the delivery") as conn:
            stmt = _upsert(conn, deliveries).values(
                framework=framework, as_of=_as_date(as_of), channel=channel, channel_id=channel_id, ts=ts,
                status=status, first_posted_at=now if ts else None, updated_at=now,
            )
            ex = stmt.excluded
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[deliveries.c.framework, deliveries.c.as_of, deliveries.c.channel],
                set_={
                    "channel_id": sa.func.coalesce(ex.channel_id, deliveries.c.channel_id),
                    "ts": sa.func.coalesce(ex.ts, deliveries.c.ts),
                    "status": ex.status,
                    "first_posted_at": sa.func.coalesce(deliveries.c.first_posted_at, ex.first_posted_at),
                    "updated_at": ex.updated_at,
                },
            ))

    # ---- incremental extraction

    def get_watermarks(self, framework: str) -> dict[str, datetime]:
        with self._read("read the store") as conn:
            rows = conn.execute(
                sa.select(watermarks.c.step, watermarks.c.watermark).where(watermarks.c.framework == framework)
            ).all()
        return {r.step: r.watermark for r in rows}

    def set_watermarks(self, framework: str, values: dict[str, datetime]) -> None:
        with self._write("write the watermarks") as conn:
            self._set_watermarks(conn, framework, values)

    def _set_watermarks(self, conn: sa.Connection, framework: str, values: dict[str, datetime]) -> None:
        if not values:
            return
        stmt = _upsert(conn, watermarks)
        stmt = stmt.on_conflict_do_update(
            index_elements=[watermarks.c.framework, watermarks.c.step],
            set_={"watermark": stmt.excluded.watermark},
        )
        conn.execute(stmt, [{"framework": framework, "step": k, "watermark": v} for k, v in values.items()])

    def upsert_milestones(self, framework: str, frame: pd.DataFrame) -> int:
        """Merge milestones (columns ``step``, ``entity_id``, ``reached_at``); the earlier time wins.

        Returns the number of distinct (step, entity_id) rows written.
        """
        with self._write("write the milestones") as conn:
            return self._upsert_milestones(conn, framework, frame)

    def _upsert_milestones(
        self, conn: sa.Connection, framework: str, frame: pd.DataFrame | None, replace: Iterable[str] = (),
    ) -> int:
        """Merge ``frame`` into the stored sets of its steps (the earlier time wins); the sets of
        the ``replace`` steps are replaced by the frame's rows instead (full refresh).

        Read, merge and write of a set happen under the write lock (SQLite) or a transaction-level
        advisory lock of the framework (PostgreSQL), so concurrent commits cannot lose rows.
        Returns the number of distinct (step, entity_id) rows in ``frame``.
        """
        data = _milestone_frame(frame)
        replace = set(replace)
        steps = sorted(set(data["step"].unique().tolist()) | replace)
        if not steps:
            return 0
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(CAST(:name AS text) || CAST(:framework AS text)))"),
                {"name": MILESTONE_LOCK, "framework": framework},
            )
        keep = [s for s in steps if s not in replace]
        stored = {
            r.step: r.payload for r in conn.execute(
                sa.select(milestone_sets.c.step, milestone_sets.c.payload)
                .where(milestone_sets.c.framework == framework, milestone_sets.c.step.in_(keep))
            )
        } if keep else {}
        codes, names = pd.factorize(data["step"])
        now = _now()
        for step in steps:
            rows = data.iloc[np.flatnonzero(codes == names.get_loc(step))] if step in names else data.iloc[:0]
            if not pd.Index(rows["entity_id"]).is_unique:  # ON CONFLICT semantics: the earliest wins
                rows = rows.groupby("entity_id", sort=False, as_index=False)["reached_at"].min()
            ids, reached = rows["entity_id"], rows["reached_at"]
            if step in stored:
                ids, reached = _merge_earliest(*decode_milestones(stored[step]), ids, reached)
            where = (milestone_sets.c.framework == framework, milestone_sets.c.step == step)
            conn.execute(milestone_sets.delete().where(*where))
            if len(ids):
                conn.execute(milestone_sets.insert().values(
                    framework=framework, step=step, entities=len(ids), payload=encode_milestones(ids, reached),
                    updated_at=now,
                ))
        return len(data)

    def load_milestones(self, framework: str) -> pd.DataFrame:
        """All stored milestones of a framework: ``step`` (categorical text), ``entity_id`` (text),
        ``reached_at`` (UTC)."""
        with self._read("read the milestones") as conn:
            sets = conn.execute(
                sa.select(milestone_sets.c.step, milestone_sets.c.payload)
                .where(milestone_sets.c.framework == framework).order_by(milestone_sets.c.step)
            ).all()
        frames = []
        for row in sets:
            ids, reached = decode_milestones(row.payload)
            frames.append(pd.DataFrame({"entity_id": ids, "reached_at": reached}))
        if not frames:
            return pd.DataFrame({
                "step": pd.Series([], dtype="str"), "entity_id": pd.Series([], dtype="str"),
                "reached_at": pd.Series([], dtype="datetime64[us, UTC]"),
            })
        frame = pd.concat(frames, ignore_index=True)
        # one category per step: selecting and renaming steps costs per step, not per row
        codes = np.repeat(np.arange(len(sets), dtype=np.int32), [len(f) for f in frames])
        frame.insert(0, "step", pd.Categorical.from_codes(codes, categories=[row.step for row in sets]))
        return frame


# --------------------------------------------------------------------------- milestone sets


def encode_milestones(ids: pd.Series, reached: pd.Series) -> bytes:
    """One step's milestones as the stored payload: an Arrow IPC stream (zstd), columns
    ``entity_id`` (text) and ``reached_at`` (timestamp[us, UTC]).
    Read it back with `decode_milestones` (or ``pyarrow.ipc.open_stream(payload).read_pandas()``)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = pa.table({
        "entity_id": pa.Array.from_pandas(pd.Series(ids).astype("str").reset_index(drop=True), type=pa.string()),
        "reached_at": pa.Array.from_pandas(
            pd.Series(reached).astype("datetime64[us, UTC]").reset_index(drop=True), type=pa.timestamp("us", "UTC")
        ),
    })
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_milestones(payload: bytes) -> tuple[pd.Series, pd.Series]:
    """``(entity_id, reached_at)`` of a stored payload (see `encode_milestones`)."""
    import pyarrow.ipc as ipc

    frame = ipc.open_stream(payload).read_pandas()
    return frame["entity_id"].astype("str"), frame["reached_at"].astype("datetime64[us, UTC]")


def _merge_earliest(
    old_ids: pd.Series, old_at: pd.Series, new_ids: pd.Series, new_at: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """One step's stored milestones merged with new ones (both unique per id, ids as text):
    the earlier time wins; one hash lookup of the new ids, no sort (of integers when every id
    is the text of one)."""
    old_int, new_int = int_keys(old_ids), int_keys(pd.Series(new_ids).astype("str"))
    if old_int is not None and new_int is not None:
        pos = pd.Index(old_int).get_indexer(new_int)
    else:
        pos = pd.Index(old_ids).get_indexer(pd.Series(new_ids).astype("str"))
    found = pos >= 0
    old_us = old_at.to_numpy(dtype="datetime64[us]").copy()
    new_us = pd.Series(new_at).astype("datetime64[us, UTC]").to_numpy(dtype="datetime64[us]")
    earlier = found.copy()
    earlier[found] = new_us[found] < old_us[pos[found]]
    old_us[pos[earlier]] = new_us[earlier]
    ids = pd.concat([old_ids.reset_index(drop=True), pd.Series(new_ids).astype("str")[~found]], ignore_index=True)
    at = np.concatenate([old_us, new_us[~found]])
    return ids, pd.Series(at).dt.tz_localize("UTC")


# --------------------------------------------------------------------------- row builders


def _metric_rows(framework: str, as_of: date, report: dict) -> dict[str, list[dict]]:
    key = {"framework": framework, "as_of": as_of}
    steps = []
    for i, s in enumerate(report.get("steps") or [], start=1):
        row = {**key, "step": str(s["key"]), "position": _int(s.get("position")) or i,
               "name": s.get("name"), "tracked": _bool(s.get("tracked")), "qualifying": _bool(s.get("qualifying"))}
        row.update({c: _int(s.get(c)) for c in STEP_INT})
        row.update({c: _float(s.get(c)) for c in STEP_FLOAT})
        steps.append(row)
    cohorts = [
        {**key, "cohort": _text(c.get("cohort")), "segment": _text(c.get("segment")), "value": _text(c.get("value")),
         "step": _text(c.get("step")), "mature": _bool(c.get("mature")), "entered": _int(c.get("entered")),
         "reached": _int(c.get("reached")), "conversion": _float(c.get("conversion"))}
        for c in report.get("cohorts") or []
    ]
    segments = [
        {**key, "segment": _text(s.get("segment")), "value": _text(s.get("value")), "step": _text(s.get("step")),
         "entered": _int(s.get("entered")), "reached": _int(s.get("reached")), "conversion": _float(s.get("conversion"))}
        for s in report.get("segments") or []
    ]
    checks, seen = [], set()
    for c in (report.get("data_quality") or {}).get("checks") or []:
        name, n = _text(c.get("name")), 1
        while name in seen:  # check names are unique in practice; never lose one if not
            n += 1
            name = f"{_text(c.get('name'))} [{n}]"
        seen.add(name)
        checks.append({**key, "name": name, "target": c.get("target"), "severity": c.get("severity"),
                       "success": _bool(c.get("success")), "observed": c.get("observed")})
    return {
        step_metrics.name: steps, cohort_metrics.name: cohorts,
        segment_metrics.name: segments, quality_checks.name: checks,
    }


def _milestone_frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    """``step``, ``entity_id`` (text), ``reached_at`` (UTC). Rows without an entity id or a time
    are dropped; a (step, entity_id) may repeat (`_upsert_milestones` keeps the earliest)."""
    if frame is None or frame.empty:
        return pd.DataFrame({"step": [], "entity_id": [], "reached_at": []})
    missing = {"step", "entity_id", "reached_at"} - set(frame.columns)
    if missing:
        raise ValueError(f"milestones need columns step, entity_id, reached_at (missing {', '.join(sorted(missing))})")
    present = frame["entity_id"].notna().to_numpy()
    reached = pd.to_datetime(frame["reached_at"], utc=True, format="mixed").dt.tz_localize(None)
    step = frame["step"][present]
    data = pd.DataFrame({
        "step": step.astype(str) if not isinstance(step.dtype, pd.CategoricalDtype) else step,
        "entity_id": ids_as_text(frame["entity_id"][present]).astype("str").to_numpy(),
        "reached_at": reached.to_numpy(dtype="datetime64[us]")[present],  # naive UTC
    })
    data = data[data["reached_at"].notna()]
    data["reached_at"] = data["reached_at"].dt.tz_localize(UTC)
    return data.reset_index(drop=True)


def _rebuild_report(conn: sa.Connection, framework: str, as_of: date) -> dict:
    def select(table: sa.Table, *order: str) -> Iterable[sa.Row]:
        return conn.execute(
            sa.select(table).where(table.c.framework == framework, table.c.as_of == as_of)
            .order_by(*(table.c[o] for o in order))
        ).all()

    steps = [
        {"key": r.step, "name": r.name, "position": r.position, "tracked": r.tracked, "qualifying": r.qualifying,
         **{c: getattr(r, c) for c in (*STEP_INT, *STEP_FLOAT)}}
        for r in select(step_metrics, "position", "step")
    ]
    cohorts = [
        {"cohort": r.cohort, "segment": r.segment or None, "value": r.value or None, "mature": r.mature,
         "step": r.step, "entered": r.entered, "reached": r.reached, "conversion": r.conversion}
        for r in select(cohort_metrics, "cohort", "segment", "value", "step")
    ]
    segments = [
        {"segment": r.segment, "value": r.value, "step": r.step, "entered": r.entered,
         "reached": r.reached, "conversion": r.conversion}
        for r in select(segment_metrics, "segment", "value", "step")
    ]
    checks = [
        {"name": r.name, "target": r.target, "severity": r.severity, "success": r.success, "observed": r.observed}
        for r in select(quality_checks, "name")
    ]
    return {
        "framework": framework, "as_of": as_of.isoformat(), "steps": steps, "cohorts": cohorts,
        "segments": segments, "data_quality": {"checks": checks}, "rebuilt_from_tables": True,
    }

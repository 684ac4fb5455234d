"""Benchmark (issue 9): our daily run against the floor the database sets and two peers.

    python bench/run.py --sizes 100000,300000,1000000 [--repeat 3] [--write docs/performance.md]

Not part of ``make test``. For each size the demo (``tasks.seed.seed_demo``, data through
``END``) is loaded into its own PostgreSQL schema ``bench_<n>`` (the framework file's
``${GROWTH_DEMO_*_URL}`` sources point there through ``options=-csearch_path=bench_<n>``),
then, repetition by repetition (interleaved, so load from other processes hits every
contender alike), the median of ``--repeat`` of:

1. floor: ``SELECT count(*)`` of each source table through a raw psycopg cursor (summed);
   beside it the GROUP BY floor: the plainest grouping of each step table by the key ours
   groups it by (``SELECT key, MIN(ts) ... GROUP BY key``, wrapped so PostgreSQL must compute
   every group), plus ``count(*)`` of the entity table, with the session settings ours uses;
2. ours, full run: ``flows.daily.compute_day`` (schema check, extraction, assemble,
   compute, quality gate) plus the store commit (results, milestones, watermarks) into a
   fresh SQLite metric store, for as_of = END - 1 day, Prefect tasks called as plain
   functions (Prefect start-up and the process's imports are measured separately);
3. ours, incremental run: as_of = END on a copy of the store a full run left: the one
   more day of data (END's records) is read, with the late-arrival margin;
4. naive peer: a notebook: ``pd.read_sql`` of the raw tables, then the headline funnel
   (reached per step, current period, independent mode) with pandas groupby;
5. SQL peer: one hand-written SQL query for the same headline numbers (``SQL_PEER``);
6. peak RSS of ours (full run) and of the naive peer, each in its own process (its VmHWM:
   wait4's ru_maxrss would include this process's own RSS at fork).

At the smallest size the demo is also loaded into a SQLite file and ours (full and
incremental) runs against it, beside SQLite's own floor (``count(*)`` per table).

The one more day: the data holds END's records from the start, but the full run for
END - 1 never counts them (every query bounds times by as_of's end), exactly as if they
had arrived afterwards; the incremental run for END then reads from the watermark
(newest record read, before END) minus ``quality.late_arrival_days``.

The headline numbers of ours, the naive and the SQL peer are compared (a mismatch is
reported). The ratios are checked against the targets of issue 9 at the largest size;
the exit status is 1 when one is missed. Bench schemas are dropped at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FRAMEWORK = ROOT / "framework" / "demo" / "growth.yaml"
END = date(2026, 11, 30)  # the data's last day; full run as_of END - 1, incremental run END
SEED = 7
TABLES = ("accounts", "workspaces", "deployments", "invitations", "subscriptions", "flow_runs")
STEPS = (
    "workspace_created", "first_flow_run", "first_deployment", "first_scheduled_run",
    "invited_teammate", "paid",
)
# The GROUP BY floor: each step table grouped once by the key ours groups it by (the via
# foreign key for flow_runs), its time aggregated; the entity table is read, not grouped.
GROUP_FLOOR = {
    "workspaces": ("account_id", "created_at"),
    "flow_runs": ("workspace_id", "start_time"),
    "deployments": ("account_id", "created_at"),
    "invitations": ("account_id", "sent_at"),
    "subscriptions": ("account_id", "started_at"),
}
WINDOW_DAYS, LOOKBACK_DAYS = 30, 28  # the demo framework's funnel settings (checked in `ours`)
WORKER_TIMEOUT = 3600

TARGETS = {  # issue 9, at 1M accounts
    "full / floor": ("<=", 2.0),
    "incremental / full": ("<=", 0.1),
    "naive / full": (">=", 10.0),
    "full / SQL peer": ("<=", 1.5),
    "peak RSS ours (GB)": ("<=", 1.5),
    "quality gate / full": ("<=", 0.2),  # issue 5: validation stays a small share of a run
}
LINEAR_SLACK = 1.25  # per-account time of a size may exceed the previous size's by this factor

# The SQL peer: what an analyst writes for the headline funnel of the current period
# (signups of [cur_start, cur_end), a step reached when its first record is before the
# as_of's end and at most WINDOW_DAYS after signup; independent mode). Times are UTC.
SQL_PEER = """
WITH cohort AS (
    SELECT id, created_at FROM accounts
    WHERE created_at >= %(cur_start)s AND created_at < %(cur_end)s
),
ws AS (
    SELECT w.account_id, MIN(w.created_at) AS t
    FROM workspaces w JOIN cohort c ON c.id = w.account_id
    WHERE w.created_at < %(end)s GROUP BY w.account_id
),
runs AS (
    SELECT w.account_id,
           MIN(r.start_time) FILTER (WHERE r.state IN ('COMPLETED', 'FAILED')) AS first_run,
           MIN(r.start_time) FILTER (WHERE r.run_type = 'scheduled' AND r.state = 'COMPLETED') AS first_scheduled
    FROM flow_runs r
    JOIN workspaces w ON w.id = r.workspace_id
    JOIN cohort c ON c.id = w.account_id
    WHERE r.start_time < %(end)s GROUP BY w.account_id
),
dep AS (
    SELECT d.account_id, MIN(d.created_at) AS t
    FROM deployments d JOIN cohort c ON c.id = d.account_id
    WHERE d.created_at < %(end)s GROUP BY d.account_id
),
inv AS (
    SELECT i.account_id, MIN(i.sent_at) AS t
    FROM invitations i JOIN cohort c ON c.id = i.account_id
    WHERE i.sent_at < %(end)s GROUP BY i.account_id
),
paid AS (
    SELECT s.account_id, MIN(s.started_at) AS t
    FROM subscriptions s JOIN cohort c ON c.id = s.account_id
    WHERE s.status IN ('active', 'past_due', 'canceled') AND s.started_at < %(end)s
    GROUP BY s.account_id
)
SELECT count(*) AS account_created,
       count(*) FILTER (WHERE ws.t <= c.created_at + %(window)s) AS workspace_created,
       count(*) FILTER (WHERE runs.first_run <= c.created_at + %(window)s) AS first_flow_run,
       count(*) FILTER (WHERE dep.t <= c.created_at + %(window)s) AS first_deployment,
       count(*) FILTER (WHERE runs.first_scheduled <= c.created_at + %(window)s) AS first_scheduled_run,
       count(*) FILTER (WHERE inv.t <= c.created_at + %(window)s) AS invited_teammate,
       count(*) FILTER (WHERE paid.t <= c.created_at + %(window)s) AS paid
FROM cohort c
LEFT JOIN ws ON ws.account_id = c.id
LEFT JOIN runs ON runs.account_id = c.id
LEFT JOIN dep ON dep.account_id = c.id
LEFT JOIN inv ON inv.account_id = c.id
LEFT JOIN paid ON paid.account_id = c.id
"""


# ---- helpers ----------------------------------------------------------------------------


def scoped_url(schema: str) -> str:
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def libpq_dsn(schema: str | None = None) -> str:
    """The libpq connection string of PG_URL (for raw psycopg), optionally with a search_path."""
    import sqlalchemy as sa

    url = sa.make_url(PG_URL)
    parts = {"host": url.host or "127.0.0.1", "port": url.port or 5432, "dbname": url.database,
             "user": url.username}
    if url.password:
        parts["password"] = url.password
    dsn = " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)
    return dsn + (f" options='-csearch_path={schema}'" if schema else "")


def periods(as_of: date) -> dict[str, datetime]:
    """The current period of the headline funnel (metrics.md), naive UTC."""
    end = datetime(as_of.year, as_of.month, as_of.day) + timedelta(days=1)
    cur_end = end - timedelta(days=WINDOW_DAYS)
    return {"end": end, "cur_start": cur_end - timedelta(days=LOOKBACK_DAYS), "cur_end": cur_end}


def run_worker(mode: str, **kwargs: str) -> tuple[dict, float]:
    """Run ``mode`` in a fresh Python process; return its JSON result and its peak RSS (GB)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", mode]
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", GX_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = time.monotonic() + WORKER_TIMEOUT
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {mode} failed ({proc.returncode}):\n{stderr[-4000:]}")
    line = [x for x in stdout.splitlines() if x.startswith("{")][-1]
    data = json.loads(line)
    # The worker's own high-water mark. wait4's ru_maxrss would do on a small parent, but Linux
    # carries the parent's RSS at fork into the child's ru_maxrss, and this process grows by
    # seeding (1.4 GB at 1M accounts).
    return data, data.get("peak_rss_gb") or usage.ru_maxrss / 1024 / 1024  # KiB -> GiB


def peak_rss_gb() -> float | None:
    """This process's peak resident set (VmHWM), GiB; None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---- workers (each in its own process) ----------------------------------------------------


def worker_ours(schema: str, store: str, as_of: str, source_url: str | None = None) -> dict:
    """One run of ours: compute_day + the store commit, Prefect tasks called as functions."""
    started = time.perf_counter()
    import logging

    os.environ["GROWTH_DEMO_APP_URL"] = os.environ["GROWTH_DEMO_EVENTS_URL"] = source_url or scoped_url(schema)
    import great_expectations  # noqa: F401 - imported by the quality gate on first use: start-up cost

    from flows import daily
    from tasks.store import MetricStore

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    log = logging.getLogger("bench.ours")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    daily.get_run_logger = lambda: log  # the tasks' logger outside a flow run
    stages: dict[str, float] = {}

    def timed(name: str, fn):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
        return run

    for name in ("check_schema_task", "extract_task", "compute_task", "validate_task"):
        # no orchestration (Prefect measured apart); each stage timed
        setattr(daily, name, timed(name.removesuffix("_task"), getattr(daily, name).fn))

    inputs = daily.prepare(str(FRAMEWORK))
    f = inputs.cfg.funnel
    assert (f.window_days, f.lookback_days, f.mode) == (WINDOW_DAYS, LOOKBACK_DAYS, "independent")
    metric_store = MetricStore.open(f"sqlite:///{store}")
    imports = time.perf_counter() - started

    day_as_of = date.fromisoformat(as_of)
    t0 = time.perf_counter()
    run = metric_store.begin_run(inputs.cfg.name, inputs.framework_hash, day_as_of, None)
    day = daily.compute_day(inputs, metric_store, day_as_of)
    quality = day.report.data_quality.status
    if quality != "failed":
        daily.store_task.fn(metric_store, run, day)
    metric_store.finish_run(run, "succeeded" if quality != "failed" else "failed_quality", quality)
    seconds = time.perf_counter() - t0
    metric_store.close()
    reached = {s.key: s.reached for s in day.report.result.steps if s.tracked}
    rows = [m for m in messages if "rows fetched" in m]
    return {"seconds": seconds, "imports": imports, "quality": quality, "reached": reached,
            "log": rows[-1] if rows else "", "stages": stages}


def worker_naive(schema: str, as_of: str) -> dict:
    """The notebook: read the raw tables with pd.read_sql, then groupby."""
    import pandas as pd
    import sqlalchemy as sa

    t0 = time.perf_counter()
    engine = sa.create_engine(scoped_url(schema))
    with engine.connect() as conn:
        accounts = pd.read_sql("SELECT id, created_at FROM accounts", conn)
        workspaces = pd.read_sql("SELECT id, account_id, created_at FROM workspaces", conn)
        runs = pd.read_sql("SELECT workspace_id, state, run_type, start_time FROM flow_runs", conn)
        deployments = pd.read_sql("SELECT account_id, created_at FROM deployments", conn)
        invitations = pd.read_sql("SELECT account_id, sent_at FROM invitations", conn)
        subscriptions = pd.read_sql("SELECT account_id, status, started_at FROM subscriptions", conn)
    engine.dispose()
    loaded = time.perf_counter() - t0

    p = {k: pd.Timestamp(v) for k, v in periods(date.fromisoformat(as_of)).items()}
    runs["start_time"] = runs["start_time"].dt.tz_convert("UTC").dt.tz_localize(None)
    runs = runs.merge(workspaces[["id", "account_id"]], left_on="workspace_id", right_on="id")

    def first(frame: pd.DataFrame, ts: str) -> pd.Series:
        frame = frame[frame[ts] < p["end"]]
        return frame.groupby("account_id")[ts].min()

    firsts = {
        "workspace_created": first(workspaces, "created_at"),
        "first_flow_run": first(runs[runs["state"].isin(["COMPLETED", "FAILED"])], "start_time"),
        "first_deployment": first(deployments, "created_at"),
        "first_scheduled_run": first(
            runs[(runs["run_type"] == "scheduled") & (runs["state"] == "COMPLETED")], "start_time"),
        "invited_teammate": first(invitations, "sent_at"),
        "paid": first(subscriptions[subscriptions["status"].isin(["active", "past_due", "canceled"])],
                      "started_at"),
    }
    cohort = accounts[(accounts["created_at"] >= p["cur_start"]) & (accounts["created_at"] < p["cur_end"])]
    cohort = cohort.set_index("id")["created_at"]
    window = pd.Timedelta(days=WINDOW_DAYS)
    reached = {"account_created": len(cohort)}
    for key, times in firsts.items():
        t = times.reindex(cohort.index)
        reached[key] = int((t - cohort <= window).sum())
    return {"seconds": time.perf_counter() - t0, "load": loaded, "reached": reached}


def worker_prefect() -> dict:
    """Prefect start-up: import, then the first (empty) flow run of a process."""
    t0 = time.perf_counter()
    from prefect import flow

    imported = time.perf_counter() - t0

    @flow(name="bench-startup")
    def empty() -> int:
        return 1

    t1 = time.perf_counter()
    empty()
    first = time.perf_counter() - t1
    t2 = time.perf_counter()
    empty()
    return {"import": imported, "first_flow": first, "next_flow": time.perf_counter() - t2}


# ---- in-process measurements (raw psycopg) ------------------------------------------------


def prefect_startup(work: Path) -> dict:
    """The empty flow in a fresh process, against a local ephemeral API (as `growth run` without
    PREFECT_API_URL), once to create its database, then measured."""
    if "PREFECT_API_URL" not in os.environ:
        os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    try:
        run_worker("prefect")
        return run_worker("prefect")[0]
    except RuntimeError as exc:
        print(f"Prefect start-up not measured: {str(exc).splitlines()[-1]}", file=sys.stderr)
        return {"import": float("nan"), "first_flow": float("nan"), "next_flow": float("nan")}


def floor(schema: str) -> dict[str, float]:
    import psycopg

    times = {}
    with psycopg.connect(libpq_dsn(schema), autocommit=True) as conn:
        for table in TABLES:
            t0 = time.perf_counter()
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            times[table] = time.perf_counter() - t0
    return times


def group_floor(schema: str) -> dict[str, float]:
    """The GROUP BY floor per table (see GROUP_FLOOR), with the session settings ours uses."""
    import psycopg

    from tasks.extract import PG_SETTINGS

    times = {}
    with psycopg.connect(libpq_dsn(schema), autocommit=True) as conn:
        for name, value in PG_SETTINGS.items():
            conn.execute(f"SET {name} = '{value}'")
        for table in TABLES:
            if table in GROUP_FLOOR:
                key, ts = GROUP_FLOOR[table]
                sql = f"SELECT count(*), max(t) FROM (SELECT {key}, min({ts}) AS t FROM {table} GROUP BY {key}) g"
            else:
                sql = f"SELECT count(*) FROM {table}"
            t0 = time.perf_counter()
            conn.execute(sql).fetchone()
            times[table] = time.perf_counter() - t0
    return times


def sqlite_floor(path: Path) -> dict[str, float]:
    import sqlite3

    times = {}
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            t0 = time.perf_counter()
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            times[table] = time.perf_counter() - t0
    return times


def sql_peer(schema: str, as_of: date) -> tuple[float, dict[str, int]]:
    import psycopg

    params = dict(periods(as_of), window=timedelta(days=WINDOW_DAYS))
    with psycopg.connect(libpq_dsn(schema), autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        t0 = time.perf_counter()
        cur = conn.execute(SQL_PEER, params)
        row = cur.fetchone()
        seconds = time.perf_counter() - t0
        names = [d.name for d in cur.description]
    return seconds, dict(zip(names, row, strict=True))


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def seed(schema: str, accounts: int, reuse: bool = False) -> float:
    """Load the demo into ``schema`` (dropped first); with ``reuse``, keep a complete load of
    the same demo (its ``demo_meta``) and return 0."""
    import psycopg

    from tasks.seed import read_demo_meta, seed_demo

    if reuse:
        meta = read_demo_meta(scoped_url(schema))
        if meta and (meta["accounts"], meta["seed"], meta["end_date"]) == (str(accounts), str(SEED), END.isoformat()):
            return 0.0
    drop_schema(schema)
    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    t0 = time.perf_counter()
    seed_demo(scoped_url(schema), None, accounts=accounts, seed=SEED, end_date=END)
    return time.perf_counter() - t0


# ---- the benchmark -------------------------------------------------------------------------


def bench_size(n: int, repeat: int, naive_repeat: int, work: Path, log, reuse: bool = False) -> dict:
    schema = f"bench_{n}"
    log(f"[{n:,}] seeding {schema} ...")
    seeded = seed(schema, n, reuse)
    log(f"[{n:,}] seeded in {seeded:.1f} s")
    floor(schema)  # warm-up: every table read once (OS cache), not counted
    full_as_of, incr_as_of = END - timedelta(days=1), END
    m: dict[str, list] = {k: [] for k in ("floor", "group", "sql", "full", "incr", "naive", "imports",
                                          "rss_full", "rss_incr", "rss_naive", "validate", "validate_incr")}
    checks: dict[str, dict] = {}
    floors: list[dict[str, float]] = []
    groups: list[dict[str, float]] = []
    for rep in range(repeat):
        per_table = floor(schema)
        floors.append(per_table)
        m["floor"].append(sum(per_table.values()))
        grouped = group_floor(schema)
        groups.append(grouped)
        m["group"].append(sum(grouped.values()))
        seconds, checks["sql"] = sql_peer(schema, full_as_of)
        m["sql"].append(seconds)

        store = work / f"store_{n}_{rep}.db"
        store.unlink(missing_ok=True)
        full, rss = run_worker("ours", schema=schema, store=store, as_of=full_as_of.isoformat())
        m["full"].append(full["seconds"])
        m["validate"].append(full["stages"].get("validate", 0.0))
        m["imports"].append(full["imports"])
        m["rss_full"].append(rss)
        checks["full"] = full

        incr_store = work / f"store_{n}_{rep}_incr.db"
        shutil.copyfile(store, incr_store)
        incr, rss = run_worker("ours", schema=schema, store=incr_store, as_of=incr_as_of.isoformat())
        m["incr"].append(incr["seconds"])
        m["validate_incr"].append(incr["stages"].get("validate", 0.0))
        m["rss_incr"].append(rss)
        checks["incr"] = incr

        if rep < naive_repeat:
            naive, rss = run_worker("naive", schema=schema, as_of=full_as_of.isoformat())
            m["naive"].append(naive["seconds"])
            m["rss_naive"].append(rss)
            checks["naive"] = naive
        log(f"[{n:,}] rep {rep + 1}: floor {m['floor'][-1]:.2f} s, GROUP BY floor {m['group'][-1]:.2f} s, "
            f"SQL peer {m['sql'][-1]:.2f} s, "
            f"full {full['seconds']:.2f} s, incremental {incr['seconds']:.2f} s"
            + (f", naive {m['naive'][-1]:.2f} s" if rep < naive_repeat else ""))
    _, checks["sql_incr"] = sql_peer(schema, incr_as_of)

    result = {
        "accounts": n,
        "seed_seconds": seeded,
        "rows": rows_of(schema),
        "floor": median(m["floor"]),
        "floor_tables": {t: median([f[t] for f in floors]) for t in TABLES},
        "group": median(m["group"]),
        "group_tables": {t: median([g[t] for g in groups]) for t in TABLES},
        "sql": median(m["sql"]),
        "full": median(m["full"]),
        "incr": median(m["incr"]),
        "validate": median(m["validate"]),
        "validate_incr": median(m["validate_incr"]),
        "stages": checks["full"]["stages"],
        "naive": median(m["naive"]) if m["naive"] else None,
        "naive_runs": len(m["naive"]),
        "imports": median(m["imports"]),
        "rss_ours": max(m["rss_full"] + m["rss_incr"]),
        "rss_naive": max(m["rss_naive"]) if m["rss_naive"] else None,
        "quality": [checks["full"]["quality"], checks["incr"]["quality"]],
        "incr_log": checks["incr"]["log"],
        "full_log": checks["full"]["log"],
        "mismatch": compare(checks),
        "reached": checks["full"]["reached"],
    }
    return result


def bench_sqlite(n: int, repeat: int, work: Path, log) -> dict:
    """The small tier on SQLite: the same demo in one SQLite file; its floor and ours."""
    from tasks.seed import seed_demo

    path = work / f"sqlite_{n}.db"
    url = f"sqlite:///{path}"
    log(f"[{n:,} SQLite] seeding {path.name} ...")
    t0 = time.perf_counter()
    seed_demo(url, None, accounts=n, seed=SEED, end_date=END)
    seeded = time.perf_counter() - t0
    sqlite_floor(path)  # warm-up: every table read once (OS cache), not counted
    full_as_of, incr_as_of = END - timedelta(days=1), END
    m: dict[str, list] = {k: [] for k in ("floor", "full", "incr", "rss")}
    runs: dict[str, dict] = {}
    for rep in range(repeat):
        m["floor"].append(sum(sqlite_floor(path).values()))
        store = work / f"store_sqlite_{n}_{rep}.db"
        store.unlink(missing_ok=True)
        runs["full"], rss = run_worker("ours", schema="-", store=store, as_of=full_as_of.isoformat(), source_url=url)
        m["full"].append(runs["full"]["seconds"])
        m["rss"].append(rss)
        incr_store = work / f"store_sqlite_{n}_{rep}_incr.db"
        shutil.copyfile(store, incr_store)
        runs["incr"], rss = run_worker("ours", schema="-", store=incr_store, as_of=incr_as_of.isoformat(),
                                       source_url=url)
        m["incr"].append(runs["incr"]["seconds"])
        m["rss"].append(rss)
        log(f"[{n:,} SQLite] rep {rep + 1}: floor {m['floor'][-1]:.2f} s, full {m['full'][-1]:.2f} s, "
            f"incremental {m['incr'][-1]:.2f} s")
    path.unlink(missing_ok=True)
    return {"accounts": n, "seed_seconds": seeded, "floor": median(m["floor"]), "full": median(m["full"]),
            "incr": median(m["incr"]), "rss_ours": max(m["rss"]), "reached": runs["full"]["reached"]}


def rows_of(schema: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(libpq_dsn(schema), autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def compare(checks: dict[str, dict]) -> list[str]:
    """Headline numbers that differ between ours and the peers (as_of END - 1; END for incremental)."""
    problems = []
    ours = checks["full"]["reached"]
    for peer in ("sql", "naive"):
        other = checks.get(peer)
        if other is None:
            continue
        other = other.get("reached", other)
        for key in ("account_created", *STEPS):
            if int(ours[key]) != int(other[key]):
                problems.append(f"{peer} {key}: ours {ours[key]}, peer {other[key]}")
    for key in ("account_created", *STEPS):
        if int(checks["incr"]["reached"][key]) != int(checks["sql_incr"][key]):
            problems.append(f"incremental {key}: ours {checks['incr']['reached'][key]}, "
                            f"SQL peer {checks['sql_incr'][key]}")
    return problems


def ratios(r: dict) -> dict[str, float | None]:
    return {
        "full / floor": r["full"] / r["floor"],
        "incremental / full": r["incr"] / r["full"],
        "naive / full": r["naive"] / r["full"] if r["naive"] else None,
        "full / SQL peer": r["full"] / r["sql"],
        "peak RSS ours (GB)": r["rss_ours"],
        "quality gate / full": r["validate"] / r["full"] if "validate" in r else None,
    }


def verdicts(results: list[dict]) -> list[tuple[str, str, float | None, bool | None]]:
    """(target, threshold, observed, met) at the largest size, plus linear growth."""
    largest = results[-1]
    out = []
    for name, value in ratios(largest).items():
        op, limit = TARGETS[name]
        met = None if value is None else (value <= limit if op == "<=" else value >= limit)
        out.append((name, f"{op} {limit:g}", value, met))
    for prev, cur in zip(results, results[1:], strict=False):
        growth = (cur["full"] / cur["accounts"]) / (prev["full"] / prev["accounts"])
        out.append((f"linear: full time per account {prev['accounts']:,} -> {cur['accounts']:,}",
                    f"<= {LINEAR_SLACK:g}", growth, growth <= LINEAR_SLACK))
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(results: list[dict], prefect: dict, meta: dict, lite: dict | None = None) -> str:
    lines = [
        f"Run {meta['date']} on {meta['machine']}: `{meta['command']}`",
        "",
        "| accounts | source rows | seed (s) | floor (s) | GROUP BY floor (s) | SQL peer (s) | ours full (s) "
        "| ours incremental (s) | naive peer (s) | RSS ours (GB) | RSS naive (GB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        naive = fmt(r["naive"]) + ("" if r["naive_runs"] in (0, meta["repeat"]) else f" ({r['naive_runs']} run)")
        lines.append(
            f"| {r['accounts']:,} | {sum(r['rows'].values()):,} | {r['seed_seconds']:.1f} | {fmt(r['floor'])} "
            f"| {fmt(r['group'])} | {fmt(r['sql'])} | {fmt(r['full'])} | {fmt(r['incr'])} | {naive} | {fmt(r['rss_ours'])} "
            f"| {fmt(r['rss_naive'])} |"
        )
    lines += ["", "| accounts | full / floor | full / GROUP BY floor | incremental / full | naive / full "
              "| full / SQL peer |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        x = ratios(r)
        lines.append(f"| {r['accounts']:,} | {fmt(x['full / floor'])} | {fmt(r['full'] / r['group'])} "
                     f"| {fmt(x['incremental / full'], 3)} | {fmt(x['naive / full'], 1)} "
                     f"| {fmt(x['full / SQL peer'])} |")
    lines += ["", f"Targets at {results[-1]['accounts']:,} accounts:", "",
              "| target | limit | observed | met |", "|---|---:|---:|---|"]
    for name, limit, value, met in verdicts(results):
        lines.append(f"| {name} | {limit} | {fmt(value)} | {'n/a' if met is None else ('yes' if met else 'NO')} |")
    lines += [
        "",
        f"Excluded from ours and stated apart: Prefect start-up {prefect['import'] + prefect['first_flow']:.1f} s "
        f"(import {prefect['import']:.1f} s, first flow run of a process {prefect['first_flow']:.1f} s, "
        f"a later flow run {prefect['next_flow']:.2f} s); the worker's imports and store opening "
        f"(pandas, SQLAlchemy, Prefect, Great Expectations) "
        f"{median([r['imports'] for r in results]):.1f} s.",
        "",
        "Floor per table (s, median): " + "; ".join(
            f"{r['accounts']:,}: " + ", ".join(f"{t} {v:.2f}" for t, v in r["floor_tables"].items())
            for r in results) + ".",
        "",
        "GROUP BY floor per table (s, median): " + "; ".join(
            f"{r['accounts']:,}: " + ", ".join(f"{t} {v:.2f}" for t, v in r["group_tables"].items())
            for r in results) + ".",
        "",
        "Quality gate (full, incremental): " + "; ".join(
            f"{r['accounts']:,}: {', '.join(r['quality'])}" for r in results) + ".",
        "",
        "Quality gate time (validate task: GX suites and Data Docs), median s and share of the run: " + "; ".join(
            f"{r['accounts']:,}: full {r['validate']:.2f} ({100 * r['validate'] / r['full']:.0f}%), "
            f"incremental {r['validate_incr']:.2f} ({100 * r['validate_incr'] / r['incr']:.0f}%)"
            for r in results) + ".",
        "",
        "Stages of the last full run at the largest size (s): " + ", ".join(
            f"{k} {v:.2f}" for k, v in results[-1]["stages"].items()) + ".",
        "",
        "Rows fetched, full run at the largest size: " + (results[-1]["full_log"] or "n/a"),
        "",
        "Rows fetched, incremental run at the largest size: " + (results[-1]["incr_log"] or "n/a"),
        "",
        "Headline numbers, ours vs the peers: " + (
            "identical at every size." if not any(r["mismatch"] for r in results) else
            "; ".join(f"{r['accounts']:,}: {', '.join(r['mismatch'])}" for r in results if r["mismatch"])),
    ]
    if lite is not None:
        lines += [
            "",
            f"SQLite, the small tier (the same demo in one SQLite file, {lite['accounts']:,} accounts; "
            f"seeded in {lite['seed_seconds']:.1f} s):",
            "",
            "| accounts | floor (s) | ours full (s) | ours incremental (s) | full / floor | incremental / full "
            "| RSS ours (GB) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {lite['accounts']:,} | {fmt(lite['floor'])} | {fmt(lite['full'])} | {fmt(lite['incr'])} "
            f"| {fmt(lite['full'] / lite['floor'], 1)} | {fmt(lite['incr'] / lite['full'], 3)} "
            f"| {fmt(lite['rss_ours'])} |",
            "",
            "Headline numbers, SQLite vs PostgreSQL: " + (
                "not compared (no PostgreSQL tier of this size)." if "mismatch" not in lite
                else lite["mismatch"] or "identical."),
        ]
    return "\n".join(lines)


def write_docs(path: Path, text: str, tag: str) -> None:
    """Replace (or append) the block of this set of sizes in ``path``."""
    begin, end = f"<!-- bench {tag}: begin -->", f"<!-- bench {tag}: end -->"
    doc = path.read_text() if path.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in doc or end not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def machine() -> str:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GB RAM"
    except OSError:
        pass
    import psycopg

    with psycopg.connect(libpq_dsn(), autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
    return (f"{os.cpu_count()} CPUs (nproc), {mem}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, PostgreSQL {version} (shared_buffers {buffers})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="accounts per tier, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per measurement (median)")
    parser.add_argument("--naive-repeat", type=int, default=None,
                        help="repetitions of the naive peer (default --repeat)")
    parser.add_argument("--write", metavar="FILE", help="also write the results into FILE (docs/performance.md)")
    parser.add_argument("--keep", action="store_true", help="keep the bench_<n> schemas")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a kept bench_<n> schema holding the same demo instead of seeding it")
    parser.add_argument("--sqlite-size", type=int, default=None,
                        help="also run the small tier on SQLite at this size (default: the smallest size "
                             "when it is at most 100000; 0: no SQLite tier)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--as-of", help=argparse.SUPPRESS)
    parser.add_argument("--source-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "ours":
            out = worker_ours(args.schema, args.store, args.as_of, args.source_url)
        elif args.worker == "naive":
            out = worker_naive(args.schema, args.as_of)
        else:
            out = worker_prefect()
        out["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(out, default=str))
        return 0

    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    if args.sqlite_size is None:
        args.sqlite_size = sizes[0] if sizes[0] <= 100_000 else 0
    naive_repeat = args.repeat if args.naive_repeat is None else args.naive_repeat
    command = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", file=sys.stderr, flush=True)

    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "command": command.strip(), "repeat": args.repeat}
    log(meta["machine"])
    results = []
    work = Path(tempfile.mkdtemp(prefix="growth-bench-"))
    try:
        prefect = prefect_startup(work)
        log(f"Prefect start-up: {prefect}")
        for n in sizes:
            results.append(bench_size(n, args.repeat, naive_repeat, work, log, args.reuse))
            if not args.keep:
                drop_schema(f"bench_{n}")
        lite = None
        if args.sqlite_size:
            lite = bench_sqlite(args.sqlite_size, args.repeat, work, log)
            pg = next((r for r in results if r["accounts"] == args.sqlite_size), None)
            if pg is not None:
                diff = [f"{k}: SQLite {v}, PostgreSQL {pg['reached'][k]}" for k, v in lite["reached"].items()
                        if pg["reached"].get(k) != v]
                lite["mismatch"] = "; ".join(diff)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            for n in sizes:
                drop_schema(f"bench_{n}")
    text = report(results, prefect, meta, lite)
    print(text)
    if args.write:
        write_docs(Path(args.write), text, "sizes " + ",".join(str(n) for n in sizes))
    missed = [name for name, _, _, met in verdicts(results) if met is False]
    mismatch = any(r["mismatch"] for r in results) or bool(lite and lite.get("mismatch"))
    log(f"done; targets missed: {', '.join(missed) or 'none'}" + ("; headline mismatch" if mismatch else ""))
    return 1 if missed or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())

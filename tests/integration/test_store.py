"""The metric store (tasks/store.py) on SQLite and PostgreSQL: migrations, idempotent writes,
optimistic concurrency, crash safety (a killed writer), trends, history, deliveries, milestones."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from framework.report import (
    CohortRow,
    DataQuality,
    Delivery,
    FunnelResult,
    Period,
    QualityCheck,
    Report,
    SegmentRow,
    StepResult,
)
from tasks import store as store_module
from tasks.faults import fault_point
from tasks.store import (
    HISTORY_COLUMNS,
    ConcurrentRunError,
    DeliveryRecord,
    MetricStore,
    StoreError,
    migrate,
)
from tests.conftest import ROOT

FW = "Test Framework"
DAY = date(2026, 3, 1)
ALL_TABLES = {
    "gf_runs", "gf_snapshots", "gf_step_metrics", "gf_cohort_metrics", "gf_segment_metrics",
    "gf_quality_checks", "gf_milestone_sets", "gf_watermarks", "gf_deliveries", "gf_alembic_version",
}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store: a SQLite file, or a fresh PostgreSQL schema (via search_path)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'growth.db'}"
    url, schema = request.getfixturevalue("pg_schema")
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture()
def store(store_url: str):
    s = MetricStore.open(store_url)
    try:
        yield s
    finally:
        s.close()


def make_report(as_of: date = DAY, scale: int = 1, steps: tuple[str, ...] = ("signup", "workspace", "paid"),
                cohorts: int = 2) -> dict:
    """A small report dict built from framework.report objects; ``scale`` changes every count."""
    results, previous = [], None
    for i, key in enumerate(steps, start=1):
        entered = 1000 * scale if previous is None else previous
        reached = entered if i == 1 else entered * (10 - i) // 10
        results.append(StepResult(
            key=key, name=key.title(), position=i, tracked=True, qualifying=key == "paid",
            entered=entered, reached=reached, conversion=reached / entered,
            overall_conversion=reached / (1000 * scale), lost=entered - reached,
            median_hours=None if i == 1 else 1.5 * i, p90_hours=None if i == 1 else 20.25 * i,
            previous_conversion=0.5, delta_pp=1.0 * scale, p_value=0.03, target=0.9, opportunity=2.5 * i,
        ))
        previous = reached
    cohort_rows = [
        CohortRow(cohort=f"2026-0{c + 1}", segment=seg, value=val, mature=c == 0, step=s.key,
                  entered=s.entered, reached=s.reached, conversion=s.conversion)
        for c in range(cohorts) for seg, val in ((None, None), ("origin", "github")) for s in results
    ]
    segment_rows = [
        SegmentRow(segment="origin", value=v, step=s.key, entered=s.entered, reached=s.reached, conversion=s.conversion)
        for v in ("github", "google") for s in results
    ]
    checks = [
        QualityCheck("fresh", "newest row < 1 day old", "error", True, "2h"),
        QualityCheck("no_orphans", "orphans < 1%", "warn", scale == 1, f"{scale}%"),
    ]
    result = FunnelResult(
        as_of=as_of.isoformat(), mode="independent", window_days=30, entity="account",
        current_period=Period("2026-01-01", "2026-02-01", 1000 * scale),
        previous_period=Period("2025-12-01", "2026-01-01", 900), steps=results, cohorts=cohort_rows,
        segments=segment_rows, ranking=list(steps[1:]), lowest_converting=list(steps[1:]),
        qualifying=["paid"], untracked=[],
    )
    return Report(FW, result, DataQuality.from_checks(checks), Delivery("#growth", "dry_run")).to_dict()


def commit(store: MetricStore, report: dict) -> int:
    run = store.begin_run(FW, "hash", date.fromisoformat(report["as_of"]), "flow-run")
    version = store.commit_results(run, report)
    store.finish_run(run, "succeeded", quality_status="passed", delivery_status="dry_run")
    return version


def counts(url: str, as_of: date = DAY) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t} WHERE framework = :f AND as_of = :d"),
                                {"f": FW, "d": as_of}).scalar_one()
                for t in ("gf_step_metrics", "gf_cohort_metrics", "gf_segment_metrics", "gf_quality_checks", "gf_snapshots")
            }
    finally:
        engine.dispose()


def expected_counts(report: dict) -> dict[str, int]:
    return {
        "gf_step_metrics": len(report["steps"]), "gf_cohort_metrics": len(report["cohorts"]),
        "gf_segment_metrics": len(report["segments"]), "gf_quality_checks": len(report["data_quality"]["checks"]),
        "gf_snapshots": 1,
    }


def run_statuses(url: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, status FROM gf_runs ORDER BY id")).all())
    finally:
        engine.dispose()


# ---------------------------------------------------------------- migrations


def test_migrations_create_every_table_and_match_the_models(store: MetricStore, store_url: str) -> None:
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) >= ALL_TABLES
            assert store_module.current_revision(conn) == store_module.head_revision() == "0004"
            context = MigrationContext.configure(conn, opts={"version_table": "gf_alembic_version"})
            diffs = [d for d in compare_metadata(context, store_module.metadata) if d[0] != "remove_table"]
            assert diffs == []
    finally:
        engine.dispose()
    MetricStore.open(store_url).close()  # reopening at head is a no-op


def test_store_written_at_0001_keeps_working_after_upgrade(store_url: str) -> None:
    migrate(store_url, "0001")
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert "gf_deliveries" not in tables and "gf_step_metrics" in tables
            assert "report_json" not in {c["name"] for c in sa.inspect(conn).get_columns("gf_snapshots")}
            conn.execute(sa.text(
                "INSERT INTO gf_runs (framework, framework_hash, as_of, started_at, ended_at, status)"
                " VALUES (:f, 'old', :d, :t, :t, 'succeeded')"), {"f": FW, "d": DAY, "t": datetime(2026, 3, 2, 6, tzinfo=UTC)})
            run_id = conn.execute(sa.text("SELECT MAX(id) FROM gf_runs")).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO gf_snapshots (framework, as_of, run_id, version, committed_at) VALUES (:f, :d, :r, 1, :t)"),
                {"f": FW, "d": DAY, "r": run_id, "t": datetime(2026, 3, 2, 6, tzinfo=UTC)})
            for pos, (key, entered, reached) in enumerate([("signup", 100, 100), ("paid", 100, 7)], start=1):
                conn.execute(sa.text(
                    "INSERT INTO gf_step_metrics (framework, as_of, step, position, name, tracked, qualifying,"
                    " entered, reached, conversion) VALUES (:f, :d, :s, :p, :n, :t, :q, :e, :r, :c)"),
                    {"f": FW, "d": DAY, "s": key, "p": pos, "n": key.title(), "t": True, "q": False,
                     "e": entered, "r": reached, "c": reached / entered})
            conn.execute(sa.text(
                "INSERT INTO gf_cohort_metrics (framework, as_of, cohort, segment, value, step, mature, entered, reached, conversion)"
                " VALUES (:f, :d, '2026-01', '', '', 'paid', :m, 50, 5, 0.1)"), {"f": FW, "d": DAY, "m": True})
    finally:
        engine.dispose()

    with MetricStore.open(store_url) as store:
        assert store.has_results(FW, DAY) and store.stored_dates(FW) == [DAY]
        old = store.load_report(FW, DAY)
        assert [s["key"] for s in old["steps"]] == ["signup", "paid"] and old["steps"][1]["conversion"] == 0.07
        assert old["cohorts"][0]["segment"] is None and old["cohorts"][0]["mature"] is True
        assert store.trend(FW, DAY) == {"signup": [(DAY, 1.0)], "paid": [(DAY, 0.07)]}
        assert store.step_history(FW)["reached"].tolist() == [100, 7]
        assert store.get_delivery(FW, DAY, "#growth") is None
        # a new run of the same day builds on the old snapshot
        report = make_report()
        assert commit(store, report) == 2
        assert store.load_report(FW, DAY) == report
        assert counts(store_url) == expected_counts(report)


def test_concurrent_openers_of_a_new_store_all_succeed(store_url: str) -> None:
    barrier, errors = threading.Barrier(4), []

    def opener() -> None:
        try:
            barrier.wait()
            MetricStore.open(store_url).close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with MetricStore.open(store_url) as store:
        assert commit(store, make_report()) == 1


# ---------------------------------------------------------------- idempotent writes and concurrency


def test_recommit_of_the_same_as_of_replaces_its_rows(store: MetricStore, store_url: str) -> None:
    first, second = make_report(scale=1, cohorts=3), make_report(scale=2, cohorts=1, steps=("signup", "paid"))
    assert commit(store, first) == 1
    assert counts(store_url) == expected_counts(first)
    assert commit(store, second) == 2
    assert counts(store_url) == expected_counts(second)  # one set of rows: the second's
    assert store.load_report(FW, DAY) == second
    assert store.stored_dates(FW) == [DAY]
    history = store.step_history(FW)
    assert history["step"].tolist() == ["signup", "paid"] and history["entered"].tolist() == [2000, 2000]
    assert list(run_statuses(store_url).values()) == ["superseded", "succeeded"]


def test_second_of_two_concurrent_runs_cannot_commit(store: MetricStore, store_url: str) -> None:
    a = store.begin_run(FW, "hash", DAY, "a")
    b = store.begin_run(FW, "hash", DAY, "b")
    assert a.base_version == b.base_version == 0
    first, second = make_report(scale=1), make_report(scale=3)
    assert store.commit_results(a, first) == 1
    with pytest.raises(ConcurrentRunError, match="committed first; its results stand") as info:
        store.commit_results(b, second)
    assert info.value.exit_code == 0
    assert store.load_report(FW, DAY) == first
    assert store.step_history(FW)["entered"].tolist()[0] == 1000
    assert counts(store_url) == expected_counts(first)
    store.finish_run(b, "succeeded")  # a lost run stays superseded
    assert run_statuses(store_url) == {a.run_id: "running", b.run_id: "superseded"}

    # the same on the UPDATE path (both runs build on version 1)
    c, d = store.begin_run(FW, "hash", DAY, "c"), store.begin_run(FW, "hash", DAY, "d")
    assert c.base_version == d.base_version == 1
    assert store.commit_results(d, second) == 2
    with pytest.raises(ConcurrentRunError):
        store.commit_results(c, first)
    assert store.load_report(FW, DAY) == second


def test_racing_commits_in_threads_exactly_one_wins(store: MetricStore, store_url: str) -> None:
    for base in (0, 1):
        handles = [store.begin_run(FW, "hash", DAY, f"t{i}") for i in range(4)]
        assert {h.base_version for h in handles} == {base}
        barrier, outcomes = threading.Barrier(len(handles)), {}

        def race(i: int, handles=handles, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                outcomes[i] = store.commit_results(handles[i], make_report(scale=i + 1))
            except ConcurrentRunError:
                outcomes[i] = "lost"

        threads = [threading.Thread(target=race, args=(i,)) for i in range(len(handles))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        winners = [i for i, v in outcomes.items() if v != "lost"]
        assert len(outcomes) == len(handles) and len(winners) == 1, outcomes
        assert outcomes[winners[0]] == base + 1
        assert store.load_report(FW, DAY) == make_report(scale=winners[0] + 1)
        assert counts(store_url) == expected_counts(make_report())


CHILD = """
import json, logging, sys
from datetime import date
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s: %(message)s")
from tasks.store import MetricStore
url, path = sys.argv[1], sys.argv[2]
report = json.loads(open(path, encoding="utf-8").read())
store = MetricStore.open(url)
run = store.begin_run(report["framework"], "hash", date.fromisoformat(report["as_of"]), "child")
print("writing", flush=True)
store.commit_results(run, report)
print("committed", flush=True)
"""


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def test_killed_writer_leaves_previous_results_intact(store: MetricStore, store_url: str, tmp_path: Path) -> None:
    first = make_report(scale=1)
    assert commit(store, first) == 1
    path = tmp_path / "second.json"
    path.write_text(json.dumps(make_report(scale=5, steps=("signup", "paid"))), encoding="utf-8")
    env = {**os.environ, "GROWTH_FAULT": "store.write", "GROWTH_FAULT_SLEEP": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_url, str(path)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen, deadline = [], time.monotonic() + 60
    try:
        # "writing": about to commit; the fault point's log line: old rows deleted, new ones not yet inserted
        while not any("fault point store.write" in s for s in seen):
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                proc.kill()
                pytest.fail(f"the writer never reached the fault point: {seen} {proc.stderr.read()}")
            seen.append(line)
        assert seen[0].strip() == "writing"
        # while the writer stalls inside its transaction, readers still see the previous results
        assert store.load_report(FW, DAY) == first
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not any("committed" in s for s in seen)

    with MetricStore.open(store_url) as after:
        assert after.load_report(FW, DAY) == first
        assert after.step_history(FW)["entered"].tolist() == [1000, 1000, 800]
        assert counts(store_url) == expected_counts(first)
        third = make_report(scale=7)
        assert commit(after, third) == 2  # the next run completes
        assert after.load_report(FW, DAY) == third
        assert counts(store_url) == expected_counts(third)


# ---------------------------------------------------------------- reading


def test_trend_is_oldest_first_and_limited(store: MetricStore) -> None:
    days = [DAY + timedelta(days=i) for i in range(10)]
    for i in (3, 0, 9, 5, 1, 8, 2, 7, 4, 6):  # stored out of order
        steps = ("signup", "workspace", "paid") if i != 6 else ("signup", "paid")
        commit(store, make_report(days[i], scale=i + 1, steps=steps))
    assert store.stored_dates(FW) == days

    trend = store.trend(FW, days[7], limit=5)
    assert list(trend) == ["signup", "workspace", "paid"]
    assert [d for d, _ in trend["paid"]] == days[3:8]
    assert all([d for d, _ in v] == days[3:8] for v in trend.values())
    assert [c for _, c in trend["signup"]] == [1.0] * 5
    assert [c for _, c in trend["workspace"]] == [0.8, 0.8, 0.8, None, 0.8]  # absent on day 6
    assert trend["paid"][3][1] == 0.8  # day 6: paid is the second step
    assert len(store.trend(FW, days[9])["signup"]) == 10
    assert store.trend(FW, DAY - timedelta(days=1)) == {}
    assert store.trend("other framework", days[9]) == {}


def test_step_history_has_one_row_per_as_of_and_step(store: MetricStore) -> None:
    for i in (1, 0):
        commit(store, make_report(DAY + timedelta(days=i), scale=i + 1))
    history = store.step_history(FW)
    assert list(history.columns) == HISTORY_COLUMNS
    assert HISTORY_COLUMNS[:7] == ["framework", "as_of", "step", "position", "entered", "reached", "conversion"]
    # every scalar step key is a column, except those the report derives from the store's own history
    derived = {"key", "trend", "conversion_7_runs_ago", "conversion_28_runs_ago"}
    assert set(make_report()["steps"][0]) - derived <= set(history.columns)
    assert len(history) == 6
    assert history["as_of"].tolist() == [DAY] * 3 + [DAY + timedelta(days=1)] * 3
    assert history["position"].tolist() == [1, 2, 3] * 2
    assert history["entered"].tolist() == [1000, 1000, 800, 2000, 2000, 1600]
    assert history.loc[0, "median_hours"] != history.loc[0, "median_hours"]  # NaN (None in the report)
    assert history["qualifying"].tolist() == [False, False, True] * 2
    assert store.step_history("nobody").columns.tolist() == HISTORY_COLUMNS


def test_results_the_gate_blocked_are_stored_but_kept_out_of_trends_and_history(store: MetricStore) -> None:
    days = [DAY + timedelta(days=i) for i in range(3)]
    commit(store, make_report(days[0], scale=1))
    blocked = make_report(days[1], scale=2)
    run = store.begin_run(FW, "hash", days[1], "flow-run")
    assert store.commit_results(run, blocked, status="failed_quality") == 1
    store.finish_run(run, "failed_quality", "failed", "skipped")
    commit(store, make_report(days[2], scale=3))

    # stored, and readable as it was computed
    assert store.load_report(FW, days[1]) == blocked
    assert store.has_results(FW, days[1]) and not store.has_results(FW, days[1], passed_only=True)
    assert store.load_report(FW, days[1], passed_only=True) is None
    assert counts(store.url, days[1]) == expected_counts(blocked)
    # ... but trends and the history export see only the passed days 0 and 2
    assert [d for d, _ in store.trend(FW, days[2])["signup"]] == [days[0], days[2]]
    assert sorted(set(store.step_history(FW)["as_of"])) == [days[0], days[2]]
    with pytest.raises(ValueError, match="snapshot status"):
        store.commit_results(store.begin_run(FW, "hash", days[1], None), blocked, status="weird")

    # a later passing run of the blocked day replaces it and brings it back into trends
    commit(store, make_report(days[1], scale=4))
    assert store.has_results(FW, days[1], passed_only=True)
    assert [d for d, _ in store.trend(FW, days[2])["signup"]] == days


def test_deliveries_roundtrip(store: MetricStore) -> None:
    assert store.get_delivery(FW, DAY, "#growth") is None
    store.record_delivery(FW, DAY, "#growth", None, None, "dry_run")
    assert store.get_delivery(FW, DAY, "#growth") == DeliveryRecord("#growth", None, None, "dry_run")
    store.record_delivery(FW, DAY, "#growth", "C123", "1700000000.000100", "posted")
    store.record_delivery(FW, DAY, "#growth", "C123", "1700000000.000100", "updated")
    store.record_delivery(FW, DAY, "#growth", None, None, "failed")  # keeps the message to update next time
    assert store.get_delivery(FW, DAY, "#growth") == DeliveryRecord("#growth", "C123", "1700000000.000100", "failed")
    assert store.get_delivery(FW, DAY, "#other") is None
    assert store.get_delivery(FW, DAY + timedelta(days=1), "#growth") is None


def test_milestone_upsert_keeps_the_earlier_time(store: MetricStore) -> None:
    t0 = pd.Timestamp("2026-01-10 12:00:00", tz="UTC")
    store.upsert_milestones(FW, pd.DataFrame({
        "step": ["paid", "paid", "workspace"], "entity_id": [1, 2, 1],
        "reached_at": [t0, t0, t0],
    }))
    written = store.upsert_milestones(FW, pd.DataFrame({
        "step": ["paid", "paid", "paid", "workspace"], "entity_id": [1, 2, 3, 1],
        "reached_at": [t0 - pd.Timedelta(hours=1), t0 + pd.Timedelta(days=1), t0, t0 - pd.Timedelta(days=3)],
    }))
    assert written == 4
    frame = store.load_milestones(FW)
    got = {(r.step, r.entity_id): r.reached_at for r in frame.itertuples()}
    assert got == {
        ("paid", "1"): t0 - pd.Timedelta(hours=1), ("paid", "2"): t0, ("paid", "3"): t0,
        ("workspace", "1"): t0 - pd.Timedelta(days=3),
    }
    assert str(frame["reached_at"].dtype) == "datetime64[us, UTC]"
    # duplicates within one frame and naive timestamps (UTC) are fine
    store.upsert_milestones(FW, pd.DataFrame({
        "step": ["paid", "paid"], "entity_id": ["9", "9"],
        "reached_at": [datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 1)],
    }))
    assert store.load_milestones(FW).set_index("entity_id").loc["9", "reached_at"] == pd.Timestamp("2026-01-01", tz="UTC")
    assert store.load_milestones("nobody").columns.tolist() == ["step", "entity_id", "reached_at"]


def test_watermarks_and_milestones_commit_with_the_results(store: MetricStore) -> None:
    marks = {"paid": datetime(2026, 3, 1, 23, 59, tzinfo=UTC), "workspace": datetime(2026, 3, 1, 20, tzinfo=UTC)}
    frame = pd.DataFrame({"step": ["paid"], "entity_id": [42], "reached_at": [pd.Timestamp("2026-02-01", tz="UTC")]})
    run = store.begin_run(FW, "hash", DAY, None)
    store.commit_results(run, make_report(), watermarks=marks, milestones=frame)
    assert store.get_watermarks(FW) == marks
    assert store.load_milestones(FW)["entity_id"].tolist() == ["42"]
    store.set_watermarks(FW, {"paid": datetime(2026, 3, 2, tzinfo=UTC)})
    assert store.get_watermarks(FW)["paid"] == datetime(2026, 3, 2, tzinfo=UTC)

    # a lost run writes none of it
    a, b = store.begin_run(FW, "hash", DAY, None), store.begin_run(FW, "hash", DAY, None)
    store.commit_results(a, make_report())
    with pytest.raises(ConcurrentRunError):
        store.commit_results(b, make_report(), watermarks={"paid": datetime(2030, 1, 1, tzinfo=UTC)},
                             milestones=frame.assign(entity_id=[43]))
    assert store.get_watermarks(FW)["paid"] == datetime(2026, 3, 2, tzinfo=UTC)
    assert store.load_milestones(FW)["entity_id"].tolist() == ["42"]


def test_finish_run_records_statuses(store: MetricStore, store_url: str) -> None:
    run = store.begin_run(FW, "hash", DAY, "flow-1")
    with pytest.raises(ValueError, match="run status"):
        store.finish_run(run, "done")
    store.finish_run(run, "failed_quality", quality_status="failed", delivery_status="skipped", error="gate")
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM gf_runs")).mappings().one()
    finally:
        engine.dispose()
    assert row["status"] == "failed_quality" and row["quality_status"] == "failed"
    assert row["delivery_status"] == "skipped" and row["error"] == "gate" and row["flow_run_id"] == "flow-1"
    assert row["ended_at"] is not None and str(row["as_of"]) == "2026-03-01"
    assert store.has_results(FW, DAY) is False and store.load_report(FW, DAY) is None


# ---------------------------------------------------------------- errors and hooks


def test_store_errors_never_show_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        MetricStore.open("postgresql+psycopg://u:secretpw@127.0.0.1:1/x")
    assert info.value.exit_code == 4
    assert "secretpw" not in str(info.value) and "u:***@127.0.0.1:1/x" in str(info.value)
    with pytest.raises(StoreError) as info:
        MetricStore.open("nosuchdb://u:secretpw@host/x")
    assert "secretpw" not in str(info.value)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="metric store"):
        MetricStore.open(f"sqlite:///{blocker / 'growth.db'}")


def test_fault_point_sleeps_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tasks.faults.time.sleep", slept.append)
    monkeypatch.delenv("GROWTH_FAULT", raising=False)
    fault_point("store.write")
    monkeypatch.setenv("GROWTH_FAULT", "other")
    fault_point("store.write")
    monkeypatch.setenv("GROWTH_FAULT", "store.write")
    monkeypatch.setenv("GROWTH_FAULT_SLEEP", "2.5")
    fault_point("store.write")
    assert slept == [2.5]


def test_fault_point_until_returns_when_the_file_appears(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """GROWTH_FAULT_UNTIL: the hold ends once the file exists, well before GROWTH_FAULT_SLEEP."""
    go = tmp_path / "go"
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the file appears during the third wait
        slept.append(seconds)
        if len(slept) == 3:
            go.write_text("")

    monkeypatch.setattr("tasks.faults.time.sleep", sleep)
    monkeypatch.setenv("GROWTH_FAULT", "store.write")
    monkeypatch.setenv("GROWTH_FAULT_SLEEP", "300")
    monkeypatch.setenv("GROWTH_FAULT_UNTIL", str(go))
    fault_point("store.write")
    assert slept == [0.1, 0.1, 0.1]

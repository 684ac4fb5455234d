"""Incremental extraction: a run that reads only records since the last watermark (minus the
late-arrival margin) and merges them with the stored milestones gives exactly the numbers a
full read gives, on data with late-arriving records, new accounts and changed attributes."""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.daily import growth_digest
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
DAY1, DAY2 = END - timedelta(days=2), END - timedelta(days=1)


def _sql(url: str, *statements: tuple[str, dict]) -> list:
    engine = sa.create_engine(url)
    out = []
    with engine.begin() as conn:
        for text, params in statements:
            result = conn.execute(sa.text(text), params)
            out.append(result.all() if result.returns_rows else result.rowcount)
    engine.dispose()
    return out


def _late_records(urls: dict[str, str]) -> None:
    """Records that arrive after DAY1's run, with times inside the late-arrival margin."""
    late = f"{DAY1 - timedelta(days=1)} 10:00:00"  # 1 day before DAY1's end: within the 3-day margin
    # workspaces (in the events dimension) of recent accounts without any completed/failed run yet,
    # and of accounts whose first run came after that late time: both gain an earlier first run
    (targets,) = _sql(urls["events"], ("""
        SELECT w.id FROM workspaces w
        GROUP BY w.account_id HAVING w.id = MIN(w.id) AND w.account_id IN (
            SELECT w2.account_id FROM workspaces w2 LEFT JOIN flow_runs r ON r.workspace_id = w2.id
                AND r.state IN ('COMPLETED', 'FAILED')
            GROUP BY w2.account_id
            HAVING MIN(strftime('%Y-%m-%d %H:%M:%f', r.start_time)) IS NULL
                OR MIN(strftime('%Y-%m-%d %H:%M:%f', r.start_time)) > :late)
        ORDER BY w.id DESC LIMIT 40""", {"late": late}))
    assert len(targets) >= 10
    (top,) = _sql(urls["events"], ("SELECT MAX(id) FROM flow_runs", {}))
    rows = [{"id": top[0][0] + i + 1, "ws": ws, "ts": late.replace(" ", "T") + "Z"} for i, (ws,) in enumerate(targets)]
    _sql(urls["events"], ("INSERT INTO flow_runs (id, workspace_id, deployment_id, state, run_type, start_time) "
                          "VALUES (:id, :ws, NULL, 'COMPLETED', 'manual', :ts)", rows))
    # a new account signing up on DAY2, and an existing account whose origin changed
    _sql(urls["app"],
         ("INSERT INTO accounts (id, email, created_at, origin, region) "
          "VALUES (999999, 'late@example.com', :t, 'partner', 'eu')", {"t": f"{DAY2} 08:00:00.000000"}),
         ("UPDATE accounts SET origin = 'partner' WHERE id = (SELECT MIN(id) FROM accounts WHERE origin = 'github')", {}))


def _comparable(report) -> dict:
    data = report.to_dict()
    for step in data["steps"]:
        for key in ("trend", "conversion_7_runs_ago", "conversion_28_runs_ago"):
            step.pop(key, None)
    return {k: data[k] for k in ("steps", "cohorts", "segments", "ranking", "current_period")}


def _rows_fetched(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    line = [r.getMessage() for r in caplog.records if "rows fetched" in r.getMessage()][-1]
    return {k: int(v) for k, v in re.findall(r"(step:\w+)=(\d+)", line.split(";")[1])}


def test_incremental_equals_full_with_late_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    urls = {"app": f"sqlite:///{tmp_path / 'app.db'}", "events": f"sqlite:///{tmp_path / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=1500, seed=3, end_date=END)
    for name, url in urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    incremental_store = f"sqlite:///{tmp_path / 'incremental.db'}"
    monkeypatch.setenv("GROWTH_STORE_URL", incremental_store)
    caplog.set_level(logging.INFO)

    growth_digest(as_of=DAY1, framework_path=str(DEMO_FRAMEWORK), dry_run=True)  # first run: full read
    full_read = _rows_fetched(caplog)
    _late_records(urls)
    incremental = growth_digest(as_of=DAY2, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    assert "incremental read" in caplog.text
    read_once = _rows_fetched(caplog)
    assert sum(read_once.values()) < sum(full_read.values()) / 5

    monkeypatch.setenv("GROWTH_STORE_URL", f"sqlite:///{tmp_path / 'full.db'}")
    full = growth_digest(as_of=DAY2, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    full_read_day2 = _rows_fetched(caplog)
    assert _comparable(incremental) == _comparable(full)
    # ...and the late runs did change milestones (else the equality would prove little)
    from tasks.store import MetricStore

    with MetricStore.open(incremental_store) as store:
        stored = store.load_milestones("Prefect Growth Framework")
    late_time = pd.Timestamp(f"{DAY1 - timedelta(days=1)} 10:00:00", tz="UTC")
    runs = stored[stored.step.str.startswith("first_flow_run#")]
    assert (runs.reached_at == late_time).sum() >= 10

    # same day again with no new data: the incremental read fetches only the margin's few rows
    monkeypatch.setenv("GROWTH_STORE_URL", incremental_store)
    again = growth_digest(as_of=DAY2, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    assert _comparable(again) == _comparable(full)
    assert sum(_rows_fetched(caplog).values()) <= sum(read_once.values())

    # --full-refresh on the incremental store rebuilds from scratch to the same numbers
    rebuilt = growth_digest(as_of=DAY2, framework_path=str(DEMO_FRAMEWORK), dry_run=True, full_refresh=True)
    assert _rows_fetched(caplog) == full_read_day2  # every step read whole again
    assert _comparable(rebuilt) == _comparable(full)

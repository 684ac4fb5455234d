"""The demo generator: deterministic, realistic in the ways the framework must cope with."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from framework.demo import ORIGINS, DemoData, generate_demo

END = date(2026, 3, 1)
END_EXCL = pd.Timestamp(END + timedelta(days=1))
WINDOW = pd.Timedelta(days=30)
PAID_STATUSES = ["active", "past_due", "canceled"]

TIMESTAMPS = {
    ("app", "accounts"): ["created_at"],
    ("app", "workspaces"): ["created_at"],
    ("app", "deployments"): ["created_at"],
    ("app", "invitations"): ["sent_at", "accepted_at"],
    ("app", "subscriptions"): ["started_at"],
    ("events", "flow_runs"): ["start_time"],
}


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate_demo(5000, 7, end_date=END)


def _frame(d: DemoData, db: str, table: str) -> pd.DataFrame:
    return getattr(d, db)[table]


def milestones(d: DemoData, dimension: str = "events") -> pd.DataFrame:
    """First timestamp of each funnel step per account (NaT: never), as growth.yaml defines them."""
    acc = d.app["accounts"].set_index("id")
    runs = d.events["flow_runs"]
    dim = getattr(d, dimension)["workspaces"][["id", "account_id"]]
    runs = runs.merge(dim, left_on="workspace_id", right_on="id", suffixes=("", "_ws"))
    subs = d.app["subscriptions"]

    def first(frame: pd.DataFrame, col: str) -> pd.Series:
        return frame.groupby("account_id")[col].min().reindex(acc.index)

    return pd.DataFrame(
        {
            "account_created": acc["created_at"],
            "workspace_created": first(d.app["workspaces"], "created_at"),
            "first_flow_run": first(runs[runs.state.isin(["COMPLETED", "FAILED"])], "start_time"),
            "first_deployment": first(d.app["deployments"], "created_at"),
            "first_scheduled_run": first(
                runs[(runs.run_type == "scheduled") & (runs.state == "COMPLETED")], "start_time"
            ),
            "invited_teammate": first(d.app["invitations"], "sent_at"),
            "paid": first(subs[subs.status.isin(PAID_STATUSES)], "started_at"),
        }
    )


def reached(m: pd.DataFrame) -> pd.DataFrame:
    """Reached within the 30-day window (independent mode)."""
    delta = m.sub(m["account_created"], axis=0)
    return delta.le(WINDOW) & m.notna()


# ---- determinism and shape ------------------------------------------------------------


def test_same_arguments_give_identical_frames(demo: DemoData) -> None:
    again = generate_demo(5000, 7, end_date=END)
    assert again.meta == demo.meta
    for (db, table) in TIMESTAMPS | {("events", "workspaces"): []}:
        pd.testing.assert_frame_equal(_frame(again, db, table), _frame(demo, db, table))


def test_different_seed_gives_different_data(demo: DemoData) -> None:
    other = generate_demo(5000, 8, end_date=END)
    assert not other.app["accounts"]["created_at"].equals(demo.app["accounts"]["created_at"])
    assert len(other.events["flow_runs"]) != len(demo.events["flow_runs"])


def test_meta(demo: DemoData) -> None:
    assert demo.meta == {
        "generator_version": "1",
        "accounts": "5000",
        "seed": "7",
        "end_date": "2026-03-01",
        "change_date": "2025-10-02",
        "change_step": "first_deployment",
        "change_lift_relative": "0.20",
    }


def test_columns_types_and_keys(demo: DemoData) -> None:
    expected = {
        ("app", "accounts"): ["id", "email", "created_at", "origin", "region"],
        ("app", "workspaces"): ["id", "account_id", "name", "created_at"],
        ("app", "deployments"): ["id", "workspace_id", "account_id", "created_at", "schedule"],
        ("app", "invitations"): ["id", "account_id", "email", "sent_at", "accepted_at"],
        ("app", "subscriptions"): ["id", "account_id", "plan", "status", "started_at"],
        ("events", "workspaces"): ["id", "account_id"],
        ("events", "flow_runs"): ["id", "workspace_id", "deployment_id", "state", "run_type", "start_time"],
    }
    assert set(demo.app) | {f"events.{t}" for t in demo.events} == {
        t if db == "app" else f"events.{t}" for db, t in expected
    }
    for (db, table), columns in expected.items():
        frame = _frame(demo, db, table)
        assert list(frame.columns) == columns, table
        assert frame["id"].dtype == np.int64 and frame["id"].is_unique, table
        assert frame["id"].is_monotonic_increasing, table
    for (db, table), columns in TIMESTAMPS.items():
        for col in columns:
            dtype = _frame(demo, db, table)[col].dtype
            assert pd.api.types.is_datetime64_dtype(dtype) and getattr(dtype, "tz", None) is None


def test_value_domains(demo: DemoData) -> None:
    acc, subs, runs = demo.app["accounts"], demo.app["subscriptions"], demo.events["flow_runs"]
    assert set(acc["origin"].dropna()) == set(ORIGINS)
    assert 0.01 <= acc["origin"].isna().mean() <= 0.035
    assert set(acc["region"]) == {"na", "eu", "apac"}
    assert acc["email"].is_unique
    assert set(subs["status"]) == {"active", "past_due", "canceled", "trialing"}
    assert set(runs["state"]) == {"COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PENDING"}
    assert set(runs["run_type"]) == {"manual", "scheduled"}
    assert demo.app["deployments"]["schedule"].isna().any()
    assert demo.app["deployments"]["schedule"].notna().any()
    scheduled = runs[runs["run_type"] == "scheduled"]
    assert scheduled["deployment_id"].notna().all()
    assert runs["deployment_id"].isna().any()


def test_signups_cover_the_year_and_grow(demo: DemoData) -> None:
    created = demo.app["accounts"]["created_at"]
    assert created.min() >= pd.Timestamp(END - timedelta(days=364))
    assert created.max() < END_EXCL
    per_quarter = created.dt.to_period("Q").value_counts().sort_index()
    first_half = created < pd.Timestamp(END - timedelta(days=182))
    assert first_half.mean() < 0.45  # a growth trend
    assert len(per_quarter) >= 4


def test_row_counts_in_expected_ranges(demo: DemoData) -> None:
    n = 5000
    app, ev = demo.app, demo.events
    assert len(app["accounts"]) == n
    assert 0.70 <= app["workspaces"]["account_id"].nunique() / n <= 0.82
    assert (app["workspaces"].groupby("account_id").size() > 1).any()  # some own several
    assert 15 <= len(ev["flow_runs"]) / n <= 22
    inviters = app["invitations"]["account_id"]
    assert 0.15 <= inviters[inviters <= n].nunique() / n <= 0.25
    subs = app["subscriptions"]
    payers = subs.loc[subs["status"].isin(PAID_STATUSES), "account_id"].nunique()
    assert 0.05 <= payers / n <= 0.10
    assert (subs["status"] == "trialing").sum() > 20
    assert set(ev["workspaces"]["id"]) >= set(app["workspaces"]["id"])


def test_engaged_accounts_run_more(demo: DemoData) -> None:
    m = milestones(demo)
    runs = demo.events["flow_runs"].merge(
        demo.events["workspaces"], left_on="workspace_id", right_on="id", suffixes=("", "_ws")
    )
    per_account = runs.groupby("account_id").size()
    schedulers = m.index[m["first_scheduled_run"].notna()]
    others = per_account.index.difference(schedulers)
    assert per_account.reindex(schedulers).median() > 3 * per_account.reindex(others).median()


def test_origins_convert_differently(demo: DemoData) -> None:
    m = milestones(demo).notna()
    origin = demo.app["accounts"].set_index("id")["origin"].astype(object).fillna("(none)")
    by_origin = m.groupby(origin)[["workspace_created", "paid"]].mean()
    assert by_origin["workspace_created"].max() - by_origin["workspace_created"].min() > 0.12
    assert by_origin["paid"].max() > 3 * by_origin["paid"].min()
    named = by_origin.drop(index="(none)")  # ~100 accounts: too few to rank reliably
    assert named["paid"].idxmax() == "partner"
    assert named["workspace_created"].idxmin() == "google"


def test_workspaces_come_hours_after_signup_some_late(demo: DemoData) -> None:
    m = milestones(demo)
    delay = (m["workspace_created"] - m["account_created"]).dropna()
    assert (delay >= pd.Timedelta(0)).all()
    assert delay.median() < pd.Timedelta(hours=12)
    assert 0.005 < (delay > WINDOW).mean() < 0.06


# ---- realism: non-linear journeys, dirt ------------------------------------------------


def test_journeys_are_not_linear(demo: DemoData) -> None:
    m = milestones(demo)
    has = m.notna()
    assert (has["first_deployment"] & ~has["first_flow_run"]).sum() > 10
    assert (has["paid"] & ~has["invited_teammate"]).sum() > 10
    assert (has["first_flow_run"] & ~has["workspace_created"]).sum() > 0
    assert (m["invited_teammate"] < m["first_deployment"]).sum() > 50
    assert (has["invited_teammate"] & ~has["first_deployment"]).sum() > 100
    # In independent mode a step can count more accounts than the step before it.
    counts = reached(m).sum()
    assert counts["invited_teammate"] > counts["first_scheduled_run"]
    # ... while the first steps still funnel down.
    assert counts["account_created"] > counts["workspace_created"] > counts["first_flow_run"]


def test_duplicates(demo: DemoData) -> None:
    runs = demo.events["flow_runs"].dropna(subset=["start_time"])
    dup_runs = runs.duplicated(["workspace_id", "start_time"]).sum() / len(demo.events["flow_runs"])
    assert 0.006 <= dup_runs <= 0.015
    inv = demo.app["invitations"]
    dup_inv = inv.duplicated(["account_id", "email", "sent_at"]).mean()
    assert 0.012 <= dup_inv <= 0.03


def test_orphans_present_but_below_half_a_percent(demo: DemoData) -> None:
    acc_ids = demo.app["accounts"]["id"]
    runs = demo.events["flow_runs"]
    orphan_runs = ~runs["workspace_id"].isin(demo.events["workspaces"]["id"])
    assert 0.002 <= orphan_runs.mean() < 0.005
    # One database: app.workspaces is the dimension; events-only workspaces add orphans.
    single_db = ~runs["workspace_id"].isin(demo.app["workspaces"]["id"])
    assert orphan_runs.mean() < single_db.mean() < 0.005
    inv_orphans = ~demo.app["invitations"]["account_id"].isin(acc_ids)
    assert inv_orphans.sum() >= 3 and inv_orphans.mean() < 0.005
    for table in ("workspaces", "deployments", "subscriptions"):
        assert (~demo.app[table]["account_id"].isin(acc_ids)).mean() < 0.005, table
    assert demo.events["workspaces"]["account_id"].isin(acc_ids).all()


def test_pending_runs_have_no_start_time(demo: DemoData) -> None:
    runs = demo.events["flow_runs"]
    pending = runs["state"] == "PENDING"
    assert pending.sum() > 100
    assert (runs["start_time"].isna() == pending).all()


def test_start_times_mix_whole_seconds_and_microseconds(demo: DemoData) -> None:
    us = demo.events["flow_runs"]["start_time"].dropna().dt.microsecond
    assert 0.6 < (us == 0).mean() < 0.9


# ---- the product change ------------------------------------------------------------------


def _deploy_rates(d: DemoData) -> tuple[float, float]:
    """Deploy rate (30-day window) among accounts that ran a flow: 90 days before/after the change."""
    m = milestones(d)
    r = reached(m)
    change = pd.Timestamp(d.meta["change_date"])
    created = m["account_created"]
    ran = r["first_flow_run"]
    before = ran & (created >= change - pd.Timedelta(days=90)) & (created < change)
    after = ran & (created >= change) & (created < change + pd.Timedelta(days=90))
    return r.loc[before, "first_deployment"].mean(), r.loc[after, "first_deployment"].mean()


def test_change_lifts_deployment_by_about_20_percent(demo: DemoData) -> None:
    before, after = _deploy_rates(demo)
    assert 0.33 < before < 0.47
    # ~600 runners per side at 5000 accounts: the ratio's sd is ~0.075 across seeds.
    assert 1.0 < after / before < 1.45


def test_change_lift_is_precise_at_scale() -> None:
    big = generate_demo(60_000, 7, end_date=END)
    before, after = _deploy_rates(big)
    assert 1.1 < after / before < 1.3  # sd ~0.025 across seeds
    # Everything else is unchanged by the change.
    m = milestones(big)
    r = reached(m)
    change = pd.Timestamp(big.meta["change_date"])
    created = m["account_created"]
    pre = (created >= change - pd.Timedelta(days=90)) & (created < change)
    post = (created >= change) & (created < change + pd.Timedelta(days=90))
    for step, given, tolerance in [
        ("workspace_created", "account_created", 0.06),
        ("first_flow_run", "workspace_created", 0.08),
        ("invited_teammate", "account_created", 0.12),
        ("paid", "account_created", 0.25),  # ~350 payers per side
    ]:
        rate_pre = r.loc[pre & r[given], step].mean()
        rate_post = r.loc[post & r[given], step].mean()
        assert abs(rate_post / rate_pre - 1) < tolerance, step


# ---- time bounds ---------------------------------------------------------------------------


def test_every_table_is_fresh_and_nothing_is_in_the_future(demo: DemoData) -> None:
    day_start = END_EXCL - pd.Timedelta(days=1)
    for (db, table), columns in TIMESTAMPS.items():
        frame = _frame(demo, db, table)
        assert frame[columns[0]].max() >= day_start, table
        for col in columns:
            assert frame[col].max() < END_EXCL, (table, col)


def test_fresh_even_when_small() -> None:
    small = generate_demo(300, 3, end_date=END)
    day_start = END_EXCL - pd.Timedelta(days=1)
    for (db, table), columns in TIMESTAMPS.items():
        frame = _frame(small, db, table)
        assert day_start <= frame[columns[0]].max() < END_EXCL, table


def test_activity_follows_signup(demo: DemoData) -> None:
    m = milestones(demo)
    for step in m.columns[1:]:
        assert (m[step].dropna() >= m.loc[m[step].notna(), "account_created"]).all(), step


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_demo(0, 7, end_date=END)
    with pytest.raises(TypeError):
        generate_demo(10, 7, end_date="2026-03-01")  # type: ignore[arg-type]


def test_generator_is_pure() -> None:
    code = (
        "import sys, framework.demo; "
        "bad = [m for m in ('prefect', 'sqlalchemy', 'slack_sdk', 'great_expectations') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

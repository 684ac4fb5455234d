"""The daily flow end to end on the demo databases, checked against a naive computation.

The reference below does what an analyst's notebook would: read the raw tables
into pandas, apply each step's filters and join, take each account's first
time, and count accounts of the current period that reached each step within
the window. It shares no code with the engine or the extraction, so the
report's headline numbers are checked independently.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.daily import growth_digest
from framework.config import load_config
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
ACCOUNTS = 2000

STEP_KEYS = {
    "key", "name", "position", "tracked", "qualifying", "entered", "reached", "conversion",
    "overall_conversion", "lost", "median_hours", "p90_hours", "previous_conversion", "delta_pp",
    "p_value", "target", "opportunity",
}
TOP_KEYS = {
    "framework", "as_of", "mode", "window_days", "current_period", "previous_period", "steps", "cohorts",
    "segments", "lowest_converting", "qualifying", "untracked", "data_quality", "delivery",
}


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("demo")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=ACCOUNTS, seed=11, end_date=END)
    return urls


@pytest.fixture(scope="module")
def report(demo_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    for name, url in demo_urls.items():
        mp.setenv(source_env_var(name), url)
    path = tmp_path_factory.mktemp("out") / "report.json"
    try:
        returned = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json=str(path))
    finally:
        mp.undo()
    data = json.loads(path.read_text())
    assert returned.to_dict() == data
    return data


def _naive_reached(urls: dict[str, str]) -> dict[str, int]:
    """Current-period accounts reaching each tracked step within the window (independent mode)."""
    app, events = sa.create_engine(urls["app"]), sa.create_engine(urls["events"])
    read = lambda engine, table: pd.read_sql_table(table, engine)  # noqa: E731
    accounts = read(app, "accounts")
    accounts["t1"] = pd.to_datetime(accounts["created_at"], utc=True)
    end = pd.Timestamp(END + timedelta(days=1), tz="UTC")
    window = pd.Timedelta(days=30)
    current = accounts[(accounts.t1 >= end - window - pd.Timedelta(days=28)) & (accounts.t1 < end - window)]

    runs = read(events, "flow_runs").merge(read(events, "workspaces"), left_on="workspace_id", right_on="id")
    runs["ts"] = pd.to_datetime(runs["start_time"], utc=True, format="mixed")
    frames = {
        "workspace_created": read(app, "workspaces").assign(ts=lambda f: pd.to_datetime(f.created_at, utc=True)),
        "first_flow_run": runs[runs.state.isin(["COMPLETED", "FAILED"])],
        "first_deployment": read(app, "deployments").assign(ts=lambda f: pd.to_datetime(f.created_at, utc=True)),
        "first_scheduled_run": runs[(runs.run_type == "scheduled") & (runs.state == "COMPLETED")],
        "invited_teammate": read(app, "invitations").assign(ts=lambda f: pd.to_datetime(f.sent_at, utc=True)),
        "paid": (lambda s: s[s.status.isin(["active", "past_due", "canceled"])])(read(app, "subscriptions"))
        .assign(ts=lambda f: pd.to_datetime(f.started_at, utc=True)),
    }
    app.dispose()
    events.dispose()
    reached = {"account_created": len(current)}
    for key, frame in frames.items():
        first = frame[frame.ts < end].groupby("account_id").ts.min().rename("first")
        joined = current.merge(first, left_on="id", right_index=True)
        reached[key] = int(((joined["first"] - joined["t1"]) <= window).sum())
    return reached


def test_report_follows_the_contract(report: dict) -> None:
    assert set(report) >= TOP_KEYS
    assert report["as_of"] == "2026-11-30" and report["mode"] == "independent" and report["window_days"] == 30
    # as_of_end 2026-12-01; current = [12-01 - 30 d - 28 d, 12-01 - 30 d) = [2026-10-04, 2026-11-01)
    assert report["current_period"]["start"] == "2026-10-04" and report["current_period"]["end"] == "2026-11-01"
    assert report["previous_period"] == {**report["previous_period"], "start": "2026-09-06", "end": "2026-10-04"}
    cfg = load_config(DEMO_FRAMEWORK)
    assert [s["key"] for s in report["steps"]] == [s.key for s in cfg.steps]
    for s in report["steps"]:
        assert set(s) >= STEP_KEYS
        if not s["tracked"]:
            assert all(s[k] is None for k in ("entered", "reached", "conversion", "lost", "opportunity"))
    assert report["qualifying"] == ["invited_teammate"]
    assert report["untracked"] == [{"key": "read_quickstart", "proposed_metric": cfg.step("read_quickstart").proposed_metric}]
    assert len(report["lowest_converting"]) == 3
    assert "invited_teammate" not in report["ranking"]
    assert report["data_quality"]["status"] in {"passed", "warned"}
    assert report["delivery"] == {"channel": "#growth", "status": "dry_run", "ts": None}
    # 12 monthly cohorts x (overall + origin values + region values) x 7 tracked steps
    cohorts = {r["cohort"] for r in report["cohorts"]}
    assert len(cohorts) == 12 and max(cohorts) == "2026-11" and min(cohorts) == "2025-12"
    assert all(isinstance(r["mature"], bool) for r in report["cohorts"])


def test_headline_numbers_match_a_naive_computation(report: dict, demo_urls: dict[str, str]) -> None:
    expected = _naive_reached(demo_urls)
    got = {s["key"]: s["reached"] for s in report["steps"] if s["tracked"]}
    assert got == expected
    tracked = [s for s in report["steps"] if s["tracked"]]
    for prev, step in zip(tracked, tracked[1:], strict=False):
        assert step["entered"] == prev["reached"]
        assert step["conversion"] == pytest.approx(step["reached"] / step["entered"], abs=1e-6)


def test_ranking_follows_conversion(report: dict) -> None:
    steps = {s["key"]: s for s in report["steps"]}
    ranked = [steps[k] for k in report["ranking"]]
    assert [s["conversion"] for s in ranked] == sorted(s["conversion"] for s in ranked)
    assert all(s["entered"] >= 30 and not s["qualifying"] for s in ranked)


def _run_posting(demo_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, slack, token: str, path) -> object:
    for name, url in demo_urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    return growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), channel="#growth", report_json=str(path))


def test_digest_is_posted_to_slack(demo_urls, monkeypatch, slack, tmp_path) -> None:
    from tests.support.slack_standin import VALID_TOKEN

    report = _run_posting(demo_urls, monkeypatch, slack, VALID_TOKEN, tmp_path / "r.json")
    assert report.delivery.status == "posted" and report.delivery.ts
    (call,) = slack.calls_to("chat.postMessage")
    assert call.body["channel"] == "#growth"
    assert call.body["blocks"][0]["type"] == "header" and "2026-11-30" in call.body["blocks"][0]["text"]["text"]
    assert json.loads((tmp_path / "r.json").read_text())["delivery"]["ts"] == report.delivery.ts
    # the funnel chart, written next to the report, went into the digest's thread
    chart = (tmp_path / "funnel.png").read_bytes()
    assert chart.startswith(b"\x89PNG")
    (upload,) = slack.calls_to("upload")
    assert upload.raw == chart
    (complete,) = slack.calls_to("files.completeUploadExternal")
    assert complete.body["channel_id"] == "C0GROWTH" and complete.body["thread_ts"] == report.delivery.ts


def test_without_a_report_file_the_chart_is_posted_and_its_temporary_file_removed(
    demo_urls, monkeypatch, slack, tmp_path
) -> None:
    import tempfile

    from tests.support.slack_standin import VALID_TOKEN

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp/TemporaryDirectory go
    for name, url in demo_urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    report = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), channel="#growth")
    assert report.delivery.status == "posted"
    (upload,) = slack.calls_to("upload")
    assert upload.raw.startswith(b"\x89PNG")  # the chart was drawn in the temporary directory and sent
    assert list(scratch.glob("growth-*")) == []  # ... which the run removed


def test_failed_delivery_keeps_the_report_and_raises(demo_urls, monkeypatch, slack, tmp_path) -> None:
    from framework.errors import DeliveryError

    with pytest.raises(DeliveryError) as err:
        _run_posting(demo_urls, monkeypatch, slack, "xoxb-revoked", tmp_path / "r.json")
    assert err.value.exit_code == 5 and "invalid_auth" in str(err.value)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["delivery"]["status"] == "failed" and saved["steps"] == err.value.report.to_dict()["steps"]


def test_cli_exits_5_when_slack_refuses_and_keeps_the_metrics(demo_urls, monkeypatch, slack, tmp_path, capsys) -> None:
    from flows.cli import main
    from tasks.store import MetricStore

    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    code = main(["run", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store,
                 *[f"--source={n}={u}" for n, u in demo_urls.items()]])
    err = capsys.readouterr().err
    assert code == 5 and "invalid_auth" in err and "xoxb-revoked" not in err and "Traceback" not in err
    with MetricStore.open(store) as kept:
        assert kept.has_results("Prefect Growth Framework", END)

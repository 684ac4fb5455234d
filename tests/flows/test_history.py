"""The metric store in the flows: a re-run replaces its results and updates its Slack message;
a 90-day backfill is stored, resumable, and feeds the digest's trend; export reads it back."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.backfill import growth_backfill
from flows.cli import main
from flows.daily import growth_digest
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK
from tests.support.slack_standin import VALID_TOKEN

END = date(2026, 11, 30)
FRAMEWORK_NAME = "Prefect Growth Framework"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("history")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=1500, seed=5, end_date=END)
    return urls


@pytest.fixture()
def env(demo: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for name, url in demo.items():
        monkeypatch.setenv(source_env_var(name), url)
    store = f"sqlite:///{tmp_path / 'growth.db'}"
    monkeypatch.setenv("GROWTH_STORE_URL", store)
    return store


def _count(store: str, table: str) -> int:
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        n = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return n


def test_same_day_twice_one_result_set_one_message_updated(env: str, monkeypatch, slack) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    first = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK))
    rows = _count(env, "gf_step_metrics")
    second = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK))
    assert (first.delivery.status, second.delivery.status) == ("posted", "updated")
    assert second.delivery.ts == first.delivery.ts
    assert len(slack.calls_to("chat.postMessage")) == 1
    (update,) = slack.calls_to("chat.update")
    assert update.body["ts"] == first.delivery.ts and update.body["channel"] == "C0GROWTH"
    assert rows == _count(env, "gf_step_metrics") == 8  # one row per framework step, once
    assert _count(env, "gf_snapshots") == 1


def _assert_progress_complete(flow_run_id, description: str) -> None:
    """The backfill's progress artifact: the latest of its key is this run's, at 100 %."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
        ArtifactFilter,
        ArtifactFilterFlowRunId,
    )

    async def read():
        async with get_client() as client:
            latest = await client.read_latest_artifacts(
                artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=["growth-backfill-progress"]))
            )
            mine = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return latest, mine

    latest, mine = asyncio.run(read())
    (artifact,) = mine  # the backfill's only artifact
    assert (artifact.key, artifact.type, artifact.description) == ("growth-backfill-progress", "progress", description)
    assert artifact.data == pytest.approx(100.0)
    (collection,) = latest
    assert collection.latest_id == artifact.id and collection.type == "progress"
    assert collection.data == pytest.approx(100.0)


def test_backfill_90_days_feeds_the_trend_and_resumes(env: str, tmp_path: Path) -> None:
    start, last = END - timedelta(days=90), END - timedelta(days=1)
    state = growth_backfill(start=start, end=last, framework_path=str(DEMO_FRAMEWORK), return_state=True)
    outcome = state.result()
    assert len(outcome["stored"]) == 90 and not outcome["failed_quality"]
    _assert_progress_complete(state.state_details.flow_run_id, f"Backfill {start} .. {last}")
    again = growth_backfill(start=start, end=last, framework_path=str(DEMO_FRAMEWORK))
    assert again["stored"] == [] and len(again["skipped"]) == 90

    # the digest of the next day shows the stored history as its trend
    report = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    csv = io.StringIO()
    with redirect_stdout(csv):
        assert main(["export", "--framework", str(DEMO_FRAMEWORK), "--store", env]) == 0
    history = pd.read_csv(io.StringIO(csv.getvalue()))
    assert set(history.columns) >= {"framework", "as_of", "step", "position", "entered", "reached", "conversion"}
    assert len(history) == 91 * 8 and (history.framework == FRAMEWORK_NAME).all()
    step = report.step("first_deployment")
    stored = history[history.step == "first_deployment"].sort_values("as_of")
    # the trend is the last 28 stored runs, this run last, oldest first
    assert [p.as_of for p in step.trend] == stored.as_of.tolist()[-28:]
    assert [p.conversion for p in step.trend] == pytest.approx(stored.conversion.tolist()[-28:], abs=1e-6)
    assert step.conversion_7_runs_ago == pytest.approx(stored.conversion.tolist()[-8], abs=1e-6)
    assert step.conversion_28_runs_ago == pytest.approx(stored.conversion.tolist()[-29], abs=1e-6)
    assert json.loads(report.to_json())["steps"][4]["trend"][-1]["as_of"] == END.isoformat()

    parquet = tmp_path / "history.parquet"
    assert main(["export", "--framework", str(DEMO_FRAMEWORK), "--store", env, "--format", "parquet",
                 "--output", str(parquet)]) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(parquet)[["as_of", "step", "reached"]].astype({"as_of": str}),
        history[["as_of", "step", "reached"]].astype({"as_of": str}),
        check_dtype=False,
    )

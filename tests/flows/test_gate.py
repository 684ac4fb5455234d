"""The flow end to end on a small non-demo schema whose data stopped weeks before as_of:
the freshness checks fail, the gate blocks publication, the flow fails with the report."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.daily import data_docs_dir, growth_digest
from framework.errors import QualityGateError
from tasks.store import MetricStore, runs
from tests.integration.test_extract_sqlite import AS_OF, FRAMEWORK, team_sources  # noqa: F401 - fixture


def test_stale_sources_block_publication(
    tmp_path: Path, team_sources: dict[str, str], monkeypatch: pytest.MonkeyPatch, session_store: str,  # noqa: F811
) -> None:
    for name, url in team_sources.items():
        monkeypatch.setenv(name, url)
    framework = tmp_path / "team.yaml"
    framework.write_text(FRAMEWORK, encoding="utf-8")
    report_path = tmp_path / "report.json"
    earlier_chart = tmp_path / "funnel.png"  # kept beside the report by an earlier, passing run
    earlier_chart.write_bytes(b"\x89PNG an earlier day's chart")
    with pytest.raises(QualityGateError) as err:
        growth_digest(as_of=AS_OF, framework_path=str(framework), dry_run=True, report_json=str(report_path))
    report = json.loads(report_path.read_text())
    assert not earlier_chart.exists()  # it is not this day's chart; a blocked run draws none
    assert report["data_quality"]["status"] == "failed"
    assert report["delivery"]["status"] == "skipped"
    failed = {c["name"] for c in report["data_quality"]["checks"] if not c["success"] and c["severity"] == "error"}
    # the newest team was made 2026-02-12, weeks before as_of_end 2026-04-01: stale;
    # the jobs table holds a record at as_of_end (job 15), so it is loaded: fresh
    assert "steps.team.freshness" in failed, failed
    assert "steps.job.freshness" not in failed, failed
    assert any("freshness" in line for line in err.value.problems)
    assert err.value.report.result.as_of == AS_OF.isoformat() == report["as_of"]
    assert isinstance(AS_OF, date)

    # the blocked metrics are stored all the same, marked, and kept out of trends
    with MetricStore.open(session_store) as store:
        assert store.load_report(report["framework"], AS_OF) == report
        assert not store.has_results(report["framework"], AS_OF, passed_only=True)
        assert store.trend(report["framework"], AS_OF) == {}
        assert store.get_watermarks(report["framework"]) == {}  # the next run reads everything again
        with store.engine.connect() as conn:
            statuses = conn.execute(sa.select(runs.c.status).where(runs.c.as_of == AS_OF)).scalars().all()
    assert statuses[-1] == "failed_quality"

    # every validation result is also in the run's GX Data Docs, static HTML
    docs = data_docs_dir(report["framework"], AS_OF)
    index = docs / "index.html"
    assert index.exists()
    pages = list(docs.glob("validations/**/*.html"))
    assert {p.parts[p.parts.index("validations") + 1] for p in pages} >= {"entities", "milestones", "steps", "metrics"}
    steps_page = next(p for p in pages if "validations/steps/" in p.as_posix()).read_text(encoding="utf-8")
    import re

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", steps_page))
    # the failed freshness expectation, its bound (as_of_end - 36 h) and the stale step's row
    assert "Status: Failed" in text
    assert (
        "values must be greater than or equal to 2026-03-30T12:00:00+00:00 . 1 unexpected values found. "
        "50% of 2 total rows. Unexpected Value Count step 2026-02-12T10:00:01+00:00 1 team"
    ) in text

    # ... and the run's data-quality artifact names the failed check and links the docs
    async def latest_artifact(key: str) -> str:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            (latest,) = await client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return latest.data

    markdown = asyncio.run(latest_artifact("growth-team-funnel-data-quality"))
    assert "**Data quality: failed**" in markdown and "steps.team.freshness" in markdown
    assert index.as_uri() in markdown
    digest = asyncio.run(latest_artifact("growth-team-funnel-digest"))
    assert "growth digest for" in digest and "Funnel chart" not in digest  # the digest names no chart


def test_blocked_digest_sends_a_quality_alert_instead(
    tmp_path: Path, team_sources: dict[str, str], monkeypatch: pytest.MonkeyPatch, slack  # noqa: F811
) -> None:
    from tests.support.slack_standin import VALID_TOKEN

    for name, url in team_sources.items():
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    framework = tmp_path / "team.yaml"
    framework.write_text(FRAMEWORK, encoding="utf-8")
    with pytest.raises(QualityGateError):
        growth_digest(as_of=AS_OF, framework_path=str(framework), channel="#growth")
    with pytest.raises(QualityGateError):  # a re-run updates the alert, it does not post another
        growth_digest(as_of=AS_OF, framework_path=str(framework), channel="#growth")
    (alert,) = slack.calls_to("chat.postMessage")
    assert "steps.team.freshness" in json.dumps(alert.body["blocks"])
    assert len(slack.calls_to("chat.update")) == 1
    assert not slack.calls_to("files.completeUploadExternal")  # no chart for a blocked digest


def test_the_command_prints_only_the_problems_on_stderr(
    tmp_path: Path, team_sources: dict[str, str]  # noqa: F811
) -> None:
    """cli-and-report.md: a non-zero exit prints one clear line or a short list on stderr, no
    traceback. Prefect's progress lines stay in the run's own logs."""
    import os
    import subprocess
    import sys

    framework = tmp_path / "team.yaml"
    framework.write_text(FRAMEWORK, encoding="utf-8")
    env = {**os.environ, **team_sources, "GROWTH_DATA_DIR": str(tmp_path / "data")}
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)
    growth = str(Path(sys.executable).with_name("growth"))
    done = subprocess.run(
        [growth, "run", "--framework", str(framework), "--as-of", AS_OF.isoformat(), "--dry-run",
         "--store", f"sqlite:///{tmp_path / 'store.db'}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "data-quality gate failed; digest not published:"
    assert lines[1:] and all(line.startswith("steps.") or line.startswith("entities.") for line in lines[1:]), lines
    assert "steps.team.freshness" in done.stderr and "Traceback" not in done.stderr
    assert "DATA QUALITY FAILED" in done.stdout  # the blocked digest itself, for the reader

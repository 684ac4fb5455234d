"""The flow end to end on a small non-demo schema whose data stopped weeks before as_of:
the freshness checks fail, the gate blocks publication, the flow fails with the report."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from flows.daily import growth_digest
from framework.errors import QualityGateError
from tests.integration.test_extract_sqlite import AS_OF, FRAMEWORK, team_sources  # noqa: F401 - fixture


def test_stale_sources_block_publication(
    tmp_path: Path, team_sources: dict[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    for name, url in team_sources.items():
        monkeypatch.setenv(name, url)
    framework = tmp_path / "team.yaml"
    framework.write_text(FRAMEWORK, encoding="utf-8")
    report_path = tmp_path / "report.json"
    with pytest.raises(QualityGateError) as err:
        growth_digest(as_of=AS_OF, framework_path=str(framework), dry_run=True, report_json=str(report_path))
    report = json.loads(report_path.read_text())
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

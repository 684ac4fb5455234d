"""The daily flow's run options, on small demo databases: mode and cohort overrides."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from flows.daily import growth_digest
from framework.config import load_config
from framework.errors import SourceError
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tasks.store import MetricStore
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
ACCOUNTS = 600
NAME = load_config(DEMO_FRAMEWORK).name


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("demo")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=ACCOUNTS, seed=5, end_date=END)
    return urls


@pytest.fixture
def sources(demo_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """The demo sources and a store of the test's own; returns the store URL."""
    for name, url in demo_urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("GROWTH_STORE_URL", store)
    return store


def test_mode_and_cohort_overrides_are_their_own_series_in_the_store(sources: str) -> None:
    as_file = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    assert (as_file.framework, as_file.result.mode) == (NAME, "independent")
    assert all("-W" not in r["cohort"] for r in as_file.to_dict()["cohorts"])

    other = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, mode="ordered", cohort="week")
    assert other.result.mode == "ordered"
    assert other.framework == f"{NAME} (ordered mode, weekly cohorts)"
    assert {r["cohort"][4:6] for r in other.to_dict()["cohorts"]} == {"-W"}
    # the override's numbers did not replace the day's numbers computed the file's way
    with MetricStore.open(sources) as store:
        assert store.load_report(NAME, END)["mode"] == "independent"
        assert store.load_report(other.framework, END)["mode"] == "ordered"
    engine = sa.create_engine(sources)
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("SELECT framework, framework_hash FROM gf_runs")).all())
    engine.dispose()
    assert len(set(hashes.values())) == 2

    # the file's own values given explicitly are no override at all
    same = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, mode="independent", cohort="month")
    assert same.framework == NAME and same.result.mode == "independent"


def _posting(slack, monkeypatch: pytest.MonkeyPatch, token: str):
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    return growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), channel="#growth")


def test_a_transient_slack_failure_is_retried_by_the_task_and_posts_once(sources, slack, monkeypatch) -> None:
    from flows.daily import publish_task
    from tests.support.slack_standin import VALID_TOKEN

    assert publish_task.retries == 2 and publish_task.retry_delay_seconds == [2, 10]
    # the client's own attempts (1 + 3 retries) all answered 500: the task's first try fails
    slack.fail_next(500, times=4, method="chat.postMessage")
    report = _posting(slack, monkeypatch, VALID_TOKEN)
    assert report.delivery.status == "posted" and report.delivery.ts
    assert len(slack.calls_to("chat.postMessage")) == 5  # the task's second try posted
    (message,) = slack.channel_messages("C0GROWTH")  # once: the retry searched the channel first
    assert message["ts"] == report.delivery.ts
    assert slack.calls_to("conversations.history")
    (upload,) = slack.calls_to("files.completeUploadExternal")
    assert upload.body["thread_ts"] == report.delivery.ts


def test_a_refused_token_is_not_retried(sources, slack, monkeypatch) -> None:
    from framework.errors import DeliveryError

    with pytest.raises(DeliveryError) as err:
        _posting(slack, monkeypatch, "xoxb-revoked")
    assert err.value.reason == "invalid_auth"
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert slack.channel_messages("C0GROWTH") == []


def test_a_failed_chart_upload_after_the_post_is_retried_as_an_update_with_the_chart(sources, slack, monkeypatch) -> None:
    """The digest is out, its chart owed (the record says so): the task's retry updates the
    message, never posts it again, and uploads the chart into its thread."""
    from tests.support.slack_standin import VALID_TOKEN

    slack.fail_next(500, times=4, method="files.getUploadURLExternal")  # the client's 4 attempts: try 1 fails
    report = _posting(slack, monkeypatch, VALID_TOKEN)
    (post,) = slack.calls_to("chat.postMessage")
    (update,) = slack.calls_to("chat.update")  # the retry's: the same message
    assert update.body["ts"] == report.delivery.ts
    assert report.delivery.status == "updated"  # what the retry did (the first try posted)
    assert len(slack.calls_to("files.getUploadURLExternal")) == 5  # 4 refused, then the retry's
    (upload,) = slack.calls_to("files.completeUploadExternal")
    assert upload.body["thread_ts"] == report.delivery.ts


def test_a_lost_answer_to_the_chart_upload_is_retried_without_a_second_copy(sources, slack, monkeypatch) -> None:
    """Slack shared the file but every answer to files.completeUploadExternal was lost: the
    retry updates the message, finds the chart in its thread (conversations.replies) and
    does not upload it again."""
    from tests.support.slack_standin import VALID_TOKEN

    slack.drop_next(times=4, method="files.completeUploadExternal")  # the client's 1 + 3 attempts
    report = _posting(slack, monkeypatch, VALID_TOKEN)
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.calls_to("chat.update")) == 1
    (look,) = slack.calls_to("conversations.replies")
    assert look.body["ts"] == report.delivery.ts
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1  # no second upload
    in_thread = [f for f in slack.files.values() if f.get("shared") and f.get("thread_ts") == report.delivery.ts]
    assert len(in_thread) == 1


def test_a_refused_chart_upload_is_not_retried(sources, slack, monkeypatch) -> None:
    """A refusal (here a missing scope) would be refused again: exit 5, the chart stays owed
    for `growth deliver` (tests/flows/test_reliability_runs.py)."""
    from framework.errors import DeliveryError
    from tests.support.slack_standin import VALID_TOKEN

    slack.refuse_next("missing_scope", method="files.getUploadURLExternal", needed="files:write")
    with pytest.raises(DeliveryError) as err:
        _posting(slack, monkeypatch, VALID_TOKEN)
    assert err.value.reason == "missing_scope"
    assert len(slack.calls_to("chat.postMessage")) == 1 and slack.calls_to("chat.update") == []
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1


def test_a_lost_post_that_could_not_be_confirmed_is_not_retried(sources, slack, monkeypatch) -> None:
    """Slack may have posted and the channel cannot be searched: another try could post again."""
    from framework.errors import DeliveryError
    from tasks.publish import POST_ATTEMPTS
    from tests.support.slack_standin import VALID_TOKEN

    slack.drop_next(times=10, method="chat.postMessage")
    slack.refuse_next("missing_scope", times=10, method="conversations.history", needed="channels:history")
    with pytest.raises(DeliveryError) as err:
        _posting(slack, monkeypatch, VALID_TOKEN)
    assert err.value.reason == "answer_lost" and "may have been posted" in str(err.value)
    assert len(slack.calls_to("chat.postMessage")) == POST_ATTEMPTS  # deliver's own attempts, one task try


def test_extraction_that_outlasts_its_timeout_fails_the_run(sources, monkeypatch, tmp_path) -> None:
    """The run is held at the extract fault point (tasks/faults.py) until a file that never
    appears; GROWTH_EXTRACT_TIMEOUT_SECONDS=2 ends it, Failed with the timeout as its reason."""
    import time

    monkeypatch.setenv("GROWTH_EXTRACT_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("GROWTH_FAULT", "extract")
    monkeypatch.setenv("GROWTH_FAULT_SLEEP", "120")
    monkeypatch.setenv("GROWTH_FAULT_UNTIL", str(tmp_path / "never"))
    started = time.monotonic()
    state = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, return_state=True)
    took = time.monotonic() - started
    assert state.is_failed(), state
    reason = ("reading the sources took longer than 2 s (GROWTH_EXTRACT_TIMEOUT_SECONDS; check-schema at most 2 s): "
              "a slow or locked source; raise the limit or look at the source's load")
    assert reason in state.message, state.message
    assert took < 60, f"the run took {took:.0f} s: the timeout did not interrupt the extraction"
    with pytest.raises(SourceError) as err:  # exit 4 from the CLI, the reason its one line
        state.result()
    assert err.value.exit_code == 4 and str(err.value) == reason
    with MetricStore.open(sources) as store:
        assert not store.has_results(NAME, END)
    engine = sa.create_engine(sources)
    with engine.connect() as conn:
        status, error = conn.execute(sa.text("SELECT status, error FROM gf_runs")).one()
    engine.dispose()
    assert status == "failed" and reason in error


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_a_bad_extract_timeout_is_a_usage_error(monkeypatch, value: str) -> None:
    from framework.errors import UsageError
    from tasks.extract import EXTRACT_TIMEOUT_ENV, extract_timeout

    monkeypatch.setenv(EXTRACT_TIMEOUT_ENV, value)
    with pytest.raises(UsageError, match=EXTRACT_TIMEOUT_ENV):
        extract_timeout()
    monkeypatch.setenv(EXTRACT_TIMEOUT_ENV, "90.5")
    assert extract_timeout() == 90.5
    monkeypatch.delenv(EXTRACT_TIMEOUT_ENV)
    assert extract_timeout() == 3600


def test_growth_run_mode_and_cohort_options_reach_the_flow(sources: str, demo_urls, tmp_path, capsys) -> None:
    import json

    from flows.cli import main

    report = tmp_path / "ordered.json"
    args = ["run", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--dry-run",
            "--store", sources, "--report-json", str(report), "--mode", "ordered", "--cohort", "week"]
    assert main(args) == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["mode"] == "ordered" and data["framework"] == f"{NAME} (ordered mode, weekly cohorts)"
    assert {r["cohort"][4:6] for r in data["cohorts"]} == {"-W"}
    # the same numbers as the flow called with the same override (nothing else differs)
    direct = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, mode="ordered", cohort="week")
    assert data["steps"] == direct.to_dict()["steps"]


@pytest.mark.parametrize(("option", "value"), [("--mode", "sequential"), ("--cohort", "day")])
def test_growth_run_refuses_an_unknown_mode_or_cohort(option: str, value: str, capsys) -> None:
    from flows.cli import main

    code = main(["run", "--framework", str(DEMO_FRAMEWORK), "--dry-run", option, value])
    err = capsys.readouterr().err
    assert code == 2 and f"invalid choice: '{value}'" in err and "Traceback" not in err


# ------------------------------------------------- report_json in a deployment run
# PREFECT__RUNTIME__DEPLOYMENT__ID is Prefect's own way to give prefect.runtime a value;
# the real-server test (test_deployments_e2e.py) runs the same path from a real deployment.

DEPLOYMENT_ID = "0b7a0f8e-0000-4000-8000-00000000e2e0"


@pytest.mark.parametrize("given", ["{tmp}/anywhere.json", "../escape.json", "reports/../../escape.json"])
def test_a_deployment_run_refuses_a_report_path_outside_the_reports_dir(
    sources, monkeypatch, tmp_path, given: str
) -> None:
    from framework.errors import UsageError

    given = given.format(tmp=tmp_path)  # an absolute path, in the test's own directory

    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", DEPLOYMENT_ID)
    monkeypatch.setenv("GROWTH_REPORTS_DIR", str(tmp_path / "reports"))
    with pytest.raises(UsageError, match="give a relative path without '..'"):
        growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json=given)
    assert list(tmp_path.rglob("*.json")) == []  # nothing written, in the reports dir or beside it
    with MetricStore.open(sources) as store:  # refused before anything was read or stored
        assert store.load_report(NAME, END) is None


def test_a_deployment_run_writes_its_report_under_the_reports_dir(sources, monkeypatch, tmp_path) -> None:
    import json

    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", DEPLOYMENT_ID)
    monkeypatch.setenv("GROWTH_REPORTS_DIR", str(tmp_path / "reports"))
    report = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json="daily/r.json")
    written = tmp_path / "reports" / "daily" / "r.json"
    assert json.loads(written.read_text()) == report.to_dict()
    assert (written.parent / "funnel.png").read_bytes().startswith(b"\x89PNG")  # the chart beside it


def test_outside_a_deployment_the_report_path_is_taken_as_given(sources, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID", raising=False)
    monkeypatch.setenv("GROWTH_REPORTS_DIR", str(tmp_path / "reports"))
    target = tmp_path / "elsewhere" / "r.json"  # absolute: the shell's user owns the machine
    growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json=str(target))
    assert target.exists() and not (tmp_path / "reports").exists()


def test_a_deployment_run_refuses_a_symlink_out_of_the_reports_dir(sources, monkeypatch, tmp_path) -> None:
    from framework.errors import UsageError

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", DEPLOYMENT_ID)
    monkeypatch.setenv("GROWTH_REPORTS_DIR", str(tmp_path / "reports"))
    with pytest.raises(UsageError, match="give a relative path without '..'"):
        growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json="link/r.json")
    assert list(outside.iterdir()) == []


def test_an_unwritable_report_path_fails_the_run_before_anything_is_stored(sources, monkeypatch, tmp_path) -> None:
    from framework.errors import UsageError

    (tmp_path / "reports" / "daily").mkdir(parents=True)  # a directory where the file would go
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", DEPLOYMENT_ID)
    monkeypatch.setenv("GROWTH_REPORTS_DIR", str(tmp_path / "reports"))
    with pytest.raises(UsageError, match=r"report_json .*daily: cannot write there \(is a directory\)"):
        growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json="daily")
    with MetricStore.open(sources) as store:  # failed at once: nothing computed or stored
        assert store.load_report(NAME, END) is None


def test_a_report_named_funnel_png_keeps_its_chart_under_another_name(sources, tmp_path) -> None:
    import json

    target = tmp_path / "funnel.png"  # an odd name for a JSON report, but the user's choice
    report = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, report_json=str(target))
    assert json.loads(target.read_text()) == report.to_dict()
    assert (tmp_path / "funnel.chart.png").read_bytes().startswith(b"\x89PNG")

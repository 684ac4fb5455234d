"""Whole runs under faults, for real: `growth run` processes killed (SIGKILL) at each stage,
two runs of one date at once, an unavailable store or source, Slack down and the digest
re-sent later with `growth deliver`. Real Prefect (the session's harness; subprocesses use
its API), real SQLite sources and store, the real slack_sdk client against the stand-in.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import main
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tasks.store import MetricStore
from tests.conftest import DEMO_FRAMEWORK, ROOT
from tests.support.prefect_api import ran, task_runs
from tests.support.slack_standin import VALID_TOKEN

END = date(2026, 11, 30)
FW = "Prefect Growth Framework"
STEPS = 8  # the demo framework's steps: one gf_step_metrics row each per stored day


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("demo")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=600, seed=5, end_date=END)
    return urls


def _sources(urls: dict[str, str]) -> list[str]:
    return [f"--source={n}={u}" for n, u in urls.items()]


def _run_args(urls: dict[str, str], store: str, *extra: str) -> list[str]:
    return ["run", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store,
            "--channel", "#growth", *_sources(urls), *extra]


def _child_env(slack, **extra: str) -> dict[str, str]:
    """A `growth` subprocess that uses this session's Prefect API and the Slack stand-in."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("GROWTH_")}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), SLACK_BOT_TOKEN=VALID_TOKEN,
               SLACK_API_URL=slack.url, **extra)
    return env


def _growth(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


class _Output:
    """A child's merged stdout/stderr, read line by line on a thread, so the test can wait for a line
    and later read the rest. One reader only: ``communicate()`` after this would race the thread
    for the pipe and see whatever the thread had not yet taken (CI once saw an empty rest)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.seen, self._lines = proc, [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, deadline: float) -> str | None:
        """The next line; None at the end of the output; TimeoutError once ``deadline`` passes."""
        try:
            return self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError from None

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        """Read until a line contains ``needle``; kill the child and fail with its output if none does."""
        deadline = time.monotonic() + timeout
        try:
            while (line := self._next(deadline)) is not None:
                self.seen.append(line)
                if needle in line:
                    return
        except TimeoutError:
            pass
        self.proc.kill()
        self.proc.wait(30)
        pytest.fail(f"never saw {needle!r}; output:\n{self.text}")

    def rest(self, timeout: float) -> str:
        """Read to the end of the output and wait for the child to exit; everything it printed."""
        deadline = time.monotonic() + timeout
        try:
            while (line := self._next(deadline)) is not None:
                self.seen.append(line)
        except TimeoutError:
            pytest.fail(f"the child did not finish within {timeout} s; output:\n{self.text}")
        self.proc.wait(max(deadline - time.monotonic(), 1))
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.seen)


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> _Output:
    """Start reading the child's output and return once a line contains ``needle``."""
    output = _Output(proc)
    output.wait_for(needle, timeout)
    return output


def _counts(store: str) -> dict[str, int]:
    engine = sa.create_engine(store)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()  # noqa: S608 - fixed names
                    for t in ("gf_snapshots", "gf_step_metrics", "gf_deliveries")}
    finally:
        engine.dispose()


def _without_logging_errors(text: str) -> str:
    """stderr less the stdlib's '--- Logging error ---' reports: in one pytest process, Prefect's
    console handler may still hold an earlier test's closed capture stream (test noise, not the
    command's output; the subprocess tests see the command's real output)."""
    return re.sub(r"--- Logging error ---\n.*?\nArguments: .*?\n", "", text, flags=re.S)


def _one_digest(slack) -> dict:
    (message,) = slack.channel_messages("C0GROWTH")
    assert message["metadata"]["event_payload"] == {"framework": FW, "as_of": END.isoformat(), "channel": "#growth"}
    return message


# ---------------------------------------------------------------- killed at each stage


@pytest.mark.parametrize(
    ("stage", "point"),
    # extracting: after the first table's query was read, its connection open, the other tables unread;
    # posting: after Slack took the post, before the store knew; uploading: the post recorded, its chart not sent
    [("extracting", "extract.table"), ("writing the store", "store.write"), ("posting", "slack.posted"),
     ("uploading the chart", "slack.chart")],
)
def test_killed_run_is_completed_by_the_next_without_duplicates(
    demo_urls, slack, tmp_path: Path, monkeypatch, capsys, stage: str, point: str
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _growth(_run_args(demo_urls, store), _child_env(slack, GROWTH_FAULT=point, GROWTH_FAULT_SLEEP="120"))
    try:
        _wait_for_line(proc, f"fault point {point}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    posted = point in {"slack.posted", "slack.chart"}  # killed after Slack took the post
    assert len(slack.calls_to("chat.postMessage")) == (1 if posted else 0)
    assert slack.calls_to("files.completeUploadExternal") == []

    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    assert main(_run_args(demo_urls, store)) == 0, capsys.readouterr().err
    assert _counts(store) == {"gf_snapshots": 1, "gf_step_metrics": STEPS, "gf_deliveries": 1}
    message = _one_digest(slack)
    assert len(slack.calls_to("chat.postMessage")) == 1  # never posted twice
    # ... and its chart is in its thread, once, whichever run sent it
    (upload,) = slack.calls_to("files.completeUploadExternal")
    assert upload.body["thread_ts"] == message["ts"]
    with MetricStore.open(store) as kept:
        record = kept.get_delivery(FW, END, "#growth")
        # the record names the next run's delivery: an update of the message the killed run posted
        assert record.ts == message["ts"] and record.status == ("updated" if point == "slack.chart" else "posted")
        assert kept.stored_version(FW, END) == (2 if posted else 1)


# ---------------------------------------------------------------- two runs at once


def test_two_runs_of_one_date_one_commits_the_other_ends_cleanly(demo_urls, slack, tmp_path, monkeypatch, capsys) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    go = tmp_path / "other-run-committed"
    slow = _growth(_run_args(demo_urls, store), _child_env(
        slack, GROWTH_FAULT="extract", GROWTH_FAULT_SLEEP="300", GROWTH_FAULT_UNTIL=str(go)))
    try:
        reader = _wait_for_line(slow, "fault point extract")  # it began its run: base version 0
        monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        assert main(_run_args(demo_urls, store)) == 0  # the other run commits first ...
        go.touch()  # ... and only then does the held run go on
        output = reader.rest(timeout=180)
    finally:
        if slow.poll() is None:
            slow.kill()
    assert slow.returncode == 0, output
    assert f"another run for {FW} {END} committed first; its results stand" in output
    assert "Traceback" not in output
    assert _counts(store) == {"gf_snapshots": 1, "gf_step_metrics": STEPS, "gf_deliveries": 1}
    _one_digest(slack)
    assert len(slack.calls_to("chat.postMessage")) == 1 and slack.calls_to("chat.update") == []
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        statuses = sorted(conn.execute(sa.text("SELECT status FROM gf_runs")).scalars())
    engine.dispose()
    assert statuses == ["succeeded", "superseded"]


# ---------------------------------------------------------------- store or source unavailable


def _closed_port() -> int:
    """A loopback port nothing listens on: 1 (tcpmux), never bound here. (A port picked free
    and closed could be taken by another process before the test connects.)"""
    return 1


def test_unavailable_store_fails_the_run_before_publishing(demo_urls, slack) -> None:
    store = f"postgresql+psycopg://growth:store-secret-pw@127.0.0.1:{_closed_port()}/metrics"
    started = time.monotonic()
    proc = _growth(_run_args(demo_urls, store), _child_env(slack))
    out, _ = proc.communicate(timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 4, out
    assert "metric store (postgresql+psycopg://growth:***@127.0.0.1" in out and "store-secret-pw" not in out
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("metric store (postgresql+psycopg://growth:***@")
    assert "Retries are exhausted" in out and elapsed >= 12  # open-store was retried twice (2 s, then 10 s)
    assert slack.calls == []  # nothing posted


def test_source_refusing_connections_fails_the_flow_with_its_name_after_bounded_retries(
    demo_urls, slack, tmp_path, monkeypatch
) -> None:
    from flows.daily import growth_digest

    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("GROWTH_STORE_URL", store)
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    monkeypatch.setenv(source_env_var("app"), demo_urls["app"])
    monkeypatch.setenv(source_env_var("events"),
                       f"postgresql+psycopg://reader:source-secret-pw@127.0.0.1:{_closed_port()}/events")
    state = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), return_state=True)
    assert state.is_failed()
    assert "source 'events'" in state.message and "source-secret-pw" not in state.message
    with pytest.raises(Exception) as err:
        state.result()
    assert err.value.exit_code == 4 and "source-secret-pw" not in str(err.value)

    runs = task_runs(state.state_details.flow_run_id, until=ran("check-schema", 3))
    assert runs["check-schema"].run_count == 3  # the first try and 2 retries (2 s, 10 s)
    assert "extract" not in runs
    assert slack.calls == []
    assert _counts(store)["gf_snapshots"] == 0  # no results stored
    engine = sa.create_engine(store)
    with engine.connect() as conn:
        (status, error), = conn.execute(sa.text("SELECT status, error FROM gf_runs")).all()
    engine.dispose()
    assert status == "failed" and "source 'events'" in error and "source-secret-pw" not in error


# ---------------------------------------------------------------- Slack down, re-sent later


def test_slack_down_then_growth_deliver_sends_it_exactly_once(demo_urls, slack, tmp_path, monkeypatch, capsys) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{_closed_port()}/api/")  # Slack unreachable
    assert main(_run_args(demo_urls, store)) == 5
    err = _without_logging_errors(capsys.readouterr().err)
    assert "Slack could not be reached for #growth" in err and "Traceback" not in err
    with MetricStore.open(store) as kept:
        assert kept.has_results(FW, END)  # the metrics are stored all the same
        assert kept.get_delivery(FW, END, "#growth").status == "failed"

    monkeypatch.setenv("SLACK_API_URL", slack.url)  # Slack is back
    deliver = ["deliver", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store]
    assert main(deliver) == 0
    first = _one_digest(slack)
    assert capsys.readouterr().out.strip() == f"digest posted in #growth (ts {first['ts']})"
    assert main([*deliver, "--channel", "#growth"]) == 0  # again: the same message, updated
    assert capsys.readouterr().out.strip() == f"digest updated in #growth (ts {first['ts']})"
    assert _one_digest(slack)["ts"] == first["ts"]
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.calls_to("chat.update")) == 1
    (upload,) = slack.calls_to("files.completeUploadExternal")  # the chart, once, in the thread
    assert upload.body["thread_ts"] == first["ts"]
    # what was sent is the stored day's digest
    assert f"{END}" in first["blocks"][0]["text"]["text"]

    assert main([*deliver, "--channel", "#alerts"]) == 0  # another channel: its own single post
    assert len(slack.channel_messages("C0ALERTS")) == 1 and len(slack.calls_to("chat.postMessage")) == 2


def test_a_chart_that_could_not_be_uploaded_is_owed_and_sent_by_growth_deliver(
    demo_urls, slack, tmp_path, monkeypatch, capsys
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    slack.refuse_next("missing_scope", method="files.getUploadURLExternal", needed="files:write")
    assert main(_run_args(demo_urls, store)) == 5  # the digest is in Slack, its chart is not
    err = _without_logging_errors(capsys.readouterr().err)
    assert "missing_scope" in err and "Traceback" not in err, err
    posted = _one_digest(slack)
    assert slack.calls_to("files.completeUploadExternal") == []
    with MetricStore.open(store) as kept:
        record = kept.get_delivery(FW, END, "#growth")
        assert (record.ts, record.status) == (posted["ts"], "chart_owed")

    deliver = ["deliver", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store]
    slack.refuse_next("not_in_channel", method="chat.update")
    assert main(deliver) == 5  # a failed update pays nothing: the chart stays owed
    capsys.readouterr()
    with MetricStore.open(store) as kept:
        assert kept.get_delivery(FW, END, "#growth").status == "chart_owed"
    assert main(deliver) == 0  # the scope granted: the same message, updated, and the chart owed
    assert capsys.readouterr().out.strip() == f"digest updated in #growth (ts {posted['ts']})"
    (upload,) = slack.calls_to("files.completeUploadExternal")
    assert upload.body["thread_ts"] == posted["ts"]
    assert main(deliver) == 0  # paid: a later delivery only updates
    assert len(slack.calls_to("files.completeUploadExternal")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.calls_to("chat.update")) == 3
    with MetricStore.open(store) as kept:
        assert kept.get_delivery(FW, END, "#growth").status == "updated"


@pytest.mark.parametrize(
    ("fault", "channel", "message"),
    [
        # Slack rate-limits every call (Retry-After 0 keeps the test short): the bounded retries
        # give up at the first call, the channel lookup
        ("429 forever", "#growth", "Slack refused the channel list (looking up #growth): ratelimited"),
        ("503 forever", "#growth", "Slack refused the channel list (looking up #growth): internal_error"),
        # every answer comes after the client's 1 s timeout; the post is carried out, but the
        # history lookup that would find it times out too: nothing can be confirmed
        ("timeouts", "#growth", "Slack could not be reached for #growth: TimeoutError (the digest may have "
         "been posted; the next run or `growth deliver` finds it)"),
        ("unknown channel", "#nowhere", "Slack refused the digest for #nowhere: channel_not_found"),
    ],
)
def test_slack_failures_end_the_run_with_exit_5_and_the_metrics_stored(
    demo_urls, slack, tmp_path, monkeypatch, capsys, fault: str, channel: str, message: str
) -> None:
    """A whole `growth run` per Slack failure kind: exit 5, the day stored, its delivery recorded
    as failed (so `growth deliver` can send it later), one clear line and no traceback."""
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    if fault == "429 forever":
        slack.fail_next(429, {"Retry-After": "0"}, times=200)
    elif fault == "503 forever":
        slack.fail_next(503, times=200)
    elif fault == "timeouts":
        monkeypatch.setenv("GROWTH_SLACK_TIMEOUT", "1")
        slack.delay_next(2.0, times=200)
    assert main([*_run_args(demo_urls, store), "--channel", channel]) == 5
    err = _without_logging_errors(capsys.readouterr().err)
    assert err.strip().splitlines()[-1] == message and "Traceback" not in err, err
    with MetricStore.open(store) as kept:
        assert kept.has_results(FW, END)  # the metrics are stored all the same
        assert kept.get_delivery(FW, END, channel).status == "failed"


def test_growth_deliver_with_nothing_stored_exits_2(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    code = main(["deliver", "--framework", str(DEMO_FRAMEWORK), "--as-of", "2026-01-01",
                 "--store", f"sqlite:///{tmp_path / 'empty.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        f"growth deliver: nothing stored for '{FW}' on 2026-01-01 (growth run or growth backfill stores a day first)")


def test_growth_deliver_refused_by_slack_exits_5(demo_urls, slack, tmp_path, monkeypatch, capsys) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(_run_args(demo_urls, store, "--dry-run")) == 0
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked-secret")
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    capsys.readouterr()
    code = main(["deliver", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--store", store])
    err = capsys.readouterr().err
    assert code == 5 and "invalid_auth" in err and "xoxb-revoked-secret" not in err
    assert slack.messages == {}


def test_a_blocked_days_alert_becomes_the_digest_with_its_chart_when_a_later_run_passes(
    slack, tmp_path, monkeypatch, capsys
) -> None:
    from tests.flows.test_reliability_data import _database, _normal_rows
    from tests.flows.test_reliability_data import _run as run_on

    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    code, *_ = run_on(tmp_path, _database(tmp_path / "empty.db", [], []), capsys)  # freshness fails
    assert code == 3
    (alert,) = slack.channel_messages("C0GROWTH")
    assert alert["text"].startswith("DATA QUALITY FAILED")
    assert slack.calls_to("files.completeUploadExternal") == []  # no chart with an alert

    code, report, _, err = run_on(tmp_path, _database(tmp_path / "loaded.db", *_normal_rows()), capsys)
    assert code == 0, err  # the source loaded: the same day passes
    (digest,) = slack.channel_messages("C0GROWTH")  # the alert's message, now the digest
    assert digest["ts"] == alert["ts"] == report["delivery"]["ts"]
    assert not digest["text"].startswith("DATA QUALITY FAILED")
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.calls_to("chat.update")) == 1
    (upload,) = slack.calls_to("files.completeUploadExternal")  # and the digest's chart, in its thread
    assert upload.body["thread_ts"] == digest["ts"]


def test_growth_deliver_of_a_day_that_failed_the_gate_sends_the_alert_once(slack, tmp_path, monkeypatch, capsys) -> None:
    """Blocked results are stored too (failed_quality): deliver re-sends the alert, not the digest, exit 3."""
    from tests.flows.test_reliability_data import FRAMEWORK, _database

    url = _database(tmp_path / "empty.db", [], [])  # empty tables: the freshness checks fail
    framework = tmp_path / "growth.yaml"
    framework.write_text(FRAMEWORK.format(signup_name="Sign up", attributes="origin"), encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["run", "--framework", str(framework), "--as-of", END.isoformat(), "--source", f"db={url}",
                 "--store", store, "--dry-run"]) == 3
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    capsys.readouterr()
    deliver = ["deliver", "--framework", str(framework), "--as-of", END.isoformat(), "--store", store]
    assert main(deliver) == 3
    assert "failed the data-quality gate: the alert was sent to #growth" in capsys.readouterr().err
    (message,) = slack.channel_messages("C0GROWTH")
    assert message["text"].startswith("DATA QUALITY FAILED")
    assert main(deliver) == 3  # again: the same message
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(slack.calls_to("chat.update")) == 1
    assert slack.calls_to("files.completeUploadExternal") == []  # no chart with an alert

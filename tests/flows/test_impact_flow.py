"""`growth impact` and the growth-impact flow on the demo data, end to end (real SQLite
sources, real Prefect, the real Slack client against the stand-in).

The demo generator (framework/demo.py) ships a product change: for accounts created on or
after ``end_date - CHANGE_OFFSET_DAYS``, the probability of deploying after a first run is
multiplied by ``1 + CHANGE_LIFT_RELATIVE``. The *true* lift of the step's conversion is
derived from the generator itself, not written down: the same accounts are generated
again with ``CHANGE_LIFT_RELATIVE = 0`` (same seed, so every random draw is the same and
only the deploy threshold moves), and the after-cohorts' conversion is computed in both
worlds with a naive pandas computation that shares no code with the engine. Their
difference is the change's effect on exactly these accounts; the flow's 95% interval must
cover it. A placebo date whose after-cohorts all end before the real change must come out
"no detectable change".
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

import framework.demo as demo
from flows.impact import growth_impact
from framework.errors import UsageError
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK, ROOT

END = date(2026, 11, 30)
ACCOUNTS = 12_000  # about 1,400 accounts enter the step per side: the +8 pp lift is ~5 standard errors
SEED = 11
CHANGE = END - timedelta(days=demo.CHANGE_OFFSET_DAYS)
STEP = demo.CHANGE_STEP


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("impact-demo")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    meta = seed_demo(urls["app"], urls["events"], accounts=ACCOUNTS, seed=SEED, end_date=END)
    assert meta["change_date"] == CHANGE.isoformat() and meta["change_step"] == STEP
    return urls


@pytest.fixture()
def sources(demo_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name, url in demo_urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    monkeypatch.setenv("GROWTH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    return demo_urls


def _naive(data: demo.DemoData, cohorts: list[str]) -> tuple[int, int]:
    """(entered, reached) of the step over the given monthly cohorts, independent mode, as an
    analyst would count a conversion from the raw frames: entered = a first completed/failed
    run within 30 days of signup, reached = those of them with a first deployment within 30
    days too (an account that deploys without a run did not enter the step)."""
    end = pd.Timestamp(END + timedelta(days=1))
    runs = data.events["flow_runs"].merge(
        data.events["workspaces"], left_on="workspace_id", right_on="id", suffixes=("", "_ws")
    )
    runs = runs[runs["state"].isin(["COMPLETED", "FAILED"]) & (runs["start_time"] < end)]
    deployments = data.app["deployments"]
    deployments = deployments[deployments["created_at"] < end]
    accounts = data.app["accounts"].set_index("id")[["created_at"]]
    accounts = accounts.join(runs.groupby("account_id")["start_time"].min().rename("run"))
    accounts = accounts.join(deployments.groupby("account_id")["created_at"].min().rename("deployed"))
    window = pd.Timedelta(days=30)
    picked = accounts[accounts["created_at"].dt.strftime("%Y-%m").isin(cohorts)]
    ran = (picked["run"] - picked["created_at"]) <= window
    deployed = (picked["deployed"] - picked["created_at"]) <= window
    return int(ran.sum()), int((ran & deployed).sum())


def _latest_artifact(key: str) -> str:
    async def read() -> str:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            (latest,) = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return latest.data

    return asyncio.run(read())


def test_the_demo_change_is_found_and_the_interval_covers_the_true_lift(
    sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=CHANGE, as_of=END)
    r = result.to_dict()
    assert r["verdict"] == "improved", result.summary
    assert [c["cohort"] for c in r["excluded"]] == [f"{CHANGE:%Y-%m}"]  # the month of the change straddles it
    after = [c["cohort"] for c in r["after"]["cohorts"]]
    before = [c["cohort"] for c in r["before"]["cohorts"]]
    assert len(after) == len(before) == 3 and r["delivery"]["status"] == "dry_run"

    actual = demo.generate_demo(ACCOUNTS, SEED, end_date=END)
    # the flow's counts are an analyst's counts from the generated frames
    assert _naive(actual, before) == (r["before"]["entered"], r["before"]["reached"])
    assert _naive(actual, after) == (r["after"]["entered"], r["after"]["reached"])

    built_in = demo.CHANGE_LIFT_RELATIVE
    monkeypatch.setattr(demo, "CHANGE_LIFT_RELATIVE", 0.0)
    without = demo.generate_demo(ACCOUNTS, SEED, end_date=END)
    entered, reached_without = _naive(without, after)
    assert entered == r["after"]["entered"]  # the change moves deployments only
    true_lift = (r["after"]["reached"] - reached_without) / entered
    assert true_lift > 0
    assert r["ci_low"] <= true_lift <= r["ci_high"], (true_lift, r["ci_low"], r["ci_high"])
    # the probability of deploying after a run is x(1 + built_in) (capped at 0.8): the relative
    # lift among those who ran is built_in, up to which accounts' draws the change tips over
    assert true_lift / (reached_without / entered) == pytest.approx(built_in, rel=0.25), true_lift

    markdown = _latest_artifact("growth-impact")
    assert "**Verdict: improved.**" in markdown
    for label in before + after:
        assert f"| {label} |" in markdown
    assert "![conversion by cohort](data:image/png;base64," in markdown


def test_a_placebo_date_before_the_change_finds_nothing(sources) -> None:
    placebo = CHANGE - timedelta(days=120)
    result = growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=placebo, as_of=END)
    # a valid placebo: every after-cohort ended before the real change
    assert all(date.fromisoformat(c.end) <= CHANGE for c in result.after.cohorts)
    assert len(result.after.cohorts) == 3
    assert result.verdict == "no_change", result.summary
    assert result.ci_low < 0 < result.ci_high and result.p_value >= 0.05
    assert result.summary.startswith("No detectable change")


def test_too_early_via_the_cli_is_exit_0_with_null_numbers(sources, tmp_path: Path, capsys) -> None:
    from flows.cli import main

    recent = END - timedelta(days=100)  # 2026-08-22: September and October are mature, November is not
    out = tmp_path / "impact.json"
    code = main(["impact", "--framework", str(DEMO_FRAMEWORK), "--step", STEP, "--change-date", recent.isoformat(),
                 "--as-of", END.isoformat(), "--dry-run", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    r = json.loads(out.read_text())
    assert r["verdict"] == "too_early"
    assert [r[k] for k in ("absolute_lift", "relative_lift", "ci_low", "ci_high", "p_value")] == [None] * 5
    assert [c["cohort"] for c in r["after"]["cohorts"]] == ["2026-09", "2026-10"]
    assert [c["cohort"] for c in r["pending"]] == ["2026-11"] and r["ready_on"] == "2026-12-30"
    assert "Too early: 2 cohorts mature of 3 needed" in printed
    assert (tmp_path / "impact.chart.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", "read_quickstart"], "step 'read_quickstart' is untracked"),
        (["--step", "nope"], "unknown step 'nope'"),
        (["--change-date", "2026-12-01"], "the change date 2026-12-01 is after as_of 2026-11-30"),
        (["--segment", "plan"], "unknown segment attribute 'plan'"),
        (["--after-cohorts", "0"], "--after-cohorts: must be at least 1"),
    ],
)
def test_guards_exit_2_with_one_clear_line(sources, capfd, args: list[str], message: str) -> None:
    from flows.cli import main

    base = {"--step": STEP, "--change-date": CHANGE.isoformat()}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["impact", "--framework", str(DEMO_FRAMEWORK), "--as-of", END.isoformat(), "--dry-run"]
    argv += [x for pair in base.items() for x in pair]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_too_small_a_denominator_fails_the_run_with_exit_2(sources, capfd) -> None:
    from flows.cli import main

    # the demo's data starts 365 days before END: the cohorts before this date hold nobody
    early = END - timedelta(days=demo.HISTORY_DAYS - 10)
    code = main(["impact", "--framework", str(DEMO_FRAMEWORK), "--step", STEP, "--change-date", early.isoformat(),
                 "--as-of", END.isoformat(), "--dry-run"])
    err = capfd.readouterr().err
    assert code == 2
    assert "only 0 accounts entered step 'first_deployment' in the before cohorts" in err
    assert "Traceback" not in err
    with pytest.raises(UsageError, match="at least min_sample = 30 needed"):
        growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=early, as_of=END)


def test_posts_the_result_and_its_chart_to_slack(sources, monkeypatch, slack) -> None:
    from tests.support.slack_standin import VALID_TOKEN

    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    result = growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=CHANGE, as_of=END,
                           dry_run=False, segment="origin")
    assert result.delivery.status == "posted" and result.delivery.channel == "#growth"
    (post,) = slack.calls_to("chat.postMessage")
    blocks = post.body["blocks"]
    assert blocks[0]["text"]["text"] == f"Impact: Deploy a flow since {CHANGE}"
    assert "Improved" in post.body["text"] and "By origin" in json.dumps(blocks)
    (complete,) = slack.calls_to("files.completeUploadExternal")
    assert complete.body["channel_id"] == "C0GROWTH" and complete.body["thread_ts"] == result.delivery.ts
    (upload,) = slack.calls_to("upload")
    assert upload.raw.startswith(b"\x89PNG")


def test_a_refused_post_exits_5_and_keeps_the_result(sources, monkeypatch, slack, tmp_path: Path, capfd) -> None:
    from flows.cli import main

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    out = tmp_path / "impact.json"
    code = main(["impact", "--framework", str(DEMO_FRAMEWORK), "--step", STEP, "--change-date", CHANGE.isoformat(),
                 "--as-of", END.isoformat(), "--json", str(out)])
    captured = capfd.readouterr()
    assert code == 5
    assert "invalid_auth" in captured.err and "xoxb-revoked" not in captured.err + captured.out
    assert "Traceback" not in captured.err
    saved = json.loads(out.read_text())
    assert saved["verdict"] == "improved" and saved["delivery"] == {"channel": "#growth", "status": "failed", "ts": None}
    assert "Verdict: improved" in captured.out


def _documented_example() -> list[tuple[list[str], list[str]]]:
    """docs/impact.md's example block: each '$ growth ...' command (continuation lines
    joined) with the paragraphs of output shown after it."""
    doc = (ROOT / "docs" / "impact.md").read_text(encoding="utf-8")
    block = doc.split("## Example (the demo)", 1)[1].split("```\n", 2)[1]
    runs: list[tuple[list[str], list[str]]] = []
    lines = iter(block.splitlines())
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + next(lines)
            runs.append((shlex.split(command), []))
        else:
            runs[-1][1].append(line)
    return [(argv, [p for p in "\n".join(out).split("\n\n") if p.strip()]) for argv, out in runs]


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def test_the_documented_example_prints_what_the_docs_show(tmp_path: Path, monkeypatch, capsys) -> None:
    """The exact commands of docs/impact.md's example, run from a directory laid out like the
    repository's root (framework/ is the checkout's), print the output shown there; the
    README's numbers are those of the same run."""
    from flows.cli import main
    from framework.impact import fmt_pp

    monkeypatch.chdir(tmp_path)
    (tmp_path / "framework").symlink_to(ROOT / "framework", target_is_directory=True)
    monkeypatch.setenv("GROWTH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    runs = _documented_example()
    assert [argv[:2] for argv, _ in runs] == [["growth", "seed-demo"], ["growth", "impact"]]
    for argv, paragraphs in runs:
        assert main(argv[1:]) == 0, argv
        printed = _squeeze(capsys.readouterr().out)
        for paragraph in paragraphs:
            assert _squeeze(paragraph) in printed, (paragraph, printed)

    result = json.loads((tmp_path / "impact.json").read_text(encoding="utf-8"))
    assert result["verdict"] == "improved"
    readme = _squeeze((ROOT / "README.md").read_text(encoding="utf-8"))
    numbers = f"{fmt_pp(result['absolute_lift'])}, {result['relative_lift'] * 100:+.0f}% relative"
    assert re.search(re.escape(numbers) + r" on the default demo with data through 2026-11-30", readme), numbers


def test_a_rate_limited_post_is_retried_by_the_task(sources, monkeypatch, slack) -> None:
    """Slack answers 429 to the client's four attempts (1 + 3 retries): the task's first try
    fails on a reason where Slack cannot have posted, its retry (2 s later) posts. One message."""
    from flows.impact import publish_impact_task
    from tests.support.slack_standin import VALID_TOKEN

    assert publish_impact_task.retries == 2 and publish_impact_task.retry_delay_seconds == [2, 10]
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    slack.fail_next(429, {"Retry-After": "0"}, times=4, method="chat.postMessage")
    result = growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=CHANGE, as_of=END,
                           dry_run=False)
    assert result.delivery.status == "posted" and result.delivery.ts
    assert len(slack.calls_to("chat.postMessage")) == 5
    assert len(slack.channel_messages("C0GROWTH")) == 1


def test_a_server_error_is_not_posted_blind_again(sources, monkeypatch, slack) -> None:
    """A 500 on every attempt: Slack may have acted, and the impact post carries no marker to
    search for, so the task does not try again: exit 5 after the client's own 4 attempts."""
    from framework.errors import DeliveryError
    from tests.support.slack_standin import VALID_TOKEN

    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    slack.fail_next(500, times=4, method="chat.postMessage")
    with pytest.raises(DeliveryError) as err:
        growth_impact(framework_path=str(DEMO_FRAMEWORK), step=STEP, change_date=CHANGE, as_of=END, dry_run=False)
    assert err.value.exit_code == 5
    assert len(slack.calls_to("chat.postMessage")) == 4


def test_a_slow_source_times_out_with_exit_4(sources, monkeypatch, tmp_path: Path) -> None:
    from flows.cli import main

    monkeypatch.setenv("GROWTH_EXTRACT_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("GROWTH_FAULT", "extract")
    monkeypatch.setenv("GROWTH_FAULT_SLEEP", "120")
    monkeypatch.setenv("GROWTH_FAULT_UNTIL", str(tmp_path / "never"))
    code = main(["impact", "--framework", str(DEMO_FRAMEWORK), "--step", STEP, "--change-date", CHANGE.isoformat(),
                 "--as-of", END.isoformat(), "--dry-run"])
    assert code == 4

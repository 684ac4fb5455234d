"""Hostile data, whole runs: empty tables, zero rows, timestamps in year 1 and 9999, timezone
offsets, NaN, non-numeric ids, entities whose every step is in the future, and text from the
data that tries to mention @channel or break out of markdown. Each run ends in a clear digest
(exit 0) or a clear data-quality failure (exit 3): never a traceback, a division by zero or a
NaN in the report. Real SQLite sources, real Prefect (the session's harness), real GX, the
real slack_sdk client against the stand-in.

Each case asserts its one exit code and the exact set of checks that failed (errors) and warned,
with their observed text, the numbers derived in a comment from the rows the test inserts. A
``RuntimeWarning`` (numpy's divide by zero, invalid value) is an error in this module."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.cli import main
from tests.support.slack_standin import VALID_TOKEN

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

AS_OF = date(2026, 11, 30)  # current period: signups 2026-10-04 .. 2026-10-31 (window 30 days)

FRAMEWORK = """
name: Hostile Data
sources:
  db: {{url: "sqlite://"}}
entity:
  name: account
  source: db
  table: accounts
  id: id
  created_at: created_at
  attributes: [{attributes}]
funnel: {{min_sample: 5}}
quality: {{freshness_hours: 100000}}
steps:
  - {{key: signup, name: "{signup_name}", entity_created: true}}
  - {{key: acted, name: Acted, source: db, table: events, entity_id: account_id, timestamp: ts, where: {{kind: a}}}}
  - {{key: paid, name: Paid, source: db, table: events, entity_id: account_id, timestamp: ts, where: {{kind: p}}}}
"""


def _normal_rows(n: int = 40, offset: int = 0) -> tuple[list[dict], list[dict]]:
    """n ordinary accounts in the current period; half act, a quarter pay (all within the window)."""
    accounts, events = [], []
    for i in range(n):
        day = 4 + i % 27
        accounts.append({"id": str(offset + i), "created_at": f"2026-10-{day:02d} 09:00:00", "origin": "web"})
        if i % 2 == 0:
            events.append({"account_id": str(offset + i), "ts": f"2026-10-{day:02d} 10:00:00", "kind": "a"})
        if i % 4 == 0:
            events.append({"account_id": str(offset + i), "ts": f"2026-10-{day:02d} 12:00:00", "kind": "p"})
    return accounts, events


def _database(path: Path, accounts: list[dict], events: list[dict], id_type: str = "TEXT") -> str:
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE accounts (id {id_type}, created_at TEXT, origin TEXT)")
        conn.exec_driver_sql(f"CREATE TABLE events (account_id {id_type}, ts TEXT, kind TEXT)")
        if accounts:
            conn.execute(sa.text("INSERT INTO accounts VALUES (:id, :created_at, :origin)"), accounts)
        if events:
            conn.execute(sa.text("INSERT INTO events VALUES (:account_id, :ts, :kind)"), events)
    engine.dispose()
    return url


def _no_nan(value: str) -> None:
    raise AssertionError(f"{value} in the report")


def _run(tmp_path: Path, url: str, capsys, *extra: str, signup_name: str = "Sign up",
         attributes: str = "origin") -> tuple[int, dict, str, str]:
    framework = tmp_path / "growth.yaml"
    framework.write_text(FRAMEWORK.format(signup_name=signup_name, attributes=attributes), encoding="utf-8")
    report_path = tmp_path / "report.json"
    code = main(["run", "--framework", str(framework), "--as-of", AS_OF.isoformat(), "--source", f"db={url}",
                 "--store", f"sqlite:///{tmp_path / 'store.db'}", "--report-json", str(report_path), *extra])
    out, err = capsys.readouterr()
    err = _user_lines(err)
    assert "Traceback" not in err and "ZeroDivisionError" not in err and "division by zero" not in err, err
    report = json.loads(report_path.read_text(), parse_constant=_no_nan) if report_path.exists() else {}
    return code, report, out, err


def _user_lines(err: str) -> str:
    import re

    return re.sub(r"--- Logging error ---\n.*?\nArguments: .*?\n", "", err, flags=re.S)


def _step(report: dict, key: str) -> dict:
    return next(s for s in report["steps"] if s["key"] == key)


def _finite_numbers(node) -> None:
    if isinstance(node, float):
        assert math.isfinite(node)
    elif isinstance(node, dict):
        for v in node.values():
            _finite_numbers(v)
    elif isinstance(node, list):
        for v in node:
            _finite_numbers(v)


def _flagged(report: dict, severity: str) -> dict[str, str]:
    """The checks of ``severity`` that did not pass: name -> observed text."""
    return {c["name"]: c["observed"] for c in report["data_quality"]["checks"]
            if not c["success"] and c["severity"] == severity}


def _assert_quality(code: int, report: dict, out: str, err: str, expected_code: int,
                    failed: dict[str, str], warned: dict[str, str]) -> None:
    """The run's one exit code, and exactly these failed (error) and warned checks: a failure
    names each failed check in the error output, a digest lists each warning."""
    assert code == expected_code, (out, err)
    assert _flagged(report, "error") == failed
    assert _flagged(report, "warn") == warned
    status = "failed" if failed else "warned" if warned else "passed"
    assert report["data_quality"]["status"] == status
    checks = {c["name"]: c for c in report["data_quality"]["checks"]}
    if failed:
        assert "data-quality gate failed; digest not published:" in err
        for name, observed in failed.items():
            assert f"{name} ({checks[name]['target']}): {observed}" in err, err
    else:
        assert "Hostile Data" in out and "data-quality gate failed" not in err
        if warned:
            assert f"Warnings ({len(warned)})" in out, out
        for name in warned:
            assert f"! {name} (warn) — observed: " in out, out


FRESHNESS_NONE = "no records before as_of_end 2026-12-01T00:00Z (limit 100,000 h)"


# ---------------------------------------------------------------- empty and zero


def test_empty_tables_give_a_clear_quality_failure(tmp_path, capsys) -> None:
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", [], []), capsys, "--dry-run")
    # no events at all: both step sources have no newest record (stale, not vacuously fresh), and
    # with 0 signups both steps enter 0 < min_sample 5
    _assert_quality(code, report, out, err, 3,
                    failed={"steps.acted.freshness": FRESHNESS_NONE, "steps.paid.freshness": FRESHNESS_NONE},
                    warned={"metrics.acted.small_sample": "entered 0 < min_sample 5",
                            "metrics.paid.small_sample": "entered 0 < min_sample 5"})
    assert _step(report, "signup")["entered"] == 0 and _step(report, "acted")["conversion"] is None
    _finite_numbers(report)


def test_a_step_source_with_zero_rows_is_a_digest_with_zero_conversion(tmp_path, capsys) -> None:
    accounts, _ = _normal_rows()
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", accounts, []), capsys, "--dry-run")
    # the events table is empty: both step sources are stale (no newest record); acted enters
    # the 40 signups (no small sample), paid enters the 0 that acted
    _assert_quality(code, report, out, err, 3,
                    failed={"steps.acted.freshness": FRESHNESS_NONE, "steps.paid.freshness": FRESHNESS_NONE},
                    warned={"metrics.paid.small_sample": "entered 0 < min_sample 5"})
    assert _step(report, "signup")["reached"] == 40
    assert _step(report, "acted")["reached"] == 0 and _step(report, "acted")["conversion"] == 0.0
    assert _step(report, "paid")["entered"] == 0 and _step(report, "paid")["conversion"] is None  # 0 / 0
    _finite_numbers(report)


# ---------------------------------------------------------------- timestamps


def test_timestamps_in_year_1_and_9999_and_with_offsets(tmp_path, capsys) -> None:
    accounts, events = _normal_rows()
    accounts += [
        {"id": "y1", "created_at": "0001-01-01 00:00:00", "origin": "web"},
        {"id": "y9999", "created_at": "9999-12-31 23:59:59", "origin": "web"},  # after as_of: not read
        {"id": "tz", "created_at": "2026-10-10T23:30:00-05:00", "origin": "web"},  # 2026-10-11 04:30 UTC
        # 2026-11-01 03:00 UTC: after the current period (signups 10-04 .. 10-31); its local
        # date, 10-31, is inside it
        {"id": "tz-late", "created_at": "2026-10-31T22:00:00-05:00", "origin": "web"},
    ]
    events += [
        {"account_id": "0", "ts": "0001-01-01 00:00:00", "kind": "a"},  # before signup: kept, counted once
        {"account_id": "1", "ts": "9999-12-31 23:59:59", "kind": "a"},  # in the future: not reached
        {"account_id": "tz", "ts": "2026-10-11T06:00:00+01:00", "kind": "a"},  # 05:00 UTC, after signup
        {"account_id": "tz", "ts": "2026-10-11T00:00:00Z", "kind": "p"},  # 00:00 UTC: before signup
    ]
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", accounts, events), capsys, "--dry-run")
    # Milestones (one per step and account, records before as_of_end): acted 20 ordinary (even
    # i) + account 0 (its earliest, year 1) + tz = 21 (account 1's only action, in 9999, is not
    # one); paid 10 ordinary (i % 4 == 0) + tz = 11: 32. More than 1 h before the account's
    # creation: account 0's year-1 action, and tz's payment (00:00 UTC, 4.5 h before its 04:30 UTC
    # signup): 2. Offsets ignored, tz's payment (00:00 on the 11th) would be after its signup
    # (23:30 on the 10th): 1 of 32. One account (1) has a record after the run's clock.
    _assert_quality(code, report, out, err, 0, failed={}, warned={
        "milestones.before_creation": "2 of 32 more than 1 h before their account's creation",
        "steps.acted.future_records": "1 accounts with records dated after the run's clock "
                                      "(latest 9999-12-31T23:59Z; not counted, not used for freshness)",
    })
    _finite_numbers(report)
    # 40 ordinary accounts + tz (its signup is 2026-10-11 UTC, in the period); y1, y9999 (after
    # as_of, not read) and tz-late (2026-11-01 in UTC) are not. Offsets ignored, tz-late (10-31
    # local) would be a 42nd.
    assert _step(report, "signup")["reached"] == 41
    # 20 ordinary actors + tz; account 1's only action is in 9999
    assert _step(report, "acted")["reached"] == 21


def test_every_step_in_the_future_is_not_reached(tmp_path, capsys) -> None:
    accounts, events = _normal_rows()
    accounts.append({"id": "later", "created_at": "2026-10-20 09:00:00", "origin": "web"})
    # 2999, not next year: "after the run's clock" is judged against the real clock
    events += [{"account_id": "later", "ts": "2999-01-01 00:00:00", "kind": k} for k in ("a", "p")]
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", accounts, events), capsys, "--dry-run")
    # one account ("later") has both its records in 2999, after the run's clock: a warning per
    # step, never counted
    future = ("1 accounts with records dated after the run's clock (latest 2999-01-01T00:00Z; "
              "not counted, not used for freshness)")
    _assert_quality(code, report, out, err, 0, failed={},
                    warned={"steps.acted.future_records": future, "steps.paid.future_records": future})
    assert _step(report, "signup")["reached"] == 41
    assert _step(report, "acted")["reached"] == 20 and _step(report, "paid")["reached"] == 10
    _finite_numbers(report)


def test_unparsable_timestamps_and_nan_text(tmp_path, capsys) -> None:
    accounts, events = _normal_rows()
    accounts += [{"id": "nan", "created_at": "NaN", "origin": "NaN"},
                 {"id": "junk", "created_at": "not a time", "origin": None}]
    events += [{"account_id": "0", "ts": "NaN", "kind": "a"}, {"account_id": "2", "ts": "yesterday", "kind": "p"}]
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", accounts, events), capsys, "--dry-run")
    # 40 ordinary + 2 accounts ("nan", "junk") whose created_at does not parse: 2 of 42. The
    # events' "NaN" (kind a: acted) and "yesterday" (kind p: paid) are unreadable times: not
    # counted, one warned per step.
    _assert_quality(code, report, out, err, 3,
                    failed={"entities.created_at_not_null": "2 of 42 null or unparseable"}, warned={
                        "steps.acted.timestamp_not_null": "1 records with a NULL or unreadable time (not counted)",
                        "steps.paid.timestamp_not_null": "1 records with a NULL or unreadable time (not counted)",
                    })
    _finite_numbers(report)
    assert _step(report, "signup")["reached"] == 40  # the unparsable signups are in no period


def test_real_nan_values_in_numeric_columns(tmp_path, capsys) -> None:
    """IEEE NaN ids (REAL columns): SQLite keeps them as NULL; the run says so, never crashes."""
    accounts, events = _normal_rows()
    url = _database(tmp_path / "db.sqlite", [], [], id_type="REAL")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = [{**a, "id": float(a["id"])} for a in accounts] + [
            {"id": float("nan"), "created_at": "2026-10-12 09:00:00", "origin": "web"}]
        conn.execute(sa.text("INSERT INTO accounts VALUES (:id, :created_at, :origin)"), rows)
        conn.execute(sa.text("INSERT INTO events VALUES (:account_id, :ts, :kind)"),
                     [{**e, "account_id": float(e["account_id"])} for e in events]
                     + [{"account_id": float("nan"), "ts": "2026-10-12 10:00:00", "kind": "a"}])
    engine.dispose()
    code, report, out, err = _run(tmp_path, url, capsys, "--dry-run")
    # 40 ordinary accounts + 1 with a NaN (NULL) id: 1 of 41. acted's records: 20 ordinary + the
    # NaN account's 1, whose NULL id matches no account (an orphan): 1 of 21 (4.76%), under the
    # orphan error's 99% bound, over the plain 1%
    _assert_quality(code, report, out, err, 3, failed={"entities.id_not_null": "1 of 41 null"}, warned={
        "steps.acted.orphan_ratio_observed": "1 of 21 records orphan (4.76% > max 1%)",
        "steps.acted.entity_id_not_null": "1 of 21 records with a NULL events.account_id "
                                          "(not counted; part of the orphan ratio)",
    })
    _finite_numbers(report)
    assert _step(report, "acted")["reached"] == 20


# ---------------------------------------------------------------- ids


def test_non_numeric_and_mixed_ids(tmp_path, capsys) -> None:
    accounts, events = _normal_rows(offset=0)
    for a in accounts[:10]:
        a["id"] = f"acc-{a['id']}-ünï ✓"
    for e in events:
        if int(e["account_id"]) < 10:
            e["account_id"] = f"acc-{e['account_id']}-ünï ✓"
    events.append({"account_id": "no-such-account", "ts": "2026-10-10 10:00:00", "kind": "a"})  # an orphan
    code, report, out, err = _run(tmp_path, _database(tmp_path / "db.sqlite", accounts, events), capsys, "--dry-run")
    # acted's records: 20 ordinary + 1 orphan = 21; 1 of 21 is 4.76%: over the plain 1% (a
    # warning), not proven over it with 99% confidence (no error)
    _assert_quality(code, report, out, err, 0, failed={}, warned={
        "steps.acted.orphan_ratio_observed": "1 of 21 records orphan (4.76% > max 1%)"})
    assert _step(report, "signup")["reached"] == 40
    assert _step(report, "acted")["reached"] == 20 and _step(report, "paid")["reached"] == 10
    _finite_numbers(report)


# ---------------------------------------------------------------- text from the data


HOSTILE_ORIGIN = "<!channel> *bold* `tick` [x](http://evil.example) & <@U123>"
HOSTILE_NAME = "Sign up <!here> ```\\n# injected"


def _artifacts(store: Path) -> dict:
    """The artifacts of the one flow run recorded in ``store``, by kind (digest, chart, funnel, quality)."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    engine = sa.create_engine(f"sqlite:///{store}")
    with engine.connect() as conn:
        (run_id,) = conn.execute(sa.text("SELECT flow_run_id FROM gf_runs")).scalars()
    engine.dispose()

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))

    keyed = [a for a in asyncio.run(read()) if a.key]
    return {("quality" if a.key.endswith("data-quality") else a.key.rsplit("-", 1)[-1]): a for a in keyed}


def _hostile_run(tmp_path: Path, capsys, slack, monkeypatch, attributes: str) -> tuple[int, dict, dict]:
    accounts, events = _normal_rows()
    for a in accounts[::2]:
        a["origin"] = HOSTILE_ORIGIN
    monkeypatch.setenv("SLACK_BOT_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    tmp_path.mkdir()
    url = _database(tmp_path / "db.sqlite", accounts, events)
    code, report, out, err = _run(tmp_path, url, capsys, "--channel", "#growth", signup_name=HOSTILE_NAME,
                                  attributes=attributes)
    post = slack.calls_to("chat.postMessage")[-1]
    return code, report, post.body


def _no_raw_mentions(body: dict) -> str:
    sent = json.dumps(body, ensure_ascii=False)
    for raw in ("<!channel>", "<!here>", "<@U123>"):
        assert raw not in sent, raw
    return sent


def test_segment_values_from_the_data_are_escaped_in_the_slack_alert_and_the_quality_artifact(
    tmp_path, capsys, slack, monkeypatch
) -> None:
    code, report, body = _hostile_run(tmp_path / "alert", capsys, slack, monkeypatch,
                                      "{name: origin, allowed: [web]}")
    assert code == 3  # the unexpected origin values fail the gate: the alert is posted
    flagged = [c for c in report["data_quality"]["checks"] if not c["success"]]
    assert any(HOSTILE_ORIGIN in c["observed"] for c in flagged), flagged
    sent = _no_raw_mentions(body)
    assert "&lt;!channel&gt; *bold*" in sent  # in the notification text and the blocks, escaped
    quality = _artifacts(tmp_path / "alert" / "store.db")["quality"].data
    assert "&lt;!channel&gt; \\*bold\\* \\`tick\\` \\[x\\](http://evil.example)" in quality, quality
    assert "<!channel>" not in quality and "<@U123>" not in quality


def test_step_names_are_escaped_in_the_slack_digest_and_cannot_break_the_digest_artifact(
    tmp_path, capsys, slack, monkeypatch
) -> None:
    code, report, body = _hostile_run(tmp_path / "digest", capsys, slack, monkeypatch, "origin")
    assert code == 0 and report["delivery"]["status"] == "posted"
    assert any(s["value"] == HOSTILE_ORIGIN for s in report["segments"])  # the data reached the report
    sent = _no_raw_mentions(body)
    assert "&lt;!here&gt;" in sent  # the step name, escaped
    lines = _artifacts(tmp_path / "digest" / "store.db")["digest"].data.splitlines()
    fence = lines[0]
    assert set(fence) == {"`"} and len(fence) >= 3
    body_lines = lines[1:lines.index(fence, 1)]
    assert any("Sign up" in line for line in body_lines)  # the hostile step name is inside the block
    assert not any(fence in line for line in body_lines)  # and its ``` cannot close it

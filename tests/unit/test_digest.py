"""The digest renderers: numbers match the report, order, sections, Slack limits, escaping."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from framework import digest
from framework.digest import (
    escape_mrkdwn,
    fallback_text,
    fmt_duration,
    fmt_pct,
    render_blocks,
    render_quality_alert_blocks,
    render_quality_alert_text,
    render_text,
)
from framework.report import (
    DataQuality,
    Delivery,
    FunnelResult,
    Period,
    QualityCheck,
    Report,
    StepResult,
)

UI_URL = "http://127.0.0.1:4200/runs/flow-run/0b7c7f0e"


def _steps() -> list[StepResult]:
    return [
        StepResult(
            key="account_created",
            name="Create an account",
            position=1,
            tracked=True,
            qualifying=False,
            entered=1234,
            reached=1234,
            conversion=1.0,
            overall_conversion=1.0,
            lost=0,
        ),
        StepResult(
            key="workspace_created",
            name="Create a workspace",
            position=2,
            tracked=True,
            qualifying=False,
            entered=1234,
            reached=900,
            conversion=0.729335,
            overall_conversion=0.729335,
            lost=334,
            median_hours=0.7,
            p90_hours=20.1,
            previous_conversion=0.71,
            delta_pp=1.9335,
            p_value=0.21,
            target=0.8,
            opportunity=12.5,
        ),
        StepResult(
            key="read_quickstart",
            name="Read the quickstart",
            position=3,
            tracked=False,
            qualifying=False,
        ),
        StepResult(
            key="first_flow_run",
            name="Run a flow",
            position=4,
            tracked=True,
            qualifying=False,
            entered=900,
            reached=540,
            conversion=0.6,
            overall_conversion=0.437601,
            lost=360,
            median_hours=5.3,
            p90_hours=40.0,
            previous_conversion=0.6,
            delta_pp=0.0,
            p_value=1.0,
            target=0.65,
            opportunity=5.2,
        ),
        StepResult(
            key="first_deployment",
            name="Deploy a flow",
            position=5,
            tracked=True,
            qualifying=False,
            entered=540,
            reached=206,
            conversion=0.381481,
            overall_conversion=0.166937,
            lost=334,
            median_hours=74.4,
            p90_hours=300.0,
            previous_conversion=0.45,
            delta_pp=-6.8519,
            p_value=0.0004,
            target=0.5,
            opportunity=41.2,
        ),
        StepResult(
            key="invited_teammate",
            name="Invite a teammate",
            position=6,
            tracked=True,
            qualifying=True,
            entered=206,
            reached=25,
            conversion=0.121359,
            overall_conversion=0.020259,
            lost=181,
            median_hours=30.0,
            p90_hours=90.0,
            previous_conversion=0.1,
            delta_pp=2.1359,
            p_value=0.4,
            target=0.25,
            opportunity=None,
        ),
        StepResult(
            key="paid",
            name="Pay for Prefect Cloud",
            position=7,
            tracked=True,
            qualifying=False,
            entered=25,
            reached=12,
            conversion=0.48,
            overall_conversion=0.009724,
            lost=13,
            median_hours=100.0,
            p90_hours=200.0,
            previous_conversion=0.4,
            delta_pp=8.0,
            p_value=0.5,
            target=0.5,
            opportunity=0.5,
        ),
    ]


def make_report(
    steps: list[StepResult] | None = None,
    lowest: list[str] | None = None,
    checks: list[QualityCheck] | None = None,
    delivery: Delivery | None = None,
    framework: str = "Prefect Growth Framework",
) -> Report:
    steps = _steps() if steps is None else steps
    if lowest is None:
        lowest = ["first_deployment", "first_flow_run", "workspace_created"]
    if checks is None:
        checks = [
            QualityCheck("accounts: created_at fresh", "<= 36 h old", "error", True, "3.2 h"),
            QualityCheck("workspaces: orphan ratio", "<= 1%", "warn", False, "2.5% (31 of 1,240)"),
        ]
    result = FunnelResult(
        as_of="2026-11-30",
        mode="independent",
        window_days=30,
        entity="account",
        current_period=Period("2026-10-03", "2026-10-31", 1234),
        previous_period=Period("2026-09-05", "2026-10-03", 1100),
        steps=steps,
        cohorts=[],
        segments=[],
        ranking=list(lowest),
        lowest_converting=list(lowest),
        qualifying=[s.key for s in steps if s.qualifying],
        untracked=[
            {"key": s.key, "proposed_metric": "quickstart page views per new account"}
            for s in steps
            if not s.tracked
        ],
    )
    return Report(
        framework=framework,
        result=result,
        data_quality=DataQuality.from_checks(checks),
        delivery=delivery or Delivery(channel="#growth", status="dry_run"),
    )


def failed_report() -> Report:
    return make_report(
        checks=[
            QualityCheck("accounts: created_at fresh", "<= 36 h old", "error", False, "52.0 h old"),
            QualityCheck("workspaces: orphan ratio", "<= 1%", "warn", False, "2.5%"),
        ],
        delivery=Delivery(channel="#growth", status="skipped"),
    )


def many_steps_report(n: int = 60, name_len: int = 5000) -> Report:
    steps = [
        StepResult("s1", "Sign up " + "x" * name_len, 1, True, False, 10_000, 10_000, 1.0, 1.0, 0)
    ]
    for i in range(2, n + 1):
        if i % 10 == 0:
            steps.append(StepResult(f"s{i}", f"Untracked {i} " + "u" * name_len, i, False, False))
            continue
        steps.append(
            StepResult(
                key=f"s{i}",
                name=f"Step {i} <!channel> " + "n" * name_len,
                position=i,
                tracked=True,
                qualifying=i % 7 == 0,
                entered=5000,
                reached=4000 - i,
                conversion=(4000 - i) / 5000,
                overall_conversion=0.1,
                lost=1000 + i,
                median_hours=2.0,
                previous_conversion=0.8,
                delta_pp=-0.02 * i,
                p_value=0.01,
                target=0.9,
                opportunity=100.0 + i,
            )
        )
    lowest = [s.key for s in steps if s.tracked and not s.qualifying and s.position > 1]
    lowest.sort(key=lambda k: next(s.conversion for s in steps if s.key == k))
    checks = [
        QualityCheck(f"check {i} " + "c" * 1000, "t" * 1000, "warn", False, "o" * 1000)
        for i in range(40)
    ]
    return make_report(steps=steps, lowest=lowest, checks=checks, framework="F" * 400)


# --------------------------------------------------------------------------- helpers


def test_formatting_helpers() -> None:
    assert fmt_pct(0.382) == "38.2%"
    assert fmt_pct(None) == "—"
    assert fmt_pct(1.125) == "112.5%"
    assert fmt_duration(0.7) == "42 min"
    assert fmt_duration(5.3) == "5.3 h"
    assert fmt_duration(74.4) == "3.1 d"
    assert fmt_duration(None) == "—"
    assert digest.fmt_count(1234567) == "1,234,567"
    assert digest.fmt_delta_pp(-0.04) == "0.0"
    assert digest.fmt_delta_pp(4.0) == "+4.0"


def test_escape_mrkdwn() -> None:
    assert escape_mrkdwn("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_imports_only_stdlib_and_framework() -> None:
    tree = ast.parse(Path(digest.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules <= {"__future__", "datetime", "typing", "framework"}


# --------------------------------------------------------------------------- text


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n\n", start)
    return text[start : end if end != -1 else len(text)]


def test_text_header_and_periods() -> None:
    text = render_text(make_report())
    assert text.startswith("Prefect Growth Framework — growth digest for 2026-11-30")
    assert "Mode: independent · window: 30 days" in text
    assert "Current period: signups 2026-10-03 to 2026-10-30, 1,234 accounts" in text
    assert "Previous period: signups 2026-09-05 to 2026-10-02, 1,100 accounts" in text
    assert "DATA QUALITY FAILED" not in text


def test_text_lowest_converting_numbers_and_order() -> None:
    report = make_report()
    text = render_text(report)
    lowest = _section(text, "Lowest-converting steps")
    positions = [
        lowest.index(f". Step {report.step(k).position} · {report.step(k).name}")
        for k in report.result.lowest_converting
    ]
    assert positions == sorted(positions)
    assert "1. Step 5 · Deploy a flow — 38.1%" in lowest
    assert "▼ 6.9 pp vs previous period (significant, p < 0.001)" in lowest
    assert "540 → 206 accounts, 334 lost · median time to convert 3.1 d" in lowest
    assert "+41 accounts reach Pay for Prefect Cloud if this step hit 50.0%" in lowest
    assert "2. Step 4 · Run a flow — 60.0%" in lowest
    assert "▶ 0.0 pp vs previous period (not significant, p = 1.000)" in lowest
    assert "+5 accounts reach Pay for Prefect Cloud if this step hit 65.0%" in lowest
    assert "3. Step 2 · Create a workspace — 72.9%" in lowest
    assert "▲ 1.9 pp vs previous period (not significant, p = 0.210)" in lowest
    assert "1,234 → 900 accounts, 334 lost · median time to convert 42 min" in lowest
    # qualifying and unranked steps are not in the ranking section
    assert "Invite a teammate" not in lowest
    assert "Pay for Prefect Cloud —" not in lowest


def test_text_every_number_of_whole_funnel_matches_report() -> None:
    report = make_report()
    table = _section(render_text(report), "The whole funnel")
    lines = {
        int(m.group(1)): line
        for line in table.splitlines()[2:]
        if (m := re.match(r"\s+(\d+) ", line))
    }
    assert sorted(lines) == [s.position for s in report.result.steps]
    for s in report.result.steps:
        line = lines[s.position]
        assert s.name in line
        if not s.tracked:
            assert "untracked — proposed metric: quickstart page views per new account" in line
            continue
        cells = line.split(s.name + (" (qualifying)" if s.qualifying else ""), 1)[1].split()
        assert cells[0] == f"{s.entered:,}"
        assert cells[1] == f"{s.reached:,}"
        assert cells[2] == f"{100 * s.conversion:.1f}%"
        assert cells[3] == f"{100 * s.overall_conversion:.1f}%"
        assert cells[4] == ("—" if s.delta_pp is None else digest.fmt_delta_pp(s.delta_pp))
    assert "(qualifying)" in lines[6]
    assert "◀ lowest #1" in lines[5]
    # aligned: every tracked row's columns end at the same offset
    ends = {len(lines[s.position].split("◀")[0].rstrip()) for s in report.result.steps if s.tracked}
    assert len(ends) == 1


def test_text_qualifying_untracked_quality_delivery() -> None:
    text = render_text(make_report(), ui_url=UI_URL)
    qualifying = _section(text, "Qualifying steps (intentional cliffs)")
    assert "Step 6 · Invite a teammate — 12.1% · 206 → 25 accounts, 181 lost" in qualifying
    untracked = _section(text, "Untracked steps")
    assert "Step 3 · Read the quickstart — proposed metric: quickstart page views" in untracked
    assert "Data quality: warned (1 of 2 checks failed)" in text
    # the warnings section: its heading, then each warned check
    warnings = text.split("  Warnings (1): the numbers stand; read them with these\n", 1)[1]
    assert warnings.startswith("  ! workspaces: orphan ratio (warn)")
    assert "! workspaces: orphan ratio (warn) — observed: 2.5% (31 of 1,240); target: <= 1%" in text
    assert "Delivery: dry run — not posted to #growth" in text
    assert f"Flow run: {UI_URL}" in text
    assert "Flow run:" not in render_text(make_report())


def test_text_failed_quality_banner_leads() -> None:
    text = render_text(failed_report())
    assert text.startswith("DATA QUALITY FAILED — digest not published")
    banner = text.split("\n\n", 1)[0]
    assert "accounts: created_at fresh (error) — observed: 52.0 h old" in banner
    assert "Delivery: skipped" in text


def test_text_no_rankable_step() -> None:
    text = render_text(make_report(lowest=[]))
    assert "No step qualifies for ranking" in _section(text, "Lowest-converting steps")
    assert "below the minimum sample" in text
    assert "no step qualifies for ranking" in fallback_text(make_report(lowest=[]))


def test_text_opportunity_edge_cases() -> None:
    steps = _steps()
    steps[4] = replace(steps[4], target=0.3, opportunity=0.0)  # already above target
    steps[3] = replace(steps[3], target=None, opportunity=None)
    text = render_text(make_report(steps=steps))
    assert "already at or above its 30.0% target" in text
    assert "opportunity: no target" in text


def test_text_is_deterministic() -> None:
    assert render_text(make_report(), UI_URL) == render_text(make_report(), UI_URL)
    assert render_blocks(make_report(), UI_URL) == render_blocks(make_report(), UI_URL)


# --------------------------------------------------------------------------- blocks


def _texts(blocks: list[dict]) -> list[str]:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        for e in b.get("elements", []):
            if "text" in e and isinstance(e["text"], str):
                out.append(e["text"])
    return out


def assert_valid_blocks(blocks: list[dict]) -> None:
    assert json.loads(json.dumps(blocks)) == blocks
    assert 0 < len(blocks) <= 50
    for b in blocks:
        assert b["type"] in {"header", "context", "section", "divider", "actions"}
        if b["type"] == "header":
            assert b["text"]["type"] == "plain_text"
            assert 0 < len(b["text"]["text"]) <= 150
        if b["type"] == "section":
            assert b["text"]["type"] == "mrkdwn"
            assert 0 < len(b["text"]["text"]) <= 3000
            assert b["text"]["text"].count("```") % 2 == 0
        if b["type"] == "context":
            assert 0 < len(b["elements"]) <= 10
            assert all(len(e["text"]) <= 3000 for e in b["elements"])
        if b["type"] == "actions":
            for e in b["elements"]:
                assert len(e["text"]["text"]) <= 75
                assert len(e["url"]) <= 3000


def test_blocks_structure_and_numbers() -> None:
    report = make_report()
    blocks = render_blocks(report, ui_url=UI_URL)
    assert_valid_blocks(blocks)
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "Prefect Growth Framework · growth digest 2026-11-30"
    assert blocks[1]["type"] == "context"
    assert "signups 2026-10-03 to 2026-10-30, 1,234 accounts" in blocks[1]["elements"][0]["text"]
    texts = _texts(blocks)
    joined = "\n".join(texts)
    step_sections = [t for t in texts if re.match(r"\*\d\. Step", t)]
    assert [t.split(" · ")[1].split(" — ")[0] for t in step_sections] == [
        "Deploy a flow",
        "Run a flow",
        "Create a workspace",
    ]
    assert "38.1%" in step_sections[0]
    assert "+41 accounts reach Pay for Prefect Cloud if this step hit 50.0%" in step_sections[0]
    assert "(significant, p &lt; 0.001)" in step_sections[0]
    funnel = next(t for t in texts if t.startswith("*The whole funnel*"))
    assert "```" in funnel
    for s in report.result.steps:
        assert s.name in funnel
    assert "Read the quickstart" in funnel and "untracked" in funnel
    assert "Invite a teammate (q)" in funnel
    assert "Deploy a flow ◀1" in funnel
    assert "*Qualifying steps (intentional cliffs)*" in joined
    assert "*Untracked steps*" in joined
    assert "proposed metric: quickstart page views per new account" in joined
    assert "Data quality: warned (1 of 2 checks failed)" in joined
    assert "*Warnings (1)*: the numbers stand; read them with these\n• ! " in joined
    assert "observed: 2.5% (31 of 1,240); target: &lt;= 1%" in joined


def test_blocks_button_only_with_ui_url() -> None:
    with_url = render_blocks(make_report(), ui_url=UI_URL)
    actions = [b for b in with_url if b["type"] == "actions"]
    assert len(actions) == 1
    assert actions[0]["elements"][0]["url"] == UI_URL
    without = render_blocks(make_report())
    assert not [b for b in without if b["type"] == "actions"]
    assert_valid_blocks(without)


def test_blocks_mention_injection_escaped() -> None:
    steps = _steps()
    steps[4] = replace(steps[4], name="Deploy <!channel> & <@U123|x>")
    steps[2] = replace(steps[2], name="Quickstart <!here>")
    report = make_report(
        steps=steps,
        framework="Acme <!everyone>",
        checks=[QualityCheck("<!channel> check", "<x>", "warn", False, "<!subteam^S1>")],
    )
    for blocks in (render_blocks(report, UI_URL), render_quality_alert_blocks(report, UI_URL)):
        assert_valid_blocks(blocks)
        for b in blocks:
            if b["type"] == "header":
                continue  # plain_text: Slack does not parse mentions there
            for t in _texts([b]):
                assert "<!" not in t and "<@" not in t
    joined = "\n".join(_texts(render_blocks(report)))
    assert "Deploy &lt;!channel&gt; &amp; &lt;@U123|x&gt;" in joined
    assert "<!" not in fallback_text(report)
    assert "&lt;!channel&gt;" in fallback_text(report)


def test_blocks_within_limits_with_60_long_steps() -> None:
    report = many_steps_report()
    for ui_url in (None, UI_URL):
        blocks = render_blocks(report, ui_url)
        assert_valid_blocks(blocks)
        texts = _texts(blocks)
        assert any("more step" in t for t in texts)  # graceful truncation, not rejection
        assert "<!" not in "".join(t for b in blocks if b["type"] != "header" for t in _texts([b]))
        # the tail survives: funnel, data quality and (with a URL) the button
        assert any(t.startswith("*The whole funnel*") for t in texts)
        assert any("Data quality: warned" in t for t in texts)
        assert any(b["type"] == "actions" for b in blocks) == (ui_url is not None)
    alert = render_quality_alert_blocks(report, UI_URL)
    assert_valid_blocks(alert)
    text = render_text(report)
    assert "Lowest-converting steps" in text


def test_blocks_with_many_ranked_steps_cap_at_50() -> None:
    report = many_steps_report(n=200, name_len=10)
    assert len(report.result.lowest_converting) > 50
    blocks = render_blocks(report, UI_URL)
    assert_valid_blocks(blocks)
    assert len(blocks) == 50
    assert any(re.match(r"… and \d+ more steps", t) for t in _texts(blocks))
    assert blocks[-1]["type"] == "actions"


def test_blocks_failed_quality_banner() -> None:
    blocks = render_blocks(failed_report())
    assert_valid_blocks(blocks)
    assert "DATA QUALITY FAILED — digest not published" in blocks[2]["text"]["text"]


def test_fallback_text() -> None:
    text = fallback_text(make_report())
    assert text == (
        "Growth digest 2026-11-30: lowest converting Deploy a flow 38.1%, Run a flow 60.0%, "
        "Create a workspace 72.9% (data quality warned: 1 check failed)"
    )
    assert "\n" not in text
    passed = make_report(checks=[])
    assert fallback_text(passed).endswith("Create a workspace 72.9%")
    failed = fallback_text(failed_report())
    assert failed == (
        "Growth digest 2026-11-30 not published: data quality failed (accounts: created_at fresh)"
    )


# --------------------------------------------------------------------------- quality alert


def test_quality_alert() -> None:
    report = failed_report()
    text = render_quality_alert_text(report, ui_url=UI_URL)
    assert text.startswith("DATA QUALITY FAILED — digest not published")
    assert "accounts: created_at fresh (error) — observed: 52.0 h old; target: <= 36 h old" in text
    assert "workspaces: orphan ratio (warn) — observed: 2.5%" in text
    assert f"Flow run: {UI_URL}" in text
    blocks = render_quality_alert_blocks(report, ui_url=UI_URL)
    assert_valid_blocks(blocks)
    joined = "\n".join(_texts(blocks))
    assert "Data quality failed" in blocks[0]["text"]["text"]
    assert "2026-11-30" in blocks[0]["text"]["text"]
    assert "observed: 52.0 h old; target: &lt;= 36 h old" in joined
    assert any(b["type"] == "actions" for b in blocks)
    assert not any(b["type"] == "actions" for b in render_quality_alert_blocks(report))


@pytest.mark.parametrize(
    "hours,expected",
    [(0.001, "<1 min"), (23.96, "1.0 d"), (0.999, "1.0 h"), (0.991, "59 min"), (24, "1.0 d")],
)
def test_duration_boundaries(hours: float, expected: str) -> None:
    assert fmt_duration(hours) == expected


# ---------------------------------------------------------------- data-quality artifact


def test_quality_markdown_lists_flagged_checks_and_links_the_data_docs() -> None:
    report = make_report(checks=[
        QualityCheck("entities.id_unique", "entities.id", "error", False, "2 duplicate ids"),
        QualityCheck("entities.origin.allowed", "entities.origin", "error", False, "unknown: <!channel>, a|b"),
        QualityCheck("steps.paid.freshness", "paid", "error", True, "3.2 h"),
    ])
    md = digest.render_quality_markdown(report, "file:///srv/docs/index.html")
    lines = md.splitlines()
    assert lines[0] == "**Data quality: failed** (3 checks)"
    rows = [line for line in lines if line.startswith("| entities.")]
    assert len(rows) == 2  # the passed check is not listed
    # text from the data cannot break the table or mention anyone
    assert rows[1] == "| entities.origin.allowed | error | entities.origin | unknown: &lt;!channel&gt;, a\\|b |"
    assert "<!channel>" not in md
    assert lines[-1] == "Great Expectations Data Docs: <file:///srv/docs/index.html>"


def test_quality_markdown_when_every_check_passed() -> None:
    report = make_report(checks=[QualityCheck("steps.paid.freshness", "paid", "error", True, "3.2 h")])
    md = digest.render_quality_markdown(report)
    assert md.splitlines() == ["**Data quality: passed** (1 check)", "", "Every check passed."]


def test_a_stored_report_comes_back_as_the_same_report() -> None:
    """growth deliver re-renders a stored report: the round trip through the stored dict
    (Report.to_dict -> JSON -> report_from_dict) must give back every number the digest shows."""
    from framework.report import report_from_dict

    for report in (make_report(), failed_report()):
        stored = json.loads(report.to_json())
        again = report_from_dict(stored)
        assert again.to_dict() == report.to_dict()
        assert render_text(again, UI_URL) == render_text(report, UI_URL)
        assert render_blocks(again, UI_URL) == render_blocks(report, UI_URL)

"""Impact analysis (framework/impact.py): known answers for the statistics, the cohort
selection, the verdict rules, the guards and the renderings.

Where each number comes from:

* Wilson intervals: Newcombe R.G., "Two-sided confidence intervals for the single
  proportion: comparison of seven methods", Stat Med 1998;17:857-872, Table I, score
  method (81/263, 15/148, 0/20, 1/29, 29/29).
* Newcombe intervals for a difference: Newcombe R.G., "Interval estimation for the
  difference between independent proportions: comparison of eleven methods", Stat Med
  1998;17:873-890, Table II, method 10, examples (a)-(h).
* z-test p-values: by hand, p = erfc(|z| / sqrt 2) with the pooled standard error, e.g.
  50/100 vs 40/100: pooled 0.45, se = sqrt(0.45 * 0.55 * 2/100) = 0.0703562,
  z = 0.1 / se = 1.42134, p = 0.155218.
* Cohort dates: the calendar (a cohort is mature when period_end + 30 days <= as_of + 1 day).
"""

from __future__ import annotations

import json
import math
from datetime import date

import pandas as pd
import pytest

from framework.config import load_config
from framework.errors import UsageError
from framework.impact import (
    Comparison,
    analyze,
    check_request,
    compare,
    impact_config,
    newcombe_interval,
    render_markdown,
    render_slack_blocks,
    render_slack_text,
    render_text,
    select_cohorts,
    verdict_of,
    wilson_interval,
)
from framework.report import CohortRow
from framework.stats import two_proportion_p_value
from tests.conftest import DEMO_FRAMEWORK

CFG = load_config(DEMO_FRAMEWORK)  # monthly cohorts, 30-day window, min_sample 30
STEP = "first_deployment"  # entered = reached first_flow_run


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
     (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0)],
)
def test_wilson_interval_matches_newcombe_table_i(x: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("counts", "low", "high"),
    [
        ((56, 70, 48, 80), 0.0524, 0.3339),  # (a)
        ((9, 10, 3, 10), 0.1705, 0.8090),  # (b)
        ((6, 7, 2, 7), 0.0582, 0.8062),  # (c)
        ((5, 56, 0, 29), -0.0381, 0.1926),  # (d)
        ((0, 10, 0, 20), -0.1611, 0.2775),  # (e)
        ((0, 10, 0, 10), -0.2775, 0.2775),  # (f)
        ((10, 10, 0, 20), 0.6791, 1.0),  # (g)
        ((10, 10, 0, 10), 0.6075, 1.0),  # (h)
    ],
)
def test_newcombe_interval_matches_newcombe_table_ii(counts, low: float, high: float) -> None:
    assert newcombe_interval(*counts) == pytest.approx((low, high), abs=5e-5)


def test_compare_by_hand() -> None:
    # before 40/100, after 50/100: +0.10 absolute, +25% relative, p = 0.155218 (module docstring)
    c = compare(40, 100, 50, 100)
    assert c.absolute_lift == pytest.approx(0.10)
    assert c.relative_lift == pytest.approx(0.25)
    assert c.p_value == pytest.approx(math.erfc(0.1 / math.sqrt(0.45 * 0.55 * 0.02) / math.sqrt(2)))
    assert c.p_value == pytest.approx(0.155218, abs=1e-6)
    assert (c.ci_low, c.ci_high) == pytest.approx(newcombe_interval(50, 100, 40, 100))
    assert c.ci_low < 0 < c.ci_high and verdict_of(c) == "no_change"
    # three times the sample, same rates: se = sqrt(0.45 * 0.55 * 2/300) = 0.0406202, z = 2.46183
    big = compare(120, 300, 150, 300)
    assert big.p_value == pytest.approx(0.013823, abs=1e-6)
    assert big.ci_low > 0 and verdict_of(big) == "improved"
    # and the other way round: worse, with the interval mirrored
    down = compare(150, 300, 120, 300)
    assert down.absolute_lift == pytest.approx(-0.10) and down.relative_lift == pytest.approx(-0.2)
    assert (down.ci_low, down.ci_high) == pytest.approx((-big.ci_high, -big.ci_low))
    assert verdict_of(down) == "worse"


def test_compare_refuses_what_is_not_a_proportion() -> None:
    assert compare(0, 0, 5, 10) == Comparison()  # nobody entered before
    assert compare(12, 10, 5, 10) == Comparison()  # 'conversion' above 100% (independent mode)
    same = compare(0, 50, 0, 60)  # both 0%: the pooled variance is 0, p undefined
    assert same.absolute_lift == 0 and same.relative_lift is None and same.p_value is None
    assert verdict_of(same) == "no_change"


@pytest.mark.parametrize(
    ("p", "low", "high", "verdict"),
    [
        (0.01, 0.02, 0.10, "improved"),
        (0.01, -0.10, -0.02, "worse"),
        (0.04, -0.001, 0.08, "no_change"),  # the test rejects, the interval touches 0: no claim
        (0.06, 0.001, 0.08, "no_change"),  # the interval excludes 0, the test does not reject
        (0.05, 0.01, 0.08, "no_change"),  # p must be below alpha, not equal
        (None, None, None, "no_change"),
    ],
)
def test_verdict_needs_the_test_and_the_interval_to_agree(p, low, high, verdict) -> None:
    assert verdict_of(Comparison(0.05, 0.1, low, high, p)) == verdict


# --------------------------------------------------------------------------- cohorts


def test_monthly_selection_excludes_the_straddling_month() -> None:
    s = select_cohorts("month", 30, date(2026, 7, 3), date(2026, 11, 30), 3, 3)
    assert [c.label for c in s.before] == ["2026-04", "2026-05", "2026-06"]
    assert [c.label for c in s.after] == ["2026-08", "2026-09", "2026-10"]
    assert s.straddling.label == "2026-07" and not s.pending and not s.too_early
    # October ends 2026-11-01; + 30 days = 2026-12-01 = as_of_end: just mature
    assert s.after[-1].matures_on(30) == date(2026, 11, 30)
    assert s.history_cohorts == 8  # 2026-04 .. 2026-11 (the month holding as_of)


def test_a_change_on_the_first_day_of_a_period_straddles_nothing() -> None:
    s = select_cohorts("month", 30, date(2026, 7, 1), date(2026, 11, 30), 2, 3)
    assert s.straddling is None
    assert [c.label for c in s.before] == ["2026-05", "2026-06"]
    assert [c.label for c in s.after] == ["2026-07", "2026-08", "2026-09"]


def test_weekly_selection() -> None:
    # 2026-07-01 is a Wednesday of ISO week 2026-W27 (Monday 2026-06-29)
    s = select_cohorts("week", 30, date(2026, 7, 1), date(2026, 11, 30), 2, 2)
    assert s.straddling.label == "2026-W27" and s.straddling.start == date(2026, 6, 29)
    assert [c.label for c in s.before] == ["2026-W25", "2026-W26"]
    assert [c.label for c in s.after] == ["2026-W28", "2026-W29"]


def test_too_early_says_when_it_will_be_ready() -> None:
    # as_of 2026-11-29: October (ends 11-01) needs as_of >= 11-30
    s = select_cohorts("month", 30, date(2026, 7, 3), date(2026, 11, 29), 3, 3)
    assert [c.label for c in s.after] == ["2026-08", "2026-09"]
    assert [c.label for c in s.pending] == ["2026-10"]
    assert s.too_early and s.ready_on == date(2026, 11, 30)


def test_a_recent_change_passes_over_immature_before_cohorts() -> None:
    # as_of 2026-11-20: October is not mature (needs as_of >= 2026-11-30), the latest mature is September
    s = select_cohorts("month", 30, date(2026, 11, 10), date(2026, 11, 20), 3, 3)
    assert [c.label for c in s.skipped_before] == ["2026-10"]
    assert [c.label for c in s.before] == ["2026-07", "2026-08", "2026-09"]
    assert s.after == () and [c.label for c in s.pending] == ["2026-12", "2027-01", "2027-02"]
    assert s.ready_on == date(2027, 3, 30)  # February ends 03-01, + 30 days - 1


# --------------------------------------------------------------------------- guards


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": "first_deploy"}, "unknown step 'first_deploy'"),
        ({"step": "read_quickstart"}, "step 'read_quickstart' is untracked"),
        ({"step": "account_created"}, "its conversion is 100% by definition"),
        ({"change_date": date(2026, 12, 1)}, "the change date 2026-12-01 is after as_of 2026-11-30"),
        ({"segment": "plan"}, "unknown segment attribute 'plan' (attributes: origin, region)"),
        ({"after_cohorts": 0}, "after_cohorts must be between 1 and 24"),
        ({"before_cohorts": 25}, "before_cohorts must be between 1 and 24"),
    ],
)
def test_guards(kwargs: dict, message: str) -> None:
    args = {"step": STEP, "change_date": date(2026, 7, 3), "as_of": date(2026, 11, 30)} | kwargs
    with pytest.raises(UsageError) as err:
        check_request(CFG, **args)
    assert message in str(err.value) and err.value.exit_code == 2


def test_as_of_must_be_a_past_day_and_the_change_not_after_today() -> None:
    today = date(2026, 12, 4)
    args = {"cfg": CFG, "step": STEP, "change_date": date(2026, 7, 3)}
    for as_of in (today, date(2026, 12, 20)):
        with pytest.raises(UsageError) as err:
            check_request(**args, as_of=as_of, today=today)
        assert str(err.value) == (f"impact: as_of {as_of} is not a past day (today is 2026-12-04, UTC): "
                                  "its data is not complete yet; the latest as_of is yesterday, 2026-12-03")
        assert err.value.exit_code == 2
    assert check_request(**args, as_of=date(2026, 12, 3), today=today).as_of == date(2026, 12, 3)
    with pytest.raises(UsageError, match="the change date 2026-12-10 is in the future .today is 2026-12-04"):
        check_request(CFG, STEP, date(2026, 12, 10), date(2026, 12, 3), today=today)
    with pytest.raises(UsageError, match="the change date 2026-12-03 is after as_of 2026-11-30"):
        check_request(CFG, STEP, date(2026, 12, 3), date(2026, 11, 30), today=today)


def test_impact_config_keeps_the_steps_up_to_the_one_measured() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30))
    cfg = impact_config(CFG, STEP, sel)
    assert [s.key for s in cfg.steps][-1] == STEP
    assert [s.key for s in cfg.tracked_steps] == ["account_created", "workspace_created", "first_flow_run", STEP]
    assert cfg.funnel.history_cohorts == 8


# --------------------------------------------------------------------------- analysis


def _rows(counts: dict[str, tuple[int, int]], segment: str | None = None, value: str | None = None,
           step: str = STEP) -> list[CohortRow]:
    return [CohortRow(label, segment, value, True, step, e, r, r / e if e else None)
            for label, (e, r) in counts.items()]


BEFORE = {"2026-04": (100, 40), "2026-05": (100, 40), "2026-06": (100, 40)}
STRADDLE = {"2026-07": (100, 45)}
AFTER = {"2026-08": (100, 50), "2026-09": (100, 50), "2026-10": (100, 50)}


def test_pooled_comparison_by_hand() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30))
    r = analyze(CFG, STEP, sel, _rows(BEFORE | STRADDLE | AFTER) + _rows({"2026-08": (999, 1)}, step="paid"))
    assert (r.before.entered, r.before.reached, r.before.conversion) == (300, 120, 0.4)
    assert (r.after.entered, r.after.reached, r.after.conversion) == (300, 150, 0.5)
    # 150/300 vs 120/300: the numbers of test_compare_by_hand
    assert r.absolute_lift == pytest.approx(0.1) and r.relative_lift == pytest.approx(0.25)
    assert r.p_value == pytest.approx(0.013823, abs=1e-6)
    assert (r.ci_low, r.ci_high) == pytest.approx(newcombe_interval(150, 300, 120, 300))
    assert r.verdict == "improved" and r.summary.startswith("Improved:")
    assert [e["cohort"] for e in r.excluded] == ["2026-07"] and r.excluded[0]["entered"] == 100
    # per after-cohort, against the pooled before side: 50/100 vs 120/300
    first = r.after.cohorts[0]
    assert first.absolute_lift == pytest.approx(0.1)
    assert first.p_value == pytest.approx(two_proportion_p_value(50, 100, 120, 300))
    assert all(c.absolute_lift is None for c in r.before.cohorts)
    assert r.previous_step == "first_flow_run" and r.ready_on is None

    data = json.loads(r.to_json())
    for key in ("step", "change_date", "before", "after", "absolute_lift", "relative_lift", "ci_low",
                "ci_high", "p_value", "verdict"):
        assert key in data
    assert set(data["before"]) >= {"cohorts", "entered", "reached", "conversion"}
    assert data["verdict"] == "improved" and data["ci_method"] == "newcombe"


def test_json_keeps_tiny_p_values_to_6_significant_figures() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30), segment="origin")
    before = {k: (1000, 200) for k in BEFORE}  # 20% before, 40% after: z = 10.6, p ~ 3e-26
    after = {k: (1000, 400) for k in AFTER}
    rows = _rows(before | after) + _rows(before | after, "origin", "github")
    r = analyze(CFG, STEP, sel, rows, segment="origin")
    p = two_proportion_p_value(1200, 3000, 600, 3000)
    assert 0 < p < 1e-20 and r.p_value == p
    data = json.loads(r.to_json())
    assert data["p_value"] > 0 and data["p_value"] == pytest.approx(p, rel=1e-5)
    assert data["p_value"] == float(f"{p:.6g}")
    github = data["segment"]["values"][0]
    assert github["p_value"] > 0 and github["p_value_adjusted"] > 0
    assert all(c["p_value"] > 0 for c in data["after"]["cohorts"])
    # rates keep the report's 6 decimals
    assert data["absolute_lift"] == 0.2 and data["ci_low"] == round(r.ci_low, 6)


def test_a_qualifying_step_is_measured_and_says_so() -> None:
    # invited_teammate is qualifying in the demo framework (an intentional cliff the digest
    # never ranks); a change meant to move it is still a fair question: compared, with a note
    assert CFG.step("invited_teammate").qualifying
    sel = check_request(CFG, "invited_teammate", date(2026, 7, 3), date(2026, 11, 30))
    r = analyze(CFG, "invited_teammate", sel, _rows(BEFORE | STRADDLE | AFTER, step="invited_teammate"))
    assert r.previous_step == "first_scheduled_run" and r.qualifying is True
    assert (r.before.entered, r.before.reached, r.after.reached) == (300, 120, 150)
    assert r.verdict == "improved" and r.p_value == pytest.approx(0.013823, abs=1e-6)
    note = ("'Invite a teammate' (invited_teammate) is a qualifying step: an intentional cliff, which the "
            "digest lists apart and never ranks; whether a change moved it is measured like any step's.")
    assert note in r.notes and f"Note: {note}" in render_text(r)
    assert f"- {note.replace('_', chr(92) + '_')}" in render_markdown(r)  # invited\_teammate
    assert json.loads(r.to_json())["qualifying"] is True
    plain = analyze(CFG, STEP, check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30)),
                    _rows(BEFORE | STRADDLE | AFTER))
    assert plain.qualifying is False and not any("qualifying" in n for n in plain.notes)


def test_too_early_is_a_result_with_null_numbers() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 29))
    r = analyze(CFG, STEP, sel, _rows(BEFORE | STRADDLE | AFTER))
    assert r.verdict == "too_early" and r.ready_on == "2026-11-30"
    d = r.to_dict()
    assert [d[k] for k in ("absolute_lift", "relative_lift", "ci_low", "ci_high", "p_value")] == [None] * 5
    assert d["after"]["entered"] is None and d["after"]["conversion"] is None
    assert [c["cohort"] for c in d["after"]["cohorts"]] == ["2026-08", "2026-09"]
    assert [c["cohort"] for c in d["pending"]] == ["2026-10"] and d["pending"][0]["mature"] is False
    assert "2 cohorts mature of 3 needed" in r.summary and "2026-11-30" in r.summary


def test_immature_cohorts_before_a_recent_change_are_passed_over_excluded_and_said_so() -> None:
    # as_of 2026-11-20, change 2026-11-10: October is before the change but not mature (it
    # ends 11-01: mature from as_of 11-30), so the before side is July..September; November
    # straddles the change; the after cohorts are all pending (too early)
    sel = check_request(CFG, STEP, date(2026, 11, 10), date(2026, 11, 20))
    counts = {"2026-07": (100, 40), "2026-08": (100, 40), "2026-09": (100, 40), "2026-10": (80, 30),
              "2026-11": (50, 20)}
    r = analyze(CFG, STEP, sel, _rows(counts))
    assert [c.cohort for c in r.before.cohorts] == ["2026-07", "2026-08", "2026-09"]
    assert (r.before.entered, r.before.reached) == (300, 120)
    assert r.verdict == "too_early" and [c.cohort for c in r.pending] == ["2026-12", "2027-01", "2027-02"]
    assert r.excluded == [
        {"cohort": "2026-11", "start": "2026-11-01", "end": "2026-12-01",
         "reason": "straddles the change date 2026-11-10 (signups both before and after it)",
         "entered": 50, "reached": 20, "conversion": 0.4},
        {"cohort": "2026-10", "start": "2026-10-01", "end": "2026-11-01",
         "reason": "before the change but not mature (matures on 2026-11-30)",
         "entered": 80, "reached": 30, "conversion": 0.375},
    ]
    note = "Cohort 2026-10 before the change is not mature yet and is passed over."
    assert note in r.notes and f"Note: {note}" in render_text(r)
    md = render_markdown(r)
    assert f"- {note}" in md and "| excluded | 2026-10 | 2026-10-01 |" in md
    assert json.loads(r.to_json())["excluded"][1]["cohort"] == "2026-10"


def test_several_immature_cohorts_passed_over_are_listed_in_one_note() -> None:
    funnel = CFG.funnel.model_copy(update={"cohort": "week"})
    cfg = CFG.model_copy(update={"funnel": funnel})
    # weekly, 30-day window, as_of 2026-11-20: W43..W45 are before the change 2026-11-11 (W46)
    # and not mature yet
    sel = check_request(cfg, STEP, date(2026, 11, 11), date(2026, 11, 20), before_cohorts=2, after_cohorts=1)
    weeks = {"2026-W41": (100, 40), "2026-W42": (100, 40), "2026-W43": (10, 1), "2026-W44": (10, 2),
             "2026-W45": (10, 3)}
    r = analyze(cfg, STEP, sel, _rows(weeks))
    skipped = [e for e in r.excluded if e["reason"].startswith("before the change but not mature")]
    assert [(e["cohort"], e["reason"][-11:-1], e["entered"], e["reached"]) for e in skipped] == [
        ("2026-W43", "2026-11-24", 10, 1), ("2026-W44", "2026-12-01", 10, 2), ("2026-W45", "2026-12-08", 10, 3)]
    assert ("Cohorts 2026-W43, 2026-W44, 2026-W45 before the change are not mature yet and are passed over."
            in r.notes)
    assert [c.cohort for c in r.before.cohorts] == ["2026-W41", "2026-W42"]


def test_too_small_a_denominator_is_a_usage_error() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30))
    small = {k: (9, 4) for k in BEFORE}  # 27 entered < min_sample 30
    with pytest.raises(UsageError) as err:
        analyze(CFG, STEP, sel, _rows(small | AFTER))
    assert "only 27 accounts entered step 'first_deployment' in the before cohorts 2026-04..2026-06" in str(err.value)
    with pytest.raises(UsageError, match="after cohorts 2026-08..2026-10"):
        analyze(CFG, STEP, sel, _rows(BEFORE | {k: (5, 2) for k in AFTER}))


def test_rows_with_reached_above_entered_are_refused() -> None:
    # cohort_rows never gives them (reached is counted within entered); other rows, e.g. the
    # engine's own independent-mode table, are not a proportion
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30))
    with pytest.raises(ValueError, match="360 reached of 300 entered on the after side"):
        analyze(CFG, STEP, sel, _rows(BEFORE | {k: (100, 120) for k in AFTER}))


def _frames(journeys: dict[str, dict[str, int | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Entities created 2026-08-05 (cohort 2026-08, mature at as_of 2026-11-30) and their
    milestones: {entity: {step: days after creation, or None}}."""
    created = pd.Timestamp("2026-08-05", tz="UTC")
    entities = pd.DataFrame({"entity_id": list(journeys), "created_at": [created] * len(journeys),
                             "origin": ["github"] * len(journeys), "region": ["eu"] * len(journeys)})
    milestones = pd.DataFrame(
        [{"step": step, "entity_id": e, "reached_at": created + pd.Timedelta(days=d)}
         for e, steps in journeys.items() for step, d in steps.items() if d is not None],
        columns=["step", "entity_id", "reached_at"],
    )
    return entities, milestones


# a: ran then deployed; b: deployed without a run (skips first_flow_run); c: ran, never deployed;
# d: ran, deployed after the 30-day window; e: deployed in the window, ran after it
JOURNEYS = {
    "a": {"workspace_created": 0, "first_flow_run": 1, STEP: 2},
    "b": {"workspace_created": 0, STEP: 3},
    "c": {"workspace_created": 0, "first_flow_run": 1},
    "d": {"workspace_created": 0, "first_flow_run": 1, STEP: 31},
    "e": {"workspace_created": 0, "first_flow_run": 40, STEP: 5},
}


@pytest.mark.parametrize("mode", ["independent", "any_order", "ordered"])
def test_cohort_rows_count_reached_among_those_who_entered(mode: str) -> None:
    from framework.engine import compute
    from framework.impact import cohort_rows

    funnel = CFG.funnel.model_copy(update={"mode": mode})
    cfg = CFG.model_copy(update={"funnel": funnel})
    sel = check_request(cfg, STEP, date(2026, 7, 3), date(2026, 11, 30))
    cfg = impact_config(cfg, STEP, sel)
    entities, milestones = _frames(JOURNEYS)
    rows = cohort_rows(entities, milestones, cfg, STEP, date(2026, 11, 30))
    assert {r.step for r in rows} == {STEP}
    aug = {(r.segment, r.value): r for r in rows if r.cohort == "2026-08"}
    # entered = a, c, d (ran within 30 days); reached among them = a only, in every mode
    assert (aug[None, None].entered, aug[None, None].reached) == (3, 1)
    assert (aug["origin", "github"].entered, aug["origin", "github"].reached) == (3, 1)
    # the digest's independent-mode table counts b and e as reached too (3 "of" 3 entered, though
    # only a of the entered deployed); in the other modes it already is cohort_rows' count
    engine = {r.cohort: r for r in compute(entities, milestones, cfg, date(2026, 11, 30)).cohorts
              if r.step == STEP and r.segment is None}
    assert engine["2026-08"].entered == 3
    assert engine["2026-08"].reached == (3 if mode == "independent" else 1)


def test_segments_are_bonferroni_corrected() -> None:
    sel = check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 30), segment="origin")
    rows = _rows(BEFORE | AFTER)
    # github: 100/200 before, 121/200 after: raw p = 0.0347 (< 0.05), adjusted x2 = 0.0694: no claim
    rows += _rows({"2026-04": (100, 50), "2026-05": (100, 50)}, "origin", "github")
    rows += _rows({"2026-08": (100, 61), "2026-09": (100, 60)}, "origin", "github")
    # partner: 100/200 before, 150/200 after: a change any correction keeps
    rows += _rows({"2026-04": (100, 50), "2026-05": (100, 50)}, "origin", "partner")
    rows += _rows({"2026-08": (100, 75), "2026-09": (100, 75)}, "origin", "partner")
    # docs: 20 entered before (< min_sample 30): not compared, not counted in m
    rows += _rows({"2026-04": (20, 10)}, "origin", "docs") + _rows({"2026-08": (40, 30)}, "origin", "docs")
    r = analyze(CFG, STEP, sel, rows, segment="origin")
    seg = r.segment
    assert seg.attribute == "origin" and seg.correction == "bonferroni" and seg.tests == 2
    assert seg.confidence == pytest.approx(0.975)
    by = {v.value: v for v in seg.values}
    github = by["github"]
    raw = two_proportion_p_value(121, 200, 100, 200)
    assert raw == pytest.approx(0.034715, abs=1e-6)
    assert github.p_value == pytest.approx(raw) and github.p_value_adjusted == pytest.approx(2 * raw)
    assert (github.ci_low, github.ci_high) == pytest.approx(newcombe_interval(121, 200, 100, 200, 0.975))
    assert github.verdict == "no_change"
    assert by["partner"].verdict == "improved" and by["partner"].p_value_adjusted < 0.001
    assert not by["docs"].tested and by["docs"].verdict is None and "fewer than 30" in by["docs"].note
    assert any("Bonferroni" in n for n in r.notes)


# --------------------------------------------------------------------------- renderings


def _result(step_name: str = "Deploy a flow"):
    steps = [s.model_copy(update={"name": step_name}) if s.key == STEP else s for s in CFG.steps]
    cfg = CFG.model_copy(update={"steps": steps})
    sel = check_request(cfg, STEP, date(2026, 7, 3), date(2026, 11, 30), segment="region")
    rows = _rows(BEFORE | STRADDLE | AFTER) + _rows(BEFORE | AFTER, "region", "eu")
    return analyze(cfg, STEP, sel, rows, segment="region")


def test_text_and_markdown_show_every_cohort_and_the_verdict() -> None:
    r = _result()
    text = render_text(r)
    assert "Verdict: improved" in text
    for label in [*BEFORE, *AFTER]:
        assert label in text
    md = render_markdown(r, "data:image/png;base64,AAAA")
    assert md.startswith("# Impact: Deploy a flow (`first_deployment`) — change on 2026-07-03")
    cohort_rows = [ln for ln in md.splitlines() if ln.startswith(("| before |", "| after |", "| excluded |"))]
    assert [ln.split("|")[2].strip() for ln in cohort_rows] == [*BEFORE, *AFTER, "2026-07"]
    assert "| after | 2026-08 | 2026-08-01 | yes | 100 | 50 | 50.0% | +10.0 pp |" in md
    assert "![conversion by cohort](data:image/png;base64,AAAA)" in md
    assert "Bonferroni" in md and "Newcombe" in md


def test_slack_message_is_escaped_and_within_limits() -> None:
    r = _result("Deploy <!channel> & win")
    blocks = render_slack_blocks(r, "http://prefect.example/runs/1")
    assert len(blocks) <= 50 and blocks[0]["type"] == "header"
    assert len(blocks[0]["text"]["text"]) <= 150
    dumped = json.dumps(blocks)
    assert "<!channel>" not in json.dumps([b for b in blocks if b["type"] != "header"])
    assert "&lt;!channel&gt; &amp; win" in dumped
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
    assert blocks[-1]["type"] == "actions"
    text = render_slack_text(r)
    assert "<!channel>" not in text and text.startswith("Prefect Growth Framework: Improved:")
    too_early = analyze(CFG, STEP, check_request(CFG, STEP, date(2026, 7, 3), date(2026, 11, 29)),
                        _rows(BEFORE | AFTER))
    assert "Too early" in json.dumps(render_slack_blocks(too_early))


def test_chart_is_a_deterministic_png(tmp_path) -> None:
    from tasks.impact_chart import render_impact_chart

    r = _result()
    first = render_impact_chart(r, tmp_path / "a.png").read_bytes()
    second = render_impact_chart(r, tmp_path / "b.png").read_bytes()
    assert first.startswith(b"\x89PNG") and first == second

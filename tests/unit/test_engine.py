"""Known-answer tests for the metric engine, each number derived from shared/specs/metrics.md.

Conventions used throughout (unless a test says otherwise):

* ``as_of = 2026-03-31`` so ``as_of_end = 2026-04-01 00:00 UTC``.
* ``window_days = 30``, ``lookback_days = 28`` (the defaults), hence
  current period   = [2026-02-02 00:00, 2026-03-02 00:00)  (as_of_end - 30d - 28d, as_of_end - 30d)
  previous period  = [2026-01-05 00:00, 2026-02-02 00:00)  (the 28 days before)
* Expected values are written as small tables (pandas frames) and derived in
  comments next to them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import chi2_contingency

from framework.config import FrameworkConfig, parse_config
from framework.engine import compute
from framework.report import FunnelResult

AS_OF = date(2026, 3, 31)
H = timedelta(hours=1)
D = timedelta(days=1)
S = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ---- builders ---------------------------------------------------------------


def tracked(key: str, **opts: object) -> dict:
    return {
        "key": key,
        "name": key.replace("_", " ").title(),
        "source": "app",
        "table": key,
        "entity_id": "account_id",
        "timestamp": "at",
        **opts,
    }


def untracked(key: str) -> dict:
    return {"key": key, "name": key.title(), "tracked": False, "proposed_metric": f"{key} per account"}


def make_cfg(
    steps: list[dict],
    *,
    attributes: list[str] | None = None,
    top_n: int = 3,
    **funnel: object,
) -> FrameworkConfig:
    doc = {
        "name": "Test funnel",
        "sources": {"app": {"url": "sqlite://"}},
        "entity": {
            "name": "account",
            "source": "app",
            "table": "accounts",
            "id": "id",
            "created_at": "created_at",
            "attributes": attributes or [],
        },
        "funnel": dict(funnel),
        "report": {"top_n": top_n},
        "steps": [{"key": "signup", "name": "Sign up", "entity_created": True}, *steps],
    }
    return parse_config(yaml.safe_dump(doc, sort_keys=False), "test.yaml", env={})


def entities_frame(rows: list[tuple], attributes: tuple[str, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["entity_id", "created_at", *attributes])


def milestones_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["step", "entity_id", "reached_at"])
    if frame.empty:
        frame = frame.astype({"step": object, "entity_id": object, "reached_at": "datetime64[us, UTC]"})
    return frame


def from_journeys(journeys: pd.DataFrame, steps: list[str], unit: timedelta = H) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``journeys``: entity_id, created_at, one column per step with an offset (in ``unit``) from created_at or NaN."""
    ents = journeys[["entity_id", "created_at"]].copy()
    rows = []
    for _, j in journeys.iterrows():
        for s in steps:
            if pd.notna(j[s]):
                rows.append((s, j["entity_id"], j["created_at"] + float(j[s]) * unit))
    return ents, milestones_frame(rows)


STEP_COLUMNS = ["key", "entered", "reached", "conversion", "overall_conversion", "lost", "median_hours", "p90_hours"]


def steps_table(result: FunnelResult, columns: list[str] = STEP_COLUMNS) -> pd.DataFrame:
    rows = [{c: getattr(s, c) for c in columns} for s in result.steps if s.tracked]
    return pd.DataFrame(rows, columns=columns).set_index("key")


def assert_table(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    actual = actual.loc[expected.index, expected.columns].astype(float)
    pd.testing.assert_frame_equal(actual, expected.astype(float), check_exact=False, rtol=1e-9, atol=1e-9)


def step(result: FunnelResult, key: str):
    return next(s for s in result.steps if s.key == key)


# ---- one hand-made population, three modes ---------------------------------

T1 = utc(2026, 2, 10)  # in the current period
FUNNEL_STEPS = [tracked("a"), untracked("u"), tracked("b"), tracked("c")]

# Hours from signup to each tracked step (NaN: never). Non-linear journeys on purpose.
JOURNEYS = pd.DataFrame(
    [
        # id  a      b        c
        (1, 1.0, 2.0, 3.0),  # linear
        (2, 1.0, np.nan, 5.0),  # skips b
        (3, np.nan, 4.0, 6.0),  # skips a
        (4, 10.0, 5.0, 20.0),  # b before a
        (5, 2.0, 24.0 * 31, 3.0),  # b 31 days after signup: outside the 30-day window
        (6, np.nan, np.nan, np.nan),  # signs up only
        (7, 48.0, 50.0, np.nan),  # stops before c
        (8, -1.0, 3.0, 4.0),  # a recorded 1h *before* signup (within window: -1h <= 30d)
    ],
    columns=["entity_id", "a", "b", "c"],
).assign(created_at=T1)


def _mode_population() -> tuple[pd.DataFrame, pd.DataFrame]:
    return from_journeys(JOURNEYS, ["a", "b", "c"])


# independent: reached(s) = entities that reached s within the window
#   a: {1,2,4,5,7,8} = 6     b: {1,3,4,7,8} = 5 (5 is outside the window)   c: {1,2,3,4,5,8} = 6
#   entered(a) = 8, entered(b) = reached(a) = 6 (u is untracked), entered(c) = reached(b) = 5
#   hours a (pairs signup->a with t_a >= t_1; 8 excluded, -1h): [1,1,10,2,48] -> sorted [1,1,2,10,48]
#     median 2; p90 at rank 0.9*4 = 3.6 -> 10 + 0.6*(48-10) = 32.8
#   hours b (reached a and b, t_b >= t_a): 1 (1->2), 7 (48->50) = 2, 8 (-1->3) = 4; 4 excluded (10 -> 5)
#     [1,2,4]: median 2; p90 rank 1.8 -> 2 + 0.8*(4-2) = 3.6
#   hours c (reached b and c, t_c >= t_b): 1: 1, 3: 2, 4: 15, 8: 1 (5 did not reach b in the window)
#     [1,1,2,15]: median 1.5; p90 rank 2.7 -> 2 + 0.7*13 = 11.1
EXPECTED_INDEPENDENT = pd.DataFrame(
    {
        "entered": [8, 8, 6, 5],
        "reached": [8, 6, 5, 6],
        "conversion": [1.0, 6 / 8, 5 / 6, 6 / 5],  # c converts at 1.2: reported, not hidden
        "overall_conversion": [1.0, 6 / 8, 5 / 8, 6 / 8],
        "lost": [0, 2, 1, -1],
        "median_hours": [np.nan, 2.0, 2.0, 1.5],
        "p90_hours": [np.nan, 32.8, 3.6, 11.1],
    },
    index=pd.Index(["signup", "a", "b", "c"], name="key"),
)

# any_order: reached every tracked step 1..s within the window
#   a: {1,2,4,5,7,8} = 6    a&b: {1,4,7,8} = 4    a&b&c: {1,4,8} = 3
#   hours a: as independent [1,1,2,10,48] -> 2 / 32.8
#   hours b (among {1,4,7,8}, t_b >= t_a): 1, 2, 4 -> 2 / 3.6
#   hours c (among {1,4,8}): 1, 15, 1 -> [1,1,15]: median 1; p90 rank 1.8 -> 1 + 0.8*14 = 12.2
EXPECTED_ANY_ORDER = pd.DataFrame(
    {
        "entered": [8, 8, 6, 4],
        "reached": [8, 6, 4, 3],
        "conversion": [1.0, 6 / 8, 4 / 6, 3 / 4],
        "overall_conversion": [1.0, 6 / 8, 4 / 8, 3 / 8],
        "lost": [0, 2, 2, 1],
        "median_hours": [np.nan, 2.0, 2.0, 1.0],
        "p90_hours": [np.nan, 32.8, 3.6, 12.2],
    },
    index=pd.Index(["signup", "a", "b", "c"], name="key"),
)

# ordered: as any_order and t1 <= t_a <= t_b <= t_c
#   a: {1,2,4,5,7} = 5 (8 reached a before signup)
#   b: {1,7} = 2 (4 has b before a)      c: {1} = 1 (7 has no c)
#   hours a: [1,1,10,2,48] -> 2 / 32.8; hours b: [1,2] -> 1.5, p90 rank 0.9 -> 1.9; hours c: [1] -> 1 / 1
EXPECTED_ORDERED = pd.DataFrame(
    {
        "entered": [8, 8, 5, 2],
        "reached": [8, 5, 2, 1],
        "conversion": [1.0, 5 / 8, 2 / 5, 1 / 2],
        "overall_conversion": [1.0, 5 / 8, 2 / 8, 1 / 8],
        "lost": [0, 3, 3, 1],
        "median_hours": [np.nan, 2.0, 1.5, 1.0],
        "p90_hours": [np.nan, 32.8, 1.9, 1.0],
    },
    index=pd.Index(["signup", "a", "b", "c"], name="key"),
)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("independent", EXPECTED_INDEPENDENT),
        ("any_order", EXPECTED_ANY_ORDER),
        ("ordered", EXPECTED_ORDERED),
    ],
)
def test_modes_on_non_linear_journeys(mode: str, expected: pd.DataFrame) -> None:
    ents, ms = _mode_population()
    result = compute(ents, ms, make_cfg(FUNNEL_STEPS, mode=mode), AS_OF)
    assert result.mode == mode
    assert result.current_period.start == "2026-02-02"
    assert result.current_period.end == "2026-03-02"
    assert_table(steps_table(result), expected)


def test_untracked_step_is_listed_without_numbers() -> None:
    ents, ms = _mode_population()
    result = compute(ents, ms, make_cfg(FUNNEL_STEPS), AS_OF)
    assert [s.key for s in result.steps] == ["signup", "a", "u", "b", "c"]
    assert [s.position for s in result.steps] == [1, 2, 3, 4, 5]
    u = step(result, "u")
    assert u.tracked is False
    numeric = ["entered", "reached", "conversion", "overall_conversion", "lost", "median_hours",
               "p90_hours", "previous_conversion", "delta_pp", "p_value", "target", "opportunity"]
    assert all(getattr(u, f) is None for f in numeric)
    assert result.untracked == [{"key": "u", "proposed_metric": "u per account"}]
    # denominator of b (after u) is the count of the last tracked step before it (a)
    assert step(result, "b").entered == step(result, "a").reached


def test_step_one_row() -> None:
    ents, ms = _mode_population()
    result = compute(ents, ms, make_cfg(FUNNEL_STEPS), AS_OF)
    first = result.steps[0]
    # step 1: entered = reached = |P| = 8, conversion 1.0
    assert (first.key, first.position, first.tracked) == ("signup", 1, True)
    assert (first.entered, first.reached, first.lost) == (8, 8, 0)
    assert first.conversion == 1.0
    assert first.overall_conversion == 1.0
    assert first.median_hours is None and first.p90_hours is None
    assert first.p_value is None
    assert first.opportunity is None


# ---- window, as_of_end, bad rows --------------------------------------------


@pytest.mark.parametrize("mode", ["independent", "any_order", "ordered"])
def test_window_boundary_to_the_second(mode: str) -> None:
    # created 2026-02-10 00:00:00; window 30 days -> last instant that counts is 2026-03-12 00:00:00
    ents = entities_frame([(1, T1), (2, T1), (3, T1)])
    ms = milestones_frame(
        [
            ("a", 1, utc(2026, 3, 12)),  # exactly 30 days: counts
            ("a", 2, utc(2026, 3, 12) + S),  # 30 days + 1 s: does not
            ("a", 3, utc(2026, 3, 11, 23, 59, 59)),  # 1 s inside: counts
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a")], mode=mode), AS_OF)
    assert (step(result, "a").entered, step(result, "a").reached) == (3, 2)


def test_window_days_configured() -> None:
    # window 7: created Mar 10 -> in current period [as_of_end-7-28, as_of_end-7) = [Feb 25, Mar 25)
    ents = entities_frame([(1, utc(2026, 3, 10)), (2, utc(2026, 3, 10))])
    ms = milestones_frame([("a", 1, utc(2026, 3, 17)), ("a", 2, utc(2026, 3, 17) + S)])
    result = compute(ents, ms, make_cfg([tracked("a")], window_days=7), AS_OF)
    assert result.current_period.start == "2026-02-25"
    assert result.current_period.end == "2026-03-25"
    assert (step(result, "a").entered, step(result, "a").reached) == (2, 1)


def cohort_rows(result: FunnelResult, segment: str | None = None, value: str | None = None) -> pd.DataFrame:
    rows = [
        {"cohort": c.cohort, "step": c.step, "mature": c.mature, "entered": c.entered, "reached": c.reached,
         "conversion": c.conversion}
        for c in result.cohorts
        if c.segment == segment and c.value == value
    ]
    return pd.DataFrame(rows, columns=["cohort", "step", "mature", "entered", "reached", "conversion"])


def test_records_at_or_after_as_of_end_are_invisible() -> None:
    # as_of 2026-03-15 -> as_of_end 2026-03-16 00:00. One monthly cohort (2026-03), immature.
    end = utc(2026, 3, 16)
    ents = entities_frame(
        [
            (1, utc(2026, 3, 10)),
            (2, utc(2026, 3, 10)),
            (3, end),  # created exactly at as_of_end: not an entity yet
            (4, end - S),  # created one second before: counted
        ]
    )
    ms = milestones_frame(
        [
            ("a", 1, end),  # at as_of_end: invisible (although within 30 days of signup)
            ("a", 1, end + 2 * D),
            ("a", 2, end - S),  # one second before: reached
            ("a", 3, end + H),
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a")], history_cohorts=1), date(2026, 3, 15))
    expected = pd.DataFrame(
        # 2026-03: entities {1,2,4}; a reached by {2} only
        {"cohort": ["2026-03", "2026-03"], "step": ["signup", "a"], "mature": [False, False],
         "entered": [3, 3], "reached": [3, 1], "conversion": [1.0, 1 / 3]}
    )
    pd.testing.assert_frame_equal(cohort_rows(result), expected)


def test_nat_timestamps_are_ignored() -> None:
    ents = entities_frame([(1, T1), (2, T1), (3, pd.NaT)])
    ms = milestones_frame(
        [
            ("a", 1, T1 + H),
            ("a", 2, pd.NaT),  # no timestamp: not reached
            ("a", 3, T1 + H),  # entity 3 has no creation time: not an entity
            ("b", 1, pd.NaT),  # NaT next to a real record: the real one wins
            ("b", 1, T1 + 2 * H),
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a"), tracked("b")]), AS_OF)
    # population {1,2}: a reached by {1}; b reached by {1}
    assert_table(
        steps_table(result),
        pd.DataFrame(
            {"entered": [2, 2, 1], "reached": [2, 1, 1], "median_hours": [np.nan, 1.0, 1.0]},
            index=pd.Index(["signup", "a", "b"], name="key"),
        ),
    )


def test_orphan_and_unknown_step_milestones_are_ignored() -> None:
    ents = entities_frame([(1, T1), (2, T1)])
    ms = milestones_frame(
        [
            ("a", 1, T1 + H),
            ("a", 999, T1 + H),  # unknown entity
            ("a", 1000, T1 + H),
            ("zzz", 2, T1 + H),  # unknown step key
            ("signup", 2, T1 - D),  # step 1 is the creation time, never a milestone row
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a")]), AS_OF)
    assert [(s.key, s.entered, s.reached) for s in result.steps] == [("signup", 2, 2), ("a", 2, 1)]
    assert result.current_period.entities == 2


@pytest.mark.parametrize("mode", ["independent", "ordered"])
def test_duplicate_milestones_earliest_wins(mode: str) -> None:
    ents = entities_frame([(1, T1), (2, T1), (3, T1)])
    ms = milestones_frame(
        [
            # entity 1: a at +10h and +1h (later row first); b at +5h. Earliest a = 1h <= 5h: in order.
            ("a", 1, T1 + 10 * H),
            ("a", 1, T1 + H),
            ("b", 1, T1 + 5 * H),
            # entity 2: a at +40 days (out of window) and +2h: the earliest (+2h) counts
            ("a", 2, T1 + 40 * D),
            ("a", 2, T1 + 2 * H),
            ("a", 2, T1 + 2 * H),  # exact duplicate row
            # entity 3: b twice, +3h and +100h; a at +2h
            ("b", 3, T1 + 100 * H),
            ("a", 3, T1 + 2 * H),
            ("b", 3, T1 + 3 * H),
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a"), tracked("b")], mode=mode), AS_OF)
    # a: {1,2,3}; b: {1,3}.  hours a: [1,2,2] -> median 2; hours b: 1: 5-1 = 4, 3: 3-2 = 1 -> [1,4] median 2.5
    # p90 a: rank 1.8 -> 2; p90 b: rank 0.9 -> 1 + 0.9*3 = 3.7
    assert_table(
        steps_table(result),
        pd.DataFrame(
            {"entered": [3, 3, 3], "reached": [3, 3, 2], "median_hours": [np.nan, 2.0, 2.5],
             "p90_hours": [np.nan, 2.0, 3.7]},
            index=pd.Index(["signup", "a", "b"], name="key"),
        ),
    )


# ---- ids and timestamps of different types ------------------------------------


@pytest.mark.parametrize(
    ("entity_ids", "milestone_ids"),
    [
        ([12, 13, 14], ["12", "13", "99"]),  # int entities, text milestones
        (["12", "13", "14"], [12, 13, 99]),  # text entities, int milestones
        ([12, 13, 14], [12.0, 13.0, np.nan]),  # float milestone ids (nullable column read from SQL)
        (pd.array([12, 13, 14], dtype="Int64"), pd.array([12, 13, None], dtype="Int64")),
    ],
    ids=["int-vs-str", "str-vs-int", "int-vs-float", "nullable-int"],
)
def test_mixed_id_types_match(entity_ids: list, milestone_ids: list) -> None:
    ents = pd.DataFrame({"entity_id": entity_ids, "created_at": [T1] * 3})
    ms = pd.DataFrame({"step": ["a"] * 3, "entity_id": milestone_ids, "reached_at": [T1 + H] * 3})
    result = compute(ents, ms, make_cfg([tracked("a")]), AS_OF)
    # 12 and 13 match; the third milestone is an orphan (99) or has no id
    assert (step(result, "a").entered, step(result, "a").reached) == (3, 2)


def test_naive_timestamps_are_utc() -> None:
    # created_at naive (taken as UTC) on one side, aware in +02:00 on the other; the window boundary holds
    ents = entities_frame([(1, datetime(2026, 2, 10)), (2, datetime(2026, 2, 10)), (3, datetime(2026, 2, 10))])
    plus2 = timezone(timedelta(hours=2))
    ms = milestones_frame(
        [
            ("a", 1, datetime(2026, 3, 12, 2, 0, 0, tzinfo=plus2)),  # = 2026-03-12 00:00 UTC: exactly 30 days
            ("a", 2, datetime(2026, 3, 12, 2, 0, 1, tzinfo=plus2)),  # one second over
            ("a", 3, datetime(2026, 2, 10, 1, 30, tzinfo=plus2)),  # = 2026-02-09 23:30 UTC: before signup
        ]
    )
    result = compute(ents, ms, make_cfg([tracked("a")]), AS_OF)
    # reached: 1 (exact boundary) and 3 (before signup is within the window); hours only for t_a >= t_1: 720
    a = step(result, "a")
    assert (a.entered, a.reached) == (3, 2)
    assert a.median_hours == pytest.approx(720.0)


@pytest.mark.parametrize("created_kind", ["aware", "naive", "text"])
@pytest.mark.parametrize("reached_kind", ["aware", "naive", "text"])
def test_timestamp_representations_agree(created_kind: str, reached_kind: str) -> None:
    def as_kind(values: list[datetime], kind: str) -> pd.Series:
        s = pd.Series(pd.to_datetime(values, utc=True))
        if kind == "naive":
            return s.dt.tz_localize(None)
        if kind == "text":
            return s.dt.strftime("%Y-%m-%d %H:%M:%S")
        return s

    created = [T1, T1, utc(2026, 1, 20)]
    ents = pd.DataFrame({"entity_id": [1, 2, 3], "created_at": as_kind(created, created_kind)})
    ms = pd.DataFrame(
        {
            "step": ["a", "a", "a"],
            "entity_id": [1, 2, 3],
            "reached_at": as_kind([T1 + 30 * D, T1 + 30 * D + S, utc(2026, 1, 20, 6)], reached_kind),
        }
    )
    result = compute(ents, ms, make_cfg([tracked("a")]), AS_OF)
    # current {1,2}: a reached by 1 only (2 is one second late); previous {3}: reached after 6h
    a = step(result, "a")
    assert (a.entered, a.reached, a.previous_entered, a.previous_reached) == (2, 1, 1, 1)
    assert a.median_hours == pytest.approx(720.0)


# ---- populations ------------------------------------------------------------------


def test_current_and_previous_period_membership() -> None:
    ents = entities_frame(
        [
            (1, utc(2026, 2, 2)),  # = current start: current
            (2, utc(2026, 3, 2) - S),  # 1 s before as_of_end - window: current
            (3, utc(2026, 3, 2)),  # = as_of_end - window: mature but outside the current period
            (4, utc(2026, 2, 2) - S),  # previous
            (5, utc(2026, 1, 5)),  # = previous start: previous
            (6, utc(2026, 1, 5) - S),  # before the previous period: neither
            (7, utc(2026, 3, 20)),  # immature: neither
        ]
    )
    ms = milestones_frame([("a", e, created + H) for e, created in ents.itertuples(index=False)][:4])
    result = compute(ents, ms, make_cfg([tracked("a")]), AS_OF)
    assert (result.current_period.start, result.current_period.end) == ("2026-02-02", "2026-03-02")
    assert (result.previous_period.start, result.previous_period.end) == ("2026-01-05", "2026-02-02")
    assert result.current_period.entities == 2
    assert result.previous_period.entities == 2
    # current {1,2}: both reach a -> 2/2 = 1.0. previous {4,5}: only 4 reaches a -> 1/2 = 0.5
    a = step(result, "a")
    assert (a.entered, a.reached, a.conversion) == (2, 2, 1.0)
    assert a.previous_conversion == 0.5
    assert a.delta_pp == pytest.approx(50.0)
    # pooled z: p = 3/4, var = 0.75*0.25*(1/2+1/2) = 0.1875, z = 0.5/0.4330 = 1.1547 -> p = 0.248213
    assert a.p_value == pytest.approx(0.2482130789899, rel=1e-9)


def test_lookback_days_configured() -> None:
    # window 10, lookback 7: current [Apr 1 - 17d, Apr 1 - 10d) = [Mar 15, Mar 22), previous [Mar 8, Mar 15)
    result = compute(entities_frame([]), milestones_frame([]), make_cfg([tracked("a")], window_days=10,
                                                                         lookback_days=7), AS_OF)
    assert (result.current_period.start, result.current_period.end) == ("2026-03-15", "2026-03-22")
    assert (result.previous_period.start, result.previous_period.end) == ("2026-03-08", "2026-03-15")


# ---- cohorts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of", "feb_mature"),
    [
        # Feb ends (exclusive) Mar 1; Mar 1 + 30d = Mar 31 must be <= as_of_end
        (date(2026, 3, 30), True),  # as_of_end Mar 31: exactly mature
        (date(2026, 3, 29), False),  # as_of_end Mar 30: one day short
    ],
)
def test_month_cohorts_and_maturity(as_of: date, feb_mature: bool) -> None:
    ents = entities_frame(
        [
            (1, utc(2025, 12, 31, 23, 59, 59)),  # Dec: outside the 3 most recent cohorts
            (2, utc(2026, 1, 1)),  # Jan
            (3, datetime(2026, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))),  # = Jan 31 22:30 UTC: Jan
            (4, utc(2026, 2, 14)),  # Feb
            (5, utc(2026, 3, 2)),  # Mar
        ]
    )
    ms = milestones_frame([("a", 2, utc(2026, 1, 2)), ("a", 4, utc(2026, 2, 15)), ("a", 1, utc(2026, 1, 1))])
    result = compute(ents, ms, make_cfg([tracked("a")], history_cohorts=3), as_of)
    expected = pd.DataFrame(
        {
            "cohort": ["2026-01", "2026-01", "2026-02", "2026-02", "2026-03", "2026-03"],
            "step": ["signup", "a"] * 3,
            # Jan ends Feb 1, +30d = Mar 3 <= Mar 30/31: mature either way; Mar never is
            "mature": [True, True, feb_mature, feb_mature, False, False],
            "entered": [2, 2, 1, 1, 1, 1],
            "reached": [2, 1, 1, 1, 1, 0],
            "conversion": [1.0, 0.5, 1.0, 1.0, 1.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(cohort_rows(result), expected)


@pytest.mark.parametrize(
    ("as_of", "w04_mature"),
    [
        # 2026-W04 = Mon Jan 19 .. Jan 26 (exclusive); Jan 26 + 7d = Feb 2 must be <= as_of_end
        (date(2026, 2, 1), True),  # as_of_end Feb 2: exactly mature
        (date(2026, 1, 31), False),
    ],
)
def test_week_cohorts_and_maturity(as_of: date, w04_mature: bool) -> None:
    ents = entities_frame(
        [
            (1, utc(2026, 1, 18, 23, 59, 59)),  # Sunday: 2026-W03
            (2, utc(2026, 1, 19)),  # Monday: 2026-W04
            (3, utc(2026, 1, 29)),  # Thursday: 2026-W05
        ]
    )
    result = compute(ents, milestones_frame([]), make_cfg([tracked("a")], cohort="week", history_cohorts=3,
                                                         window_days=7), as_of)
    # as_of (Jan 31 Sat / Feb 1 Sun) lies in 2026-W05; 3 most recent: W03, W04, W05
    overall = cohort_rows(result)
    signup = overall[overall.step == "signup"].set_index("cohort")
    assert signup.index.tolist() == ["2026-W03", "2026-W04", "2026-W05"]
    assert signup["entered"].tolist() == [1, 1, 1]
    # W03 ends Jan 19, + 7d = Jan 26: mature; W05 ends Feb 2, + 7d = Feb 9: not mature
    assert signup["mature"].tolist() == [True, w04_mature, False]


@pytest.mark.parametrize(
    ("as_of", "created", "labels", "label_of_created"),
    [
        # 2026-01-01 is a Thursday: ISO week 1 of 2026 starts Mon 2025-12-29
        (date(2026, 1, 2), utc(2025, 12, 31), ["2025-W51", "2025-W52", "2026-W01"], "2026-W01"),
        # 2026 has 53 ISO weeks: 2026-W53 = Mon 2026-12-28 .. Sun 2027-01-03
        (date(2027, 1, 3), utc(2027, 1, 1), ["2026-W51", "2026-W52", "2026-W53"], "2026-W53"),
    ],
)
def test_iso_week_labels_across_years(as_of: date, created: datetime, labels: list[str],
                                      label_of_created: str) -> None:
    result = compute(entities_frame([(1, created)]), milestones_frame([]),
                     make_cfg([tracked("a")], cohort="week", history_cohorts=3), as_of)
    overall = cohort_rows(result)
    signup = overall[overall.step == "signup"].set_index("cohort")["entered"]
    assert signup.index.tolist() == labels
    assert signup.to_dict() == {label: int(label == label_of_created) for label in labels}


def test_cohort_rows_use_mode_and_window() -> None:
    # ordered mode, one mature cohort (Feb 2026): cohort counts match the headline counts of the same entities
    ents, ms = _mode_population()
    result = compute(ents, ms, make_cfg(FUNNEL_STEPS, mode="ordered", history_cohorts=2), AS_OF)
    feb = cohort_rows(result).query("cohort == '2026-02'").set_index("step")
    assert feb["mature"].all()
    assert feb["entered"].tolist() == EXPECTED_ORDERED["entered"].tolist()
    assert feb["reached"].tolist() == EXPECTED_ORDERED["reached"].tolist()


# ---- segments ---------------------------------------------------------------------


def test_segments_and_missing_attribute_values() -> None:
    ents = entities_frame(
        [
            (1, T1, "github", "free"),
            (2, T1, "github", None),
            (3, T1, np.nan, "pro"),
            (4, T1, pd.NA, "free"),
            (5, utc(2026, 1, 20), "ads", "free"),  # previous period: not in the segments table
        ],
        attributes=("origin", "plan"),
    )
    ms = milestones_frame([("a", 1, T1 + H), ("a", 3, T1 + H), ("a", 5, utc(2026, 1, 21))])
    result = compute(ents, ms, make_cfg([tracked("a")], attributes=["origin", "plan"]), AS_OF)
    actual = pd.DataFrame(
        [(r.segment, r.value, r.step, r.entered, r.reached, r.conversion) for r in result.segments],
        columns=["segment", "value", "step", "entered", "reached", "conversion"],
    ).sort_values(["segment", "value", "step"], ignore_index=True)
    # current period {1,2,3,4}; a reached by {1,3}
    expected = pd.DataFrame(
        [
            ("origin", "(none)", "a", 2, 1, 0.5),  # 3, 4
            ("origin", "(none)", "signup", 2, 2, 1.0),
            ("origin", "github", "a", 2, 1, 0.5),  # 1, 2
            ("origin", "github", "signup", 2, 2, 1.0),
            ("plan", "(none)", "a", 1, 0, 0.0),  # 2
            ("plan", "(none)", "signup", 1, 1, 1.0),
            ("plan", "free", "a", 2, 1, 0.5),  # 1, 4
            ("plan", "free", "signup", 2, 2, 1.0),
            ("plan", "pro", "a", 1, 1, 1.0),  # 3
            ("plan", "pro", "signup", 1, 1, 1.0),
        ],
        columns=["segment", "value", "step", "entered", "reached", "conversion"],
    )
    pd.testing.assert_frame_equal(actual, expected)
    # the cohort table has the same breakdown per cohort; Jan holds the "ads" entity
    jan_ads = cohort_rows(result, "origin", "ads").query("cohort == '2026-01'").set_index("step")
    assert jan_ads.loc["a", ["entered", "reached"]].tolist() == [1, 1]
    feb_none = cohort_rows(result, "origin", "(none)").query("cohort == '2026-02'").set_index("step")
    assert feb_none.loc["a", ["entered", "reached"]].tolist() == [2, 1]
    # overall cohort rows have segment = value = None
    assert any(c.segment is None and c.value is None for c in result.cohorts)


def test_attribute_column_absent_is_none_segment() -> None:
    ents = entities_frame([(1, T1), (2, T1)])
    result = compute(ents, milestones_frame([("a", 1, T1 + H)]), make_cfg([tracked("a")], attributes=["region"]), AS_OF)
    assert {(r.segment, r.value, r.step, r.entered, r.reached) for r in result.segments} == {
        ("region", "(none)", "signup", 2, 2),
        ("region", "(none)", "a", 2, 1),
    }


# ---- durations --------------------------------------------------------------------


def test_median_and_p90_linear_interpolation() -> None:
    # a after signup by 1, 2, 3, 4, 10 hours, plus 90 minutes for a sixth entity
    # sorted [1, 1.5, 2, 3, 4, 10]: median rank 2.5 -> (2+3)/2 = 2.5; p90 rank 4.5 -> 4 + 0.5*6 = 7
    offsets = [1, 2, 3, 4, 10, 1.5]
    ents = entities_frame([(i, T1) for i in range(len(offsets))])
    ms = milestones_frame([("a", i, T1 + h * H) for i, h in enumerate(offsets)])
    a = step(compute(ents, ms, make_cfg([tracked("a")]), AS_OF), "a")
    assert a.median_hours == pytest.approx(2.5)
    assert a.p90_hours == pytest.approx(7.0)


def test_durations_null_when_no_pair_in_order() -> None:
    # independent: entity reached both a and b, but b before a: no duration for b
    ents = entities_frame([(1, T1)])
    ms = milestones_frame([("a", 1, T1 + 5 * H), ("b", 1, T1 + 2 * H)])
    result = compute(ents, ms, make_cfg([tracked("a"), tracked("b")]), AS_OF)
    assert step(result, "b").reached == 1
    assert step(result, "b").median_hours is None
    assert step(result, "b").p90_hours is None


def test_duration_after_untracked_step_is_from_last_tracked() -> None:
    ents = entities_frame([(1, T1)])
    ms = milestones_frame([("a", 1, T1 + 5 * H), ("b", 1, T1 + 8 * H)])
    result = compute(ents, ms, make_cfg([tracked("a"), untracked("u"), tracked("b")]), AS_OF)
    assert step(result, "b").median_hours == pytest.approx(3.0)  # 8h - 5h, not 8h - 0h


# ---- change and significance ------------------------------------------------------


def _two_periods(cur_n: int, cur_reached: int, prev_n: int, prev_reached: int, *, extra_b: int = 0):
    """cur_n entities on Feb 10 (current), prev_n on Jan 10 (previous); the first *_reached reach a."""
    rows, ms = [], []
    for i in range(cur_n):
        rows.append((f"c{i}", T1 + i * S))
        if i < cur_reached:
            ms.append(("a", f"c{i}", T1 + H))
        if i < extra_b:
            ms.append(("b", f"c{i}", T1 + 2 * H))
    for i in range(prev_n):
        rows.append((f"p{i}", utc(2026, 1, 10) + i * S))
        if i < prev_reached:
            ms.append(("a", f"p{i}", utc(2026, 1, 10, 1)))
    return entities_frame(rows), milestones_frame(ms)


def test_delta_pp_and_p_value() -> None:
    ents, ms = _two_periods(40, 30, 40, 20)
    a = step(compute(ents, ms, make_cfg([tracked("a")]), AS_OF), "a")
    # now 30/40 = 0.75, before 20/40 = 0.5 -> delta 25 pp
    assert (a.conversion, a.previous_conversion) == (0.75, 0.5)
    assert a.delta_pp == pytest.approx(25.0)
    # pooled p = 50/80 = 0.625; se = sqrt(0.625*0.375*(1/40+1/40)) = 0.108253; z = 0.25/0.108253 = 2.3094
    # two-sided p = 2*(1 - Phi(2.3094)) = 0.0209213 (by hand), equal to scipy's chi-square test of the
    # 2x2 table without continuity correction (chi2 = z^2):
    expected = chi2_contingency([[30, 10], [20, 20]], correction=False).pvalue
    assert expected == pytest.approx(0.0209213, abs=1e-6)
    assert a.p_value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("cur", "prev", "conversion", "previous", "delta"),
    [
        ((2, 2, 2, 2), None, 1.0, 1.0, 0.0),  # both 1.0: pooled variance 0
        ((2, 0, 2, 0), None, 0.0, 0.0, 0.0),  # both 0.0: pooled variance 0
        ((2, 1, 0, 0), None, 0.5, None, None),  # no previous entities: previous conversion null
        ((0, 0, 2, 1), None, None, 0.5, None),  # no current entities: conversion null
    ],
)
def test_null_p_values(cur, prev, conversion, previous, delta) -> None:
    ents, ms = _two_periods(*cur)
    a = step(compute(ents, ms, make_cfg([tracked("a")]), AS_OF), "a")
    assert a.conversion == conversion
    assert a.previous_conversion == previous
    assert a.delta_pp == delta
    assert a.p_value is None


def test_null_p_value_when_conversion_above_one() -> None:
    # independent: b reached by 3 current entities while only 2 reached a -> conversion 1.5
    ents, ms = _two_periods(4, 2, 4, 2, extra_b=3)
    b = step(compute(ents, ms, make_cfg([tracked("a"), tracked("b")]), AS_OF), "b")
    assert (b.entered, b.reached, b.conversion) == (2, 3, 1.5)
    assert b.previous_conversion == 0.0  # previous: 0 of 2
    assert b.delta_pp == pytest.approx(150.0)
    assert b.p_value is None


# ---- ranking and opportunity ------------------------------------------------------


def _independent_counts(n: int, reached: dict[str, int], created: datetime = T1):
    """n entities created at ``created``; for each step, the first k entities reach it (independent mode)."""
    ents = entities_frame([(i, created + i * S) for i in range(n)])
    ms = milestones_frame([(key, i, created + H) for key, k in reached.items() for i in range(k)])
    return ents, ms


def test_ranking_order_and_exclusions() -> None:
    steps = [
        tracked("a"),
        tracked("b", target=0.6),
        tracked("c", target=0.9),
        tracked("q", qualifying=True),
        tracked("d"),
    ]
    ents, ms = _independent_counts(100, {"a": 80, "b": 40, "c": 20, "q": 2, "d": 1})
    result = compute(ents, ms, make_cfg(steps, top_n=2), AS_OF)
    table = steps_table(result, ["key", "entered", "reached", "conversion", "target", "opportunity"])
    # a: 80/100 = .8   b: 40/80 = .5   c: 20/40 = .5   q: 2/20 = .1 (qualifying)   d: 1/2 = .5 (entered 2 < 30)
    # targets: b, c configured; a from the cohort table: Feb 2026 (mature: Mar 1 + 30d <= Apr 1, entered
    #   100 >= 30) converts at .8 -> target .8; q (entered 20) and d (entered 2) < min_sample 30 -> no target
    # opportunity = max(0, target - conv) * entered * prod(min(1, conv(later)))
    #   a: 0 * ...                        = 0
    #   b: (.6 - .5) * 80 * (.5 * .1 * .5) = 0.2
    #   c: (.9 - .5) * 40 * (.1 * .5)      = 0.8
    #   q, d: target null -> null
    expected = pd.DataFrame(
        {
            "entered": [100, 80, 40, 20, 2],
            "reached": [80, 40, 20, 2, 1],
            "conversion": [0.8, 0.5, 0.5, 0.1, 0.5],
            "target": [0.8, 0.6, 0.9, np.nan, np.nan],
            "opportunity": [0.0, 0.2, 0.8, np.nan, np.nan],
        },
        index=pd.Index(["a", "b", "c", "q", "d"], name="key"),
    )
    assert_table(table, expected)
    assert step(result, "d").target is None and step(result, "d").opportunity is None
    # candidates: a, b, c (q qualifying, d under min_sample, signup is step 1)
    # conversion asc: b = c = .5 < a = .8; tie broken by opportunity desc: c (0.8) before b (0.2)
    assert result.ranking == ["c", "b", "a"]
    assert result.lowest_converting == ["c", "b"]  # top_n = 2
    assert result.qualifying == ["q"]


def test_ranking_ties_broken_by_position() -> None:
    # a: 50/100 = .5, b: 25/50 = .5; both targets .5 -> opportunity 0 for both -> position order
    ents, ms = _independent_counts(100, {"a": 50, "b": 25})
    result = compute(ents, ms, make_cfg([tracked("a", target=0.5), tracked("b", target=0.5)]), AS_OF)
    assert [step(result, k).opportunity for k in ("a", "b")] == [0.0, 0.0]
    assert result.ranking == ["a", "b"]


@pytest.mark.parametrize(("min_sample", "ranked"), [(40, ["a"]), (41, [])])
def test_ranking_min_sample_boundary(min_sample: int, ranked: list[str]) -> None:
    ents, ms = _independent_counts(40, {"a": 10})
    result = compute(ents, ms, make_cfg([tracked("a")], min_sample=min_sample), AS_OF)
    assert result.ranking == ranked  # entered(a) = 40: ranked iff 40 >= min_sample


def test_ranking_on_any_order_and_ordered() -> None:
    ents, ms = _mode_population()
    for mode, expected in [("any_order", ["b", "a", "c"]), ("ordered", ["b", "c", "a"])]:
        result = compute(ents, ms, make_cfg(FUNNEL_STEPS, mode=mode, min_sample=1), AS_OF)
        # any_order: a .75, b .667, c .75 -> b; a/c tie, opportunity null for both (cohort target = own
        #   conversion -> 0 each), then position: a before c
        # ordered: a .625, b .4, c .5 -> b, c, a
        assert result.ranking == expected, mode


def test_opportunity_with_cohort_target_and_capped_downstream() -> None:
    # Cohorts (month), as_of 2026-03-31, min_sample 30, independent mode:
    #   2025-12: 10 entities, all reach a (1.0)       mature, but entered 10 < 30: not a target source
    #   2026-01: 40 entities, 36 reach a (0.9)        mature (Feb 1 + 30d = Mar 3 <= Apr 1)
    #   2026-02: 40 entities, 20 reach a (0.5)        mature (Mar 1 + 30d = Mar 31 <= Apr 1); = current period
    #   2026-03: 40 entities, all reach a (1.0)       immature (Apr 1 + 30d > Apr 1): not a target source
    # b (target 0.5 configured): 25 of the Feb entities reach it -> current conversion 25/20 = 1.25
    parts = [
        _independent_counts(10, {"a": 10}, utc(2025, 12, 10)),
        _independent_counts(40, {"a": 36}, utc(2026, 1, 10)),
        _independent_counts(40, {"a": 20, "b": 25}, utc(2026, 2, 10)),
        _independent_counts(40, {"a": 40}, utc(2026, 3, 10)),
    ]
    ents = pd.concat([p[0].assign(entity_id=p[0].entity_id + 1000 * n) for n, p in enumerate(parts)])
    ms = pd.concat([p[1].assign(entity_id=p[1].entity_id + 1000 * n) for n, p in enumerate(parts)])
    # segment rows are not a target source: Jan origin "x" = the first 34 Jan entities, all reach a
    # (1.0 with entered 34 >= 30), which would beat 0.9 if segment rows were used
    ents["origin"] = np.where((ents.entity_id >= 1000) & (ents.entity_id < 1034), "x", "y")
    cfg = make_cfg([tracked("a"), tracked("b", target=0.5)], attributes=["origin"])
    result = compute(ents, ms, cfg, AS_OF)
    jan_x = cohort_rows(result, "origin", "x").query("cohort == '2026-01' and step == 'a'")
    assert jan_x[["entered", "reached"]].values.tolist() == [[34, 34]]
    a, b = step(result, "a"), step(result, "b")
    assert (a.entered, a.reached, a.conversion) == (40, 20, 0.5)
    assert (b.entered, b.reached, b.conversion) == (20, 25, 1.25)
    # target(a) = best mature cohort with entered >= 30 = 0.9
    assert a.target == pytest.approx(0.9)
    # opportunity(a) = (0.9 - 0.5) * 40 * min(1, 1.25) = 16
    assert a.opportunity == pytest.approx(16.0)
    # b: configured target 0.5; max(0, 0.5 - 1.25) * 20 = 0
    assert b.target == 0.5
    assert b.opportunity == 0.0
    # ranking: a (entered 40); b has entered 20 < 30
    assert result.ranking == ["a"]
    # p-value now (20/40) against before (Jan 36/40): scipy chi-square without correction
    assert a.previous_conversion == pytest.approx(0.9)
    assert a.p_value == pytest.approx(chi2_contingency([[20, 20], [36, 4]], correction=False).pvalue)


def test_opportunity_null_without_target() -> None:
    # 10 entities: the only cohort has entered 10 < min_sample 30 -> no derived target, no configured one
    ents, ms = _independent_counts(10, {"a": 5})
    a = step(compute(ents, ms, make_cfg([tracked("a")]), AS_OF), "a")
    assert a.target is None
    assert a.opportunity is None


def test_result_metadata() -> None:
    ents, ms = _mode_population()
    result = compute(ents, ms, make_cfg(FUNNEL_STEPS, window_days=30), AS_OF)
    assert result.as_of == "2026-03-31"
    assert result.window_days == 30
    assert result.entity == "account"


def test_ordered_allows_equal_timestamps() -> None:
    # ordered needs t1 <= t_a <= t_b: equal instants are in order (durations of 0 hours)
    ents = entities_frame([(1, T1), (2, T1)])
    ms = milestones_frame([("a", 1, T1), ("b", 1, T1), ("a", 2, T1 + H), ("b", 2, T1 + H - S)])
    result = compute(ents, ms, make_cfg([tracked("a"), tracked("b")], mode="ordered"), AS_OF)
    # a: {1, 2}; b: {1} (2 reached b one second before a)
    assert [(s.key, s.entered, s.reached) for s in result.steps] == [("signup", 2, 2), ("a", 2, 2), ("b", 2, 1)]
    assert step(result, "b").median_hours == 0.0
    assert step(result, "a").median_hours == pytest.approx(0.5)  # [0, 1] -> 0.5


def test_integer_attribute_with_missing_values_keeps_its_value() -> None:
    ents = entities_frame([(1, T1, 1.0), (2, T1, np.nan), (3, T1, 2.0)], attributes=("tier",))
    result = compute(ents, milestones_frame([]), make_cfg([tracked("a")], attributes=["tier"]), AS_OF)
    assert {r.value for r in result.segments} == {"1", "2", "(none)"}

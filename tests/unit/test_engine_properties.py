"""Property tests of the metric engine on random small populations (shared/specs/metrics.md).

A plain-Python reference of "reached" (one entity at a time, straight from the
spec's definitions) is compared with the engine, next to invariants that hold
whatever the data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.config import FrameworkConfig, parse_config
from framework.engine import compute
from framework.report import FunnelResult

BASE = datetime(2025, 12, 1, tzinfo=UTC)
MODES = ("independent", "any_order", "ordered")
SETTINGS = settings(max_examples=40, deadline=None)


@dataclass(frozen=True)
class Case:
    as_of: date
    window_days: int
    lookback_days: int
    cohort: str
    tracked: list[str]  # tracked step keys after signup, in order
    untracked_at: int | None  # insert an untracked step before tracked[untracked_at]
    entities: list[tuple[int, datetime, str | None]]
    milestones: list[tuple[str, int, datetime]]

    def cfg(self, mode: str) -> FrameworkConfig:
        steps: list[dict] = [{"key": "signup", "name": "Sign up", "entity_created": True}]
        for i, key in enumerate(self.tracked):
            if self.untracked_at == i:
                steps.append({"key": "idea", "name": "Idea", "tracked": False, "proposed_metric": "x"})
            steps.append({"key": key, "name": key, "source": "app", "table": key, "entity_id": "e",
                          "timestamp": "t"})
        doc = {
            "name": "prop",
            "sources": {"app": {"url": "sqlite://"}},
            "entity": {"source": "app", "table": "e", "id": "id", "created_at": "c", "attributes": ["origin"]},
            "funnel": {
                "mode": mode,
                "window_days": self.window_days,
                "lookback_days": self.lookback_days,
                "cohort": self.cohort,
                "history_cohorts": 12 if self.cohort == "month" else 40,
                "min_sample": 3,
            },
            "steps": steps,
        }
        return parse_config(yaml.safe_dump(doc), "prop.yaml", env={})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        ents = pd.DataFrame(self.entities, columns=["entity_id", "created_at", "origin"])
        ms = pd.DataFrame(self.milestones, columns=["step", "entity_id", "reached_at"])
        ms["reached_at"] = pd.to_datetime(ms["reached_at"], utc=True)
        return ents, ms

    def run(self, mode: str) -> FunnelResult:
        ents, ms = self.frames()
        return compute(ents, ms, self.cfg(mode), self.as_of)

    @property
    def end(self) -> datetime:
        return datetime(self.as_of.year, self.as_of.month, self.as_of.day, tzinfo=UTC) + timedelta(days=1)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n_steps = draw(st.integers(1, 3))
    tracked = [f"s{i}" for i in range(n_steps)]
    untracked_at = draw(st.none() | st.integers(1, n_steps - 1)) if n_steps > 1 else None
    as_of = draw(st.sampled_from([date(2026, 3, 31), date(2026, 3, 1), date(2026, 2, 14)]))
    span_hours = int((datetime(2026, 4, 3, tzinfo=UTC) - BASE) / timedelta(hours=1))
    n = draw(st.integers(0, 20))
    entities, milestones = [], []
    for e in range(n):
        created = BASE + timedelta(hours=draw(st.integers(0, span_hours)))
        entities.append((e, created, draw(st.sampled_from(["x", "y", None]))))
        for key in tracked:
            # 0..2 records per step (duplicates), from 3 days before signup to 40 days after
            for h in draw(st.lists(st.integers(-72, 24 * 40), max_size=2)):
                milestones.append((key, e, created + timedelta(hours=h)))
    for _ in range(draw(st.integers(0, 2))):  # orphans
        milestones.append((draw(st.sampled_from(tracked)), 10_000 + draw(st.integers(0, 5)), BASE))
    return Case(
        as_of=as_of,
        window_days=draw(st.sampled_from([1, 7, 30])),
        lookback_days=draw(st.sampled_from([7, 28])),
        cohort=draw(st.sampled_from(["month", "week"])),
        tracked=tracked,
        untracked_at=untracked_at,
        entities=entities,
        milestones=draw(st.permutations(milestones)),
    )


# ---- reference, straight from the spec ------------------------------------------


def reference_reached(case: Case, mode: str) -> dict[int, list[bool]]:
    """Entity id -> reached flag per tracked step (signup first), for every entity created before as_of_end."""
    end = case.end
    first: dict[tuple[int, str], datetime] = {}
    for key, e, at in case.milestones:
        if at < end and ((e, key) not in first or at < first[(e, key)]):
            first[(e, key)] = at
    window = timedelta(days=case.window_days)
    out = {}
    for e, t1, _ in case.entities:
        if t1 >= end:
            continue
        times = [t1] + [first.get((e, k)) for k in case.tracked]
        flags, chain = [], True
        for j, t in enumerate(times):
            ok = t is not None and t - t1 <= window
            if mode == "independent":
                flags.append(ok)
                continue
            if mode == "ordered" and ok and j > 0:
                ok = times[j - 1] is not None and times[j - 1] <= t
            chain = chain and ok
            flags.append(chain)
        out[e] = flags
    return out


def reference_counts(case: Case, mode: str, start: datetime, stop: datetime) -> list[int]:
    created = {e: t1 for e, t1, _ in case.entities}
    flags = [f for e, f in reference_reached(case, mode).items() if start <= created[e] < stop]
    return [sum(f[j] for f in flags) for j in range(len(case.tracked) + 1)]


def tracked_steps(result: FunnelResult):
    return [s for s in result.steps if s.tracked]


# ---- properties ---------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_matches_reference_in_every_mode(case: Case) -> None:
    cur_end = case.end - timedelta(days=case.window_days)
    cur_start = cur_end - timedelta(days=case.lookback_days)
    prev_start = cur_start - timedelta(days=case.lookback_days)
    for mode in MODES:
        steps = tracked_steps(case.run(mode))
        assert [s.reached for s in steps] == reference_counts(case, mode, cur_start, cur_end), mode
        assert [s.previous_reached for s in steps] == reference_counts(case, mode, prev_start, cur_start), mode


@SETTINGS
@given(cases())
def test_modes_nest_and_chained_modes_never_increase(case: Case) -> None:
    results = {mode: case.run(mode) for mode in MODES}
    reached = {mode: [s.reached for s in tracked_steps(r)] for mode, r in results.items()}
    for mode in ("any_order", "ordered"):
        assert all(a >= b for a, b in zip(reached[mode], reached[mode][1:], strict=False)), mode
    assert all(o <= a <= i for o, a, i in zip(reached["ordered"], reached["any_order"], reached["independent"],
                                              strict=True))
    # the same holds in every cohort row
    cohort = {
        mode: {(c.cohort, c.segment, c.value, c.step): c.reached for c in r.cohorts} for mode, r in results.items()
    }
    for key, ind in cohort["independent"].items():
        assert cohort["ordered"][key] <= cohort["any_order"][key] <= ind


@SETTINGS
@given(cases())
def test_conversions_in_unit_interval_outside_independent(case: Case) -> None:
    for mode in ("any_order", "ordered"):
        r = case.run(mode)
        rates = [s.conversion for s in tracked_steps(r)] + [s.overall_conversion for s in tracked_steps(r)]
        rates += [c.conversion for c in r.cohorts] + [s.conversion for s in r.segments]
        assert all(0.0 <= x <= 1.0 for x in rates if x is not None), mode
        assert all(s.lost >= 0 for s in tracked_steps(r))


@SETTINGS
@given(cases(), st.sampled_from(MODES))
def test_entered_is_reached_of_previous_tracked_step(case: Case, mode: str) -> None:
    r = case.run(mode)
    steps = tracked_steps(r)
    assert steps[0].entered == steps[0].reached
    for prev, cur in zip(steps, steps[1:], strict=False):
        assert cur.entered == prev.reached
        assert cur.previous_entered == prev.previous_reached
        assert cur.lost == cur.entered - cur.reached
        assert cur.conversion == (None if cur.entered == 0 else cur.reached / cur.entered)
    for s in r.steps:
        if not s.tracked:
            assert s.entered is None and s.reached is None and s.conversion is None
    keys = [s.key for s in steps]
    groups: dict[tuple, dict[str, tuple[int, int]]] = defaultdict(dict)
    for c in r.cohorts:
        groups[("cohort", c.cohort, c.segment, c.value)][c.step] = (c.entered, c.reached)
    for s in r.segments:
        groups[("segment", s.segment, s.value)][s.step] = (s.entered, s.reached)
    for rows in groups.values():
        assert list(rows) == keys
        assert rows[keys[0]][0] == rows[keys[0]][1]
        for p, s in zip(keys, keys[1:], strict=False):
            assert rows[s][0] == rows[p][1]


@SETTINGS
@given(cases(), st.sampled_from(MODES))
def test_cohort_rows_sum_to_direct_counts(case: Case, mode: str) -> None:
    # every entity of the case is created after BASE, inside the cohort table's history
    r = case.run(mode)
    keys = [s.key for s in tracked_steps(r)]
    direct = reference_reached(case, mode)
    expected = [sum(f[j] for f in direct.values()) for j in range(len(keys))]
    overall = [sum(c.reached for c in r.cohorts if c.segment is None and c.step == k) for k in keys]
    assert overall == expected
    # and the segment rows of one attribute add up to the overall rows, cohort by cohort
    by_cohort = defaultdict(int)
    for c in r.cohorts:
        by_cohort[(c.cohort, c.step, c.segment is None)] += c.reached
    for (cohort, step_key, is_overall), n in by_cohort.items():
        if is_overall:
            assert by_cohort.get((cohort, step_key, False), 0) == n
    # current-period segments add up to the headline
    for k, s in zip(keys, tracked_steps(r), strict=True):
        assert sum(x.reached for x in r.segments if x.step == k) == s.reached


@SETTINGS
@given(cases(), st.sampled_from(MODES), st.randoms(use_true_random=False))
def test_deterministic_and_row_order_invariant(case: Case, mode: str, rnd) -> None:
    first, again = case.run(mode), case.run(mode)
    assert first == again
    ents, ms = case.frames()
    shuffled = compute(
        ents.sample(frac=1.0, random_state=rnd.randrange(2**31)),
        ms.sample(frac=1.0, random_state=rnd.randrange(2**31)),
        case.cfg(mode),
        case.as_of,
    )
    assert shuffled == first

"""Deterministic demo data: a developer-tools SaaS shaped like Prefect Cloud.

`generate_demo` builds, in memory and fully vectorized (numpy), the two source
databases the demo framework file (`framework/demo/growth.yaml`) describes:

- ``app``: accounts, workspaces, deployments, invitations, subscriptions
- ``events``: flow_runs, and workspaces (a dimension copy: id -> account_id)

The output is a pure function of ``(accounts, seed, end_date)``: no clock, no
I/O. Writing the frames to a database is `tasks.seed.seed_demo`'s job.

Conventions of every frame:

- ``id`` columns are ``int64``, assigned 1..n in timestamp order (ties stable).
- Timestamps are tz-naive UTC ``datetime64[us]``; every record is strictly
  before ``end_date + 1 day 00:00`` (nothing in the future).
- Low-cardinality text columns (origin, region, plan, status, schedule, state,
  run_type) are pandas ``category``; free text (email, name) is ``str``.
  Missing values are NaN/NaT/<NA> (written as NULL by the seeder).

How the data behaves (the behaviour the tests pin down):

- Each account has a latent engagement ``z ~ N(0, 1)`` and an origin; the
  origin shifts every step's propensity (partner and github convert best,
  google worst), engagement raises every step and the run volume.
- Journeys are not linear: a few accounts deploy without ever running a flow,
  many invite teammates before (or without) deploying, some pay without
  inviting, and a few run flows in a workspace that only the events database
  knows about (no app.workspaces row).
- Dirt: ~1% duplicated flow runs (same workspace and start time, new id),
  ~2% duplicated invitations, ~0.3% of flow runs in deleted workspaces
  (absent from both workspaces tables) and a handful of invitations from
  deleted accounts. PENDING runs have no start time.
- A product change on ``change_date = end_date - 150 days``: for accounts that
  signed up on or after it, the probability of deploying given having run a
  flow is multiplied by 1.2 (about 0.40 -> 0.48). Nothing else depends on the
  signup date: invitations and payments follow engagement, not the deploy
  decision, so only deployments (and the scheduled runs that follow them) move.
- Freshness: older, already-converted accounts keep producing rows (extra
  workspaces, repeat runs, extra deployments and invitations, plan changes),
  and each table holds rows within the last 24 hours of ``end_date``. Such
  rows are always later than the account's first row of that table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

GENERATOR_VERSION = "1"
CHANGE_STEP = "first_deployment"
CHANGE_LIFT_RELATIVE = 0.20
CHANGE_OFFSET_DAYS = 150
HISTORY_DAYS = 365

SEC = 1_000_000
HOUR = 3_600 * SEC
DAY = 24 * HOUR
_EPOCH = date(1970, 1, 1)

# Origins and their step propensities. The last entry is the missing origin (None).
ORIGINS = ("github", "google", "organic", "docs", "partner")
_ORIGIN_P = np.array([0.30, 0.25, 0.22, 0.13, 0.08, 0.02])
_WS_P = np.array([0.86, 0.64, 0.72, 0.82, 0.90, 0.70])  # workspace | signup
_RUN_P = np.array([0.76, 0.55, 0.62, 0.72, 0.72, 0.60])  # run | workspace
_DEP_M = np.array([1.10, 0.85, 0.95, 1.05, 1.15, 0.95])  # x 0.36: deploy | run (about 0.40 among runners)
_INV_P = np.array([0.20, 0.15, 0.16, 0.19, 0.30, 0.15])  # invite
_PAID_P = np.array([0.060, 0.030, 0.040, 0.050, 0.120, 0.040])  # pay (base)

REGIONS = ("na", "eu", "apac")
_REGION_P = np.array([0.47, 0.35, 0.18])

STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PENDING")
_PENDING = 4
_MANUAL_STATE_P = np.array([0.78, 0.12, 0.03, 0.045, 0.025])
_SCHEDULED_STATE_P = np.array([0.86, 0.07, 0.02, 0.025, 0.025])
RUN_TYPES = ("manual", "scheduled")

SCHEDULES = ("0 * * * *", "*/15 * * * *", "0 9 * * 1-5", "0 0 * * *", "30 6 * * *", "every 10m")
PLANS = ("pro", "team", "enterprise")
_PLAN_P = np.array([0.62, 0.30, 0.08])
STATUSES = ("active", "past_due", "canceled", "trialing")
_PAID_STATUS_P = np.array([0.80, 0.06, 0.14])

_DOMAINS = ("example.com", "acme.io", "initech.dev", "globex.co", "umbrella.org", "hooli.xyz")
_WS_NAMES = ("prod", "staging", "dev", "data-eng", "analytics", "ml-platform", "sandbox")

# Dirt.
_DUP_RUNS = 0.010
_DUP_INVITES = 0.020
_ORPHAN_RUNS = 0.003
_EVENTS_ONLY_WS = 0.004  # share of workspace creators whose workspace is events-only


@dataclass(frozen=True, eq=False)
class DemoData:
    """The generated demo: ``app`` and ``events`` frames by table name, and ``meta``."""

    app: dict[str, pd.DataFrame]
    events: dict[str, pd.DataFrame]
    meta: dict[str, str]


def _us(d: date) -> int:
    return (d - _EPOCH).days * DAY


def _ts(us: np.ndarray) -> np.ndarray:
    return np.asarray(us, dtype=np.int64).view("datetime64[us]")


def _lognormal_us(rng: np.random.Generator, n: int, median_hours: float, sigma: float) -> np.ndarray:
    return (rng.lognormal(np.log(median_hours), sigma, n) * HOUR).astype(np.int64)


def _lift(z: np.ndarray, b: float) -> np.ndarray:
    """A mean-one multiplier that grows with engagement ``z``."""
    return np.exp(b * z - b * b / 2)


def _group_starts(counts: np.ndarray) -> np.ndarray:
    """Index of the first row of each group of ``np.repeat(x, counts)`` (counts >= 1)."""
    return np.cumsum(counts) - counts


def _draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """``n`` int8 category codes drawn with probabilities ``p``."""
    return np.searchsorted(np.cumsum(p[:-1]) / p.sum(), rng.random(n), side="right").astype(np.int8)


def _cat(codes: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
    """Codes (-1 = missing) to a categorical of strings."""
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int8), categories=list(categories))


def _ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64)


def _time_order(t: np.ndarray, start: int) -> np.ndarray:
    """The permutation that sorts rows by time (millisecond granularity), ties by row position.

    Sorting unique packed keys (35 bits of milliseconds since ``start``, 29 bits of
    row position) with ``np.sort`` is an order of magnitude faster than ``np.argsort``
    on tens of millions of rows, and, the keys being unique, the result does not
    depend on the sort algorithm (identical on every machine).
    """
    n = t.size
    ms = (t - start) // 1000
    if n >= 1 << 29 or (n and (ms.min() < 0 or ms.max() >= 1 << 35)):
        raise ValueError("too many rows or timestamps out of range for the packed sort")
    keys = (ms.astype(np.uint64) << np.uint64(29)) | np.arange(n, dtype=np.uint64)
    del ms
    keys.sort()
    return (keys & np.uint64((1 << 29) - 1)).astype(np.int64)


def _fresh_pick(
    rng: np.random.Generator, eligible: np.ndarray, k: int, day_start: int
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` eligible accounts (indices) and times within the last day ``[day_start, +1 day)``."""
    pool = np.flatnonzero(eligible)
    k = min(k, pool.size)
    picked = np.sort(rng.choice(pool, size=k, replace=False)) if k else pool[:0]
    return picked, day_start + rng.integers(0, DAY, k)


def generate_demo(accounts: int = 5000, seed: int = 7, *, end_date: date) -> DemoData:
    """Generate the demo source data for ``accounts`` signups over the 365 days ending ``end_date``.

    Deterministic for ``(accounts, seed, end_date)`` (``np.random.default_rng(seed)``).

    Tables and grains (``app`` unless noted):

    - ``accounts``: one row per account (signup). ``id, email, created_at, origin
      (github|google|organic|docs|partner|NaN), region (na|eu|apac)``.
    - ``workspaces``: one row per workspace created in the app; an account may
      own several. ``id, account_id, name, created_at``.
    - ``deployments``: one row per deployment created. ``id, workspace_id,
      account_id, created_at, schedule (cron-like text, NaN if none)``.
    - ``invitations``: one row per invitation sent (duplicates and a few
      unknown account ids included). ``id, account_id, email, sent_at,
      accepted_at (NaT if not accepted)``.
    - ``subscriptions``: one row per subscription record (trials, first paid
      plan, later plan changes). ``id, account_id, plan, status
      (active|past_due|canceled|trialing), started_at``.
    - ``events.workspaces``: one row per workspace known to the events system
      (the app's plus a few events-only ones). ``id, account_id``.
    - ``events.flow_runs``: one row per flow run (duplicates and runs of deleted
      workspaces included). ``id, workspace_id, deployment_id (Int64, <NA> for
      ad-hoc runs), state, run_type (manual|scheduled), start_time (NaT for
      PENDING)``. About a quarter of start times carry microseconds, the rest
      whole seconds (different ingest paths).
    """
    if isinstance(accounts, bool) or not isinstance(accounts, int | np.integer) or accounts < 1:
        raise ValueError(f"accounts must be a positive integer, got {accounts!r}")
    if not isinstance(end_date, date):
        raise TypeError(f"end_date must be a datetime.date, got {end_date!r}")
    end_date = date(end_date.year, end_date.month, end_date.day)
    n = int(accounts)
    rng = np.random.default_rng(seed)

    end_excl = _us(end_date) + DAY
    day_start = end_excl - DAY
    start = end_excl - HISTORY_DAYS * DAY
    change_date = end_date - timedelta(days=CHANGE_OFFSET_DAYS)
    change_us = _us(change_date)
    n_fresh = max(1, n // 2000)

    # ---- accounts -------------------------------------------------------------------
    growth = np.exp(0.9 * np.arange(HISTORY_DAYS) / (HISTORY_DAYS - 1))  # ~2.5x over the year
    day = rng.choice(HISTORY_DAYS, size=n, p=growth / growth.sum())
    if not (day == HISTORY_DAYS - 1).any():
        day[np.argmax(day)] = HISTORY_DAYS - 1  # freshness: someone signed up on end_date
    created = np.sort(start + day * DAY + rng.integers(0, DAY, n))
    origin = rng.choice(len(_ORIGIN_P), size=n, p=_ORIGIN_P)
    region = rng.choice(len(REGIONS), size=n, p=_REGION_P)
    domain = rng.integers(0, len(_DOMAINS), n)
    z = rng.standard_normal(n)
    post = created >= change_us
    life = (rng.lognormal(np.log(45.0), 0.9, n) * np.exp(0.4 * z) * DAY).astype(np.int64)
    acct_ids = _ids(n)

    # ---- latent journey (per account) ----------------------------------------------
    ws_any = rng.random(n) < np.clip(_WS_P[origin] * _lift(z, 0.3), 0, 0.97)
    events_only = ws_any & (rng.random(n) < _EVENTS_ONLY_WS)
    late = rng.random(n) < 0.06
    ws_t = created + np.where(
        late, _lognormal_us(rng, n, 25 * 24, 0.8), _lognormal_us(rng, n, 1.5, 1.5)
    )
    ws_any &= ws_t < end_excl
    events_only &= ws_any
    has_ws = ws_any & ~events_only

    ran_latent = ws_any & (rng.random(n) < np.clip(_RUN_P[origin] * _lift(z, 0.35), 0, 0.97))
    run1_t = ws_t + _lognormal_us(rng, n, 2, 1.6)
    ran = ran_latent & (run1_t < end_excl)
    first_completed = rng.random(n) < 0.8

    p_dep = np.clip(0.36 * _DEP_M[origin] * _lift(z, 0.25), 0, 0.8)
    p_dep = p_dep * np.where(post, 1.0 + CHANGE_LIFT_RELATIVE, 1.0)
    dep_after_run = ran & ~events_only & (rng.random(n) < p_dep)
    dep_no_run = has_ws & ~ran_latent & (rng.random(n) < 0.05)
    dep_t = np.where(
        dep_after_run, run1_t + _lognormal_us(rng, n, 36, 1.3), ws_t + _lognormal_us(rng, n, 24, 1.3)
    )
    deployed = (dep_after_run | dep_no_run) & (dep_t < end_excl)
    with_schedule = deployed & dep_after_run & (rng.random(n) < np.clip(0.6 * _lift(z, 0.3), 0, 0.95))
    sched1_t = dep_t + _lognormal_us(rng, n, 12, 1.2)
    scheduled = with_schedule & (sched1_t < end_excl)  # its first scheduled run has happened
    first_schedule = np.where(with_schedule, rng.integers(0, len(SCHEDULES), n), -1)

    invite_latent = rng.random(n) < np.clip(
        _INV_P[origin] * _lift(z, 0.4) * np.where(ws_any, 1.15, 0.45), 0, 0.9
    )
    inv_t = created + _lognormal_us(rng, n, 4 * 24, 1.3)
    invited = invite_latent & (inv_t < end_excl)

    p_paid = (
        _PAID_P[origin]
        * _lift(z, 0.6)
        * np.where(invite_latent, 2.5, 0.7)
        * np.where(ran_latent, 1.3, 0.3)
    )
    paid_t = created + _lognormal_us(rng, n, 14 * 24, 0.9)
    paid = (rng.random(n) < np.clip(p_paid, 0, 0.9)) & (paid_t < end_excl)

    # ---- workspaces (app) and the events dimension ------------------------------------
    # kinds: 0 first app workspace, 1 events-only, 2 later app workspace, 3 deleted (gone)
    owners = np.flatnonzero(ws_any)
    extra_k = rng.poisson(0.3 * _lift(z[has_ws], 0.4))
    extra_acct = np.repeat(np.flatnonzero(has_ws), extra_k)
    extra_t = ws_t[extra_acct] + _lognormal_us(rng, extra_acct.size, 20 * 24, 1.0)
    keep = extra_t < end_excl
    extra_acct, extra_t = extra_acct[keep], extra_t[keep]
    fresh_acct, fresh_t = _fresh_pick(rng, has_ws & (ws_t < day_start), n_fresh, day_start)
    n_deleted = max(1, n // 800)
    del_acct = rng.integers(0, n, n_deleted)
    del_t = np.maximum(created[del_acct], start) + rng.integers(0, 30 * DAY, n_deleted)
    del_t = np.minimum(del_t, end_excl - 1)

    w_acct = np.concatenate([owners, extra_acct, fresh_acct, del_acct])
    w_t = np.concatenate([ws_t[owners], extra_t, fresh_t, del_t])
    w_kind = np.concatenate(
        [
            np.where(events_only[owners], 1, 0),
            np.full(extra_acct.size + fresh_acct.size, 2),
            np.full(n_deleted, 3),
        ]
    ).astype(np.int8)
    w_name = np.concatenate(
        [
            np.full(owners.size, -1),
            rng.integers(0, len(_WS_NAMES), extra_acct.size + fresh_acct.size),
            np.full(n_deleted, -1),
        ]
    )
    order = _time_order(w_t, start)
    w_acct, w_t, w_kind, w_name = w_acct[order], w_t[order], w_kind[order], w_name[order]
    w_id = _ids(w_t.size)
    first_ws_id = np.full(n, -1, dtype=np.int64)
    firsts = w_kind <= 1
    first_ws_id[w_acct[firsts]] = w_id[firsts]
    deleted_ws_ids = w_id[w_kind == 3]

    app_ws = w_kind != 1
    app_ws &= w_kind != 3
    names = np.array(["default", *_WS_NAMES], dtype=object)[w_name + 1]
    workspaces = pd.DataFrame(
        {
            "id": w_id[app_ws],
            "account_id": acct_ids[w_acct[app_ws]],
            "name": pd.array(names[app_ws], dtype="str"),
            "created_at": _ts(w_t[app_ws]),
        }
    )
    ev_ws = w_kind != 3
    events_workspaces = pd.DataFrame({"id": w_id[ev_ws], "account_id": acct_ids[w_acct[ev_ws]]})

    # ---- deployments --------------------------------------------------------------------
    deployers = np.flatnonzero(deployed)
    more_k = rng.poisson(1.0 * _lift(z[deployers], 0.4))
    more_acct = np.repeat(deployers, more_k)
    more_t = dep_t[more_acct] + (rng.random(more_acct.size) * life[more_acct]).astype(np.int64)
    keep = more_t < end_excl
    more_acct, more_t = more_acct[keep], more_t[keep]
    fd_acct, fd_t = _fresh_pick(rng, deployed & (dep_t < day_start), n_fresh, day_start)
    n_more = more_acct.size + fd_acct.size
    more_sched = np.where(
        rng.random(n_more) < 0.5, rng.integers(0, len(SCHEDULES), n_more), -1
    )
    d_acct = np.concatenate([deployers, more_acct, fd_acct])
    d_t = np.concatenate([dep_t[deployers], more_t, fd_t])
    d_sched = np.concatenate([first_schedule[deployers], more_sched])
    d_first = np.zeros(d_acct.size, dtype=bool)
    d_first[: deployers.size] = True
    order = _time_order(d_t, start)
    d_acct, d_t, d_sched, d_first = d_acct[order], d_t[order], d_sched[order], d_first[order]
    d_id = _ids(d_t.size)
    first_dep_id = np.full(n, -1, dtype=np.int64)
    first_dep_id[d_acct[d_first]] = d_id[d_first]
    deployments = pd.DataFrame(
        {
            "id": d_id,
            "workspace_id": first_ws_id[d_acct],
            "account_id": acct_ids[d_acct],
            "created_at": _ts(d_t),
            "schedule": _cat(d_sched, SCHEDULES),
        }
    )

    # ---- flow runs (events) --------------------------------------------------------------
    runners = np.flatnonzero(ran)
    # Events-only workspaces are CLI tryouts: a few runs each.
    m_count = 1 + rng.poisson(np.where(events_only[runners], 3.0, 10.0 * _lift(z[runners], 0.5)))
    m_acct = np.repeat(runners, m_count)
    m_first = _group_starts(m_count)  # row of each runner's first run
    m_off = (rng.random(m_acct.size) * life[m_acct]).astype(np.int64)
    m_off[m_first] = 0
    m_t = run1_t[m_acct] + m_off
    del m_off
    m_state = _draw(rng, _MANUAL_STATE_P, m_acct.size)
    m_state[m_first] = np.where(first_completed[runners], 0, 1)
    m_dep = np.where(
        deployed[m_acct] & (m_t > dep_t[m_acct]) & (rng.random(m_acct.size) < 0.4),
        first_dep_id[m_acct],
        -1,
    )
    keep = m_t < end_excl
    m_acct, m_t, m_state, m_dep = m_acct[keep], m_t[keep], m_state[keep], m_dep[keep]

    schedulers = np.flatnonzero(scheduled)
    s_count = 1 + rng.poisson(80.0 * _lift(z[schedulers], 0.5))
    s_acct = np.repeat(schedulers, s_count)
    s_off = (rng.random(s_acct.size) * (2 * life[s_acct])).astype(np.int64)
    s_off[_group_starts(s_count)] = 0
    s_t = sched1_t[s_acct] + s_off
    del s_off
    s_state = _draw(rng, _SCHEDULED_STATE_P, s_acct.size)
    keep = s_t < end_excl
    s_acct, s_t, s_state = s_acct[keep], s_t[keep], s_state[keep]

    fr_acct, fr_t = _fresh_pick(rng, ran & ~events_only & (run1_t < day_start), n_fresh, day_start)

    r_acct = np.concatenate([m_acct, s_acct, fr_acct]).astype(np.int32)
    r_t = np.concatenate([m_t, s_t, fr_t])
    r_state = np.concatenate([m_state, s_state, np.zeros(fr_acct.size, dtype=np.int8)])
    r_type = np.concatenate(
        [np.zeros(m_acct.size, np.int8), np.ones(s_acct.size, np.int8), np.zeros(fr_acct.size, np.int8)]
    )
    r_dep = np.concatenate([m_dep, first_dep_id[s_acct], np.full(fr_acct.size, -1)])
    del m_acct, m_t, m_state, m_dep, s_acct, s_t, s_state
    r_ws = first_ws_id[r_acct]
    del r_acct
    # Three quarters of the runs come from an ingest path that keeps whole seconds only.
    r_t -= (r_t % SEC) * (rng.random(r_t.size) < 0.75)

    # Pack the columns to move (fewer random-access gathers on tens of millions of rows):
    # ref = workspace_id << 32 | (deployment_id + 1), code = state << 1 | run_type.
    r_ref = (r_ws << 32) | (r_dep + 1)
    r_code = (r_state << 1) | r_type
    del r_ws, r_dep, r_state, r_type

    # Dirt: duplicates (same workspace and start time, new id) and runs of deleted workspaces.
    n_rows = r_t.size
    dup = np.sort(rng.choice(n_rows, size=round(_DUP_RUNS * n_rows), replace=False))
    dup = dup[(r_code[dup] >> 1) != _PENDING]
    orph = np.sort(rng.choice(n_rows, size=round(_ORPHAN_RUNS * n_rows), replace=False))
    orph_ws = deleted_ws_ids[rng.integers(0, deleted_ws_ids.size, orph.size)]
    r_t = np.concatenate([r_t, r_t[dup], r_t[orph]])
    r_code = np.concatenate([r_code, r_code[dup], r_code[orph]])
    r_ref = np.concatenate([r_ref, r_ref[dup], (orph_ws << 32) | (r_ref[orph] & 0xFFFFFFFF)])
    del dup, orph, orph_ws
    order = _time_order(r_t, start)
    r_t, r_code, r_ref = r_t[order], r_code[order], r_ref[order]
    del order
    r_state = r_code >> 1
    r_dep = (r_ref & 0xFFFFFFFF) - 1
    start_time = _ts(r_t)
    start_time[r_state == _PENDING] = np.datetime64("NaT")
    flow_runs = pd.DataFrame(
        {
            "id": _ids(r_t.size),
            "workspace_id": r_ref >> 32,
            "deployment_id": pd.arrays.IntegerArray(np.maximum(r_dep, 0), r_dep < 0),
            "state": _cat(r_state, STATES),
            "run_type": _cat(r_code & 1, RUN_TYPES),
            "start_time": start_time,
        },
        copy=False,
    )
    del r_t, r_code, r_ref, r_state, r_dep, start_time

    # ---- invitations ---------------------------------------------------------------------
    inviters = np.flatnonzero(invited)
    inv_more_k = rng.poisson(0.7 * _lift(z[inviters], 0.4))
    im_acct = np.repeat(inviters, inv_more_k)
    im_t = inv_t[im_acct] + (rng.random(im_acct.size) * life[im_acct]).astype(np.int64)
    keep = im_t < end_excl
    im_acct, im_t = im_acct[keep], im_t[keep]
    fi_acct, fi_t = _fresh_pick(rng, invited & (inv_t < day_start), n_fresh, day_start)
    i_acct_ids = acct_ids[np.concatenate([inviters, im_acct, fi_acct])]
    i_t = np.concatenate([inv_t[inviters], im_t, fi_t])
    n_unknown = max(3, round(0.001 * i_t.size))
    i_acct_ids = np.concatenate([i_acct_ids, n + 1 + rng.integers(0, 10 * n_unknown, n_unknown)])
    i_t = np.concatenate([i_t, start + rng.integers(0, HISTORY_DAYS * DAY, n_unknown)])
    i_domain = rng.integers(0, len(_DOMAINS), i_t.size)
    accepted = rng.random(i_t.size) < 0.55
    acc_t = i_t + _lognormal_us(rng, i_t.size, 6, 1.5)
    accepted &= acc_t < end_excl
    n_inv = i_t.size
    dup = np.sort(rng.choice(n_inv, size=round(_DUP_INVITES * n_inv), replace=False))
    src = np.concatenate([np.arange(n_inv), dup])
    invitee = np.concatenate([np.arange(n_inv), dup])  # a duplicate repeats the same address
    i_acct_ids, i_t, i_domain, accepted, acc_t = (
        a[src] for a in (i_acct_ids, i_t, i_domain, accepted, acc_t)
    )
    order = _time_order(i_t, start)
    i_acct_ids, i_t, i_domain, accepted, acc_t, invitee = (
        a[order] for a in (i_acct_ids, i_t, i_domain, accepted, acc_t, invitee)
    )
    accepted_at = _ts(acc_t)
    accepted_at[~accepted] = np.datetime64("NaT")
    invitations = pd.DataFrame(
        {
            "id": _ids(i_t.size),
            "account_id": i_acct_ids,
            "email": _emails("invitee", invitee + 1, i_domain),
            "sent_at": _ts(i_t),
            "accepted_at": accepted_at,
        }
    )

    # ---- subscriptions -------------------------------------------------------------------
    payers = np.flatnonzero(paid)
    trial_first = payers[rng.random(payers.size) < 0.4]
    trial_t1 = np.maximum(paid_t[trial_first] - 14 * DAY, created[trial_first] + HOUR)
    trial_t1 = np.minimum(trial_t1, paid_t[trial_first] - 1)
    trial_only = np.flatnonzero(~paid & ran_latent & (rng.random(n) < 0.03))
    trial_t2 = created[trial_only] + _lognormal_us(rng, trial_only.size, 7 * 24, 0.8)
    keep = trial_t2 < end_excl
    trial_only, trial_t2 = trial_only[keep], trial_t2[keep]
    change_k = rng.poisson(0.3, payers.size)
    pc_acct = np.repeat(payers, change_k)
    pc_t = paid_t[pc_acct] + (rng.random(pc_acct.size) * 2 * life[pc_acct]).astype(np.int64)
    keep = pc_t < end_excl
    pc_acct, pc_t = pc_acct[keep], pc_t[keep]
    fs_acct, fs_t = _fresh_pick(rng, paid & (paid_t < day_start), n_fresh, day_start)
    n_trial = trial_first.size + trial_only.size
    n_later = pc_acct.size + fs_acct.size
    s_acct = np.concatenate([payers, trial_first, trial_only, pc_acct, fs_acct])
    s_t = np.concatenate([paid_t[payers], trial_t1, trial_t2, pc_t, fs_t])
    s_plan = np.concatenate(
        [
            rng.choice(len(PLANS), size=payers.size, p=_PLAN_P),
            np.zeros(n_trial, dtype=np.int64),
            rng.choice(len(PLANS), size=n_later, p=_PLAN_P),
        ]
    )
    s_status = np.concatenate(
        [
            rng.choice(3, size=payers.size, p=_PAID_STATUS_P),
            np.full(n_trial, 3),
            np.where(rng.random(n_later) < 0.85, 0, 2),
        ]
    )
    order = _time_order(s_t, start)
    s_acct, s_t, s_plan, s_status = s_acct[order], s_t[order], s_plan[order], s_status[order]
    subscriptions = pd.DataFrame(
        {
            "id": _ids(s_t.size),
            "account_id": acct_ids[s_acct],
            "plan": _cat(s_plan, PLANS),
            "status": _cat(s_status, STATUSES),
            "started_at": _ts(s_t),
        }
    )

    accounts_df = pd.DataFrame(
        {
            "id": acct_ids,
            "email": _emails("user", acct_ids, domain),
            "created_at": _ts(created),
            "origin": _cat(np.where(origin < len(ORIGINS), origin, -1), ORIGINS),
            "region": _cat(region, REGIONS),
        }
    )

    meta = {
        "generator_version": GENERATOR_VERSION,
        "accounts": str(n),
        "seed": str(seed),
        "end_date": end_date.isoformat(),
        "change_date": change_date.isoformat(),
        "change_step": CHANGE_STEP,
        "change_lift_relative": f"{CHANGE_LIFT_RELATIVE:.2f}",
    }
    return DemoData(
        app={
            "accounts": accounts_df,
            "workspaces": workspaces,
            "deployments": deployments,
            "invitations": invitations,
            "subscriptions": subscriptions,
        },
        events={"workspaces": events_workspaces, "flow_runs": flow_runs},
        meta=meta,
    )


def _emails(prefix: str, numbers: np.ndarray, domain_codes: np.ndarray) -> pd.Series:
    domains = np.array([f"@{d}" for d in _DOMAINS], dtype=object)[domain_codes]
    local = pd.Series(numbers, dtype="int64").astype("str")
    return (prefix + local + pd.Series(domains, dtype="str")).astype("str")

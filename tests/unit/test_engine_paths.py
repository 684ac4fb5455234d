"""The engine's fast paths give the numbers its general paths give (issue 9).

build_matrix finds entity rows by an array lookup when ids are integers over a narrow range
(else a hash index), takes step codes from a categorical as they are (else by factorize),
writes milestones by plain assignment (np.minimum.at only for repeated cells); reached counts
per group come from bit patterns (up to 16 steps, else one pass per step). Each comparison
below runs the same data through both paths and asserts identical results.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from framework.config import parse_config
from framework.engine import _grouped_counts, _reached_cells, compute

AS_OF = date(2026, 11, 29)


def _config(steps: int, mode: str = "independent") -> object:
    lines = [
        "name: Paths",
        "sources: {app: {url: 'sqlite://'}}",
        "entity: {name: account, source: app, table: a, id: id, created_at: c, attributes: [origin]}",
        f"funnel: {{mode: {mode}, window_days: 30, lookback_days: 28, history_cohorts: 12, min_sample: 1}}",
        "steps:",
        "  - {key: s0, name: S0, entity_created: true}",
        *[f"  - {{key: s{i}, name: S{i}, source: app, table: t{i}, entity_id: a, timestamp: t}}" for i in range(1, steps)],
    ]
    return parse_config("\n".join(lines) + "\n", "paths.yaml", {})


def _data(n: int, steps: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2026-11-30", tz="UTC") - pd.to_timedelta(rng.integers(1, 400 * 86400, n), unit="s")
    entities = pd.DataFrame({
        "entity_id": np.arange(1, n + 1, dtype=np.int64),
        "created_at": created,
        "origin": rng.choice(["github", "google", None, ""], n),
    })
    rows = []
    for i in range(1, steps):
        who = rng.choice(n, size=n // 2, replace=True)  # repeats: several records per entity
        at = created[who] + pd.to_timedelta(rng.integers(0, 60 * 86400, len(who)), unit="s")
        rows.append(pd.DataFrame({"step": f"s{i}", "entity_id": who + 1, "reached_at": at}))
    rows.append(pd.DataFrame({"step": ["s1", "nope"], "entity_id": [n + 50, 1],  # orphan, unknown step
                              "reached_at": [created[0], created[0]]}))
    return entities, pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("mode", ["independent", "any_order", "ordered"])
def test_dense_sparse_and_text_ids_give_the_same_result(mode: str) -> None:
    cfg = _config(6, mode)
    entities, milestones = _data(3000, 6, seed=1)
    dense = compute(entities, milestones, cfg, AS_OF)
    spread = 10**12  # ids far apart: the hash index
    sparse = compute(entities.assign(entity_id=entities["entity_id"] * spread),
                     milestones.assign(entity_id=milestones["entity_id"] * spread), cfg, AS_OF)
    text = compute(entities.assign(entity_id=entities["entity_id"].astype(str)),
                   milestones.assign(entity_id=milestones["entity_id"].astype(str)), cfg, AS_OF)
    categorical = compute(entities.assign(origin=entities["origin"].astype("category")),
                          milestones.assign(step=milestones["step"].astype("category")), cfg, AS_OF)
    assert dense == sparse == text == categorical
    assert dense.steps[1].reached > 0 and any(c.segment == "origin" for c in dense.cohorts)


def test_duplicate_entity_ids_keep_the_earliest_creation_on_both_paths() -> None:
    cfg = _config(4)
    entities, milestones = _data(1000, 4, seed=2)
    twice = pd.concat([entities, entities.iloc[:50].assign(created_at=entities["created_at"].iloc[:50] - pd.Timedelta(days=3))],
                      ignore_index=True)
    dense = compute(twice, milestones, cfg, AS_OF)
    spread = 10**12
    sparse = compute(twice.assign(entity_id=twice["entity_id"] * spread),
                     milestones.assign(entity_id=milestones["entity_id"] * spread), cfg, AS_OF)
    assert dense == sparse


@pytest.mark.parametrize("steps", [3, 9, 17])
def test_grouped_counts_by_patterns_equal_counts_per_step(steps: int) -> None:
    rng = np.random.default_rng(steps)
    R = rng.random((5000, steps)) < 0.4
    codes = rng.integers(-1, 40, 5000)
    expected = np.stack([np.bincount(codes[(codes >= 0) & R[:, j]], minlength=40) for j in range(steps)], axis=1)
    assert np.array_equal(_grouped_counts(R, codes, 40), expected)
    assert np.array_equal(_grouped_counts(_reached_cells(R), codes, 40), expected)
    patterns, _, _ = _reached_cells(R)
    assert (patterns is None) == (steps > 16)


def test_int_keys_only_for_canonical_integer_text() -> None:
    """Stored ids are text; they are compared as integers only when that is comparing texts."""
    from framework.milestones import int_keys

    assert int_keys(pd.Series(["42", "0", "-7", "9223372036854775807"], dtype="str")).tolist() == [
        42, 0, -7, 9223372036854775807]
    for text in (["042"], ["-0"], ["4.2"], ["+4"], [" 4"], ["x1"], ["9999999999999999999"], ["1", None]):
        assert int_keys(pd.Series(text, dtype=object)) is None, text
    assert int_keys(pd.Series([3, 1], dtype="int64")).tolist() == [3, 1]

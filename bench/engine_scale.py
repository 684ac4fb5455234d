"""The metric engine alone at scale (issue 9, docs/scaling.md): time and memory of
``framework.engine.compute`` for N entities x K tracked steps on this machine.

    python bench/engine_scale.py --entities 10000000 --steps 8 [--repeat 3] [--write docs/scaling.md]

No database: the inputs are built in memory with numpy, shaped like an extraction's output
(``entities``: id, created_at over a year, two attributes; ``milestones``: one row per entity
per reached step, reach falling step by step), so what is measured is the single-machine
part that the warehouse cannot take over: the per-entity matrix and everything computed
from it (both periods, 12 monthly cohorts overall and per attribute value, segments,
time-to-convert). Peak memory is the process's high-water mark (``VmHWM``) reset after the
inputs are built (``/proc/self/clear_refs``), so it is what compute adds on top of them,
plus the inputs themselves.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from framework.config import parse_config  # noqa: E402
from framework.engine import compute  # noqa: E402

AS_OF = date(2026, 11, 29)
SEED = 11


def framework_text(steps: int) -> str:
    """A framework file with ``steps`` tracked steps (the first: the entity's creation)."""
    lines = [
        "name: Engine scale",
        "sources: {app: {url: 'sqlite://'}}",
        "entity: {name: account, source: app, table: accounts, id: id, created_at: created_at,"
        " attributes: [origin, region]}",
        "funnel: {mode: independent, window_days: 30, lookback_days: 28, cohort: month, history_cohorts: 12}",
        "steps:",
        "  - {key: created, name: Created, entity_created: true}",
    ]
    for i in range(1, steps):
        lines.append(f"  - {{key: step_{i}, name: Step {i}, source: app, table: t{i}, entity_id: account_id,"
                     f" timestamp: at}}")
    return "\n".join(lines) + "\n"


def inputs(n: int, steps: int, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Entities created over the year before AS_OF; step i reached by ~0.8**i of them, each a
    few hours to weeks after the previous one."""
    rng = np.random.default_rng(seed)
    end_us = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp() * 1_000_000)
    year_us = 365 * 86_400 * 1_000_000
    created = end_us - rng.integers(1, year_us, n)
    entities = pd.DataFrame({
        "entity_id": np.arange(1, n + 1, dtype=np.int64),
        "created_at": pd.Series(created.view("datetime64[us]")).dt.tz_localize("UTC"),
        "origin": pd.Categorical.from_codes(rng.integers(0, 5, n, dtype=np.int8),
                                            ["github", "google", "ads", "partner", "direct"]),
        "region": pd.Categorical.from_codes(rng.integers(0, 4, n, dtype=np.int8), ["us", "eu", "apac", "latam"]),
    })
    ids, times, codes = [], [], []
    at = created.copy()
    alive = np.ones(n, dtype=bool)
    for i in range(1, steps):
        alive &= rng.random(n) < 0.8
        at = at + rng.integers(60_000_000, 20 * 86_400 * 1_000_000, n)
        keep = alive & (at < end_us)
        ids.append(np.flatnonzero(keep).astype(np.int64) + 1)
        times.append(at[keep])
        codes.append(np.full(int(keep.sum()), i - 1, dtype=np.int8))
    milestones = pd.DataFrame({
        "step": pd.Categorical.from_codes(np.concatenate(codes), [f"step_{i}" for i in range(1, steps)]),
        "entity_id": np.concatenate(ids),
        "reached_at": pd.Series(np.concatenate(times).view("datetime64[us]")).dt.tz_localize("UTC"),
    })
    return entities, milestones


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(n: int, steps: int, repeat: int) -> dict:
    cfg = parse_config(framework_text(steps), "engine-scale.yaml", {})
    t0 = time.perf_counter()
    entities, milestones = inputs(n, steps)
    built = time.perf_counter() - t0
    gc.collect()
    input_mb = (entities.memory_usage(deep=True).sum() + milestones.memory_usage(deep=True).sum()) / 2**20
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak()
    seconds = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = compute(entities, milestones, cfg, AS_OF)
        seconds.append(time.perf_counter() - t)
    peak = _status_mb("VmHWM")
    assert result is not None
    return {
        "entities": n, "steps": steps, "milestones": len(milestones), "build_seconds": built,
        "input_mb": input_mb, "rss_before_mb": rss_before, "peak_mb": peak if reset else float("nan"),
        "seconds": statistics.median(seconds), "all_seconds": seconds,
        "reached": {s.key: s.reached for s in result.steps},
        "cohort_rows": len(result.cohorts), "segment_rows": len(result.segments),
    }


def report(r: dict, command: str) -> str:
    return "\n".join([
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M UTC} on {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}: `{command}`",
        "",
        "| entities | tracked steps | milestone rows | compute (s, median) | inputs in memory (GB) "
        "| RSS before compute (GB) | peak RSS during compute (GB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['entities']:,} | {r['steps']} | {r['milestones']:,} | {r['seconds']:.1f} "
        f"| {r['input_mb'] / 1024:.2f} | {r['rss_before_mb'] / 1024:.2f} | {r['peak_mb'] / 1024:.2f} |",
        "",
        f"Each repetition (s): {', '.join(f'{s:.1f}' for s in r['all_seconds'])}; building the inputs took "
        f"{r['build_seconds']:.1f} s (not counted). The result holds {r['cohort_rows']:,} cohort rows and "
        f"{r['segment_rows']:,} segment rows.",
    ])


def write_docs(path: Path, text: str) -> None:
    begin, end = "<!-- engine scale: begin -->", "<!-- engine scale: end -->"
    doc = path.read_text() if path.exists() else f"{begin}\n{end}\n"
    if begin not in doc or end not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=8, help="tracked steps, the creation included")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", metavar="FILE", help="also write the result into FILE (docs/scaling.md)")
    args = parser.parse_args(argv)
    command = "python bench/engine_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = measure(args.entities, args.steps, args.repeat)
    text = report(result, command.strip())
    print(text)
    if args.write:
        write_docs(Path(args.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

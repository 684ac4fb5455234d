"""The backfill flow: compute and store past days in order, from the same sources, posting nothing."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows.daily import (
    DEFAULT_FRAMEWORK,
    IsoDate,
    compute_day,
    gate_error,
    open_store_task,
    prepare,
    store_task,
)
from framework.errors import QualityGateError, UsageError
from tasks import secrets

MAX_DAYS = 3660


def _bar(done: int, total: int, label: str) -> None:
    """A progress bar on stderr for the CLI (GROWTH_PROGRESS=1 and a terminal)."""
    if os.environ.get("GROWTH_PROGRESS") != "1" or not sys.stderr.isatty():
        return
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r  backfill [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<24}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@flow(name="growth-backfill", flow_run_name="growth-backfill-{start}-{end}", validate_parameters=True)
def growth_backfill(
    start: IsoDate,
    end: IsoDate,
    framework_path: str = DEFAULT_FRAMEWORK,
    force: bool = False,
) -> dict[str, list[str]]:
    """Compute and store every as_of from start to end (inclusive), oldest first, without posting.

    Args:
        start: First as_of date (UTC).
        end: Last as_of date (UTC), inclusive.
        framework_path: The framework file (YAML) describing sources and steps.
        force: Recompute dates that are already stored (otherwise they are skipped, so a
            re-run resumes where an interrupted backfill stopped; days the quality gate
            blocked are always recomputed).
    """
    logger = get_run_logger()
    if end < start:
        raise UsageError(f"backfill: end {end} is before start {start}")
    days = (end - start).days + 1
    if days > MAX_DAYS:
        raise UsageError(f"backfill: {days} days is more than {MAX_DAYS}")
    inputs = prepare(framework_path)
    store = open_store_task(secrets.resolve_store_url())
    outcome: dict[str, list[str]] = {"stored": [], "skipped": [], "failed_quality": []}
    progress = create_progress_artifact(
        progress=0.0, key="growth-backfill-progress", description=f"Backfill {start} .. {end}"
    )
    try:
        for i in range(days):
            as_of = start + timedelta(days=i)
            if not force and store.has_results(inputs.cfg.name, as_of, passed_only=True):
                outcome["skipped"].append(as_of.isoformat())
            else:
                run = store.begin_run(inputs.cfg.name, inputs.framework_hash, as_of, None)
                day = compute_day(inputs, store, as_of)
                report = day.report
                if report.data_quality.status == "failed":
                    store_task(store, run, day, failed_quality=True)
                    store.finish_run(run, "failed_quality", "failed", "skipped")
                    outcome["failed_quality"].append(as_of.isoformat())
                    logger.warning("%s", "; ".join(gate_error(report).problems))
                else:
                    store_task(store, run, day)
                    store.finish_run(run, "succeeded", report.data_quality.status, "skipped")
                    outcome["stored"].append(as_of.isoformat())
            update_progress_artifact(artifact_id=progress, progress=100.0 * (i + 1) / days)
            _bar(i + 1, days, f"{as_of} {'skipped' if as_of.isoformat() in outcome['skipped'] else 'done'}")
    finally:
        store.close()
    logger.info(
        "backfill %s..%s: %d stored, %d skipped (already stored), %d blocked by the quality gate",
        start, end, len(outcome["stored"]), len(outcome["skipped"]), len(outcome["failed_quality"]),
    )
    if outcome["failed_quality"]:
        raise QualityGateError(
            [f"backfill: the quality gate blocked {len(outcome['failed_quality'])} day(s): "
             + ", ".join(outcome["failed_quality"][:10])],
            outcome,
        )
    return outcome

"""The daily growth digest flow: extract -> compute -> validate -> store -> publish. Sequencing only."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.task_engine import TaskRunTimeoutError
from pydantic import Field

from framework.config import Cohort, FrameworkConfig, FunnelConfig, Mode, load_config
from framework.digest import (
    markdown_code_block,
    render_quality_markdown,
    render_text,
)
from framework.engine import as_of_end, compute
from framework.errors import RETRY_DELAYS, DeliveryError, QualityGateError, SourceError, UsageError
from framework.milestones import assemble, merge_milestones, step_definition
from framework.report import DataQuality, Delivery, FunnelResult, Report, slug
from framework.trend import RUNS_AGO_NEEDED, attach_trends
from tasks import events, extract, publish, secrets
from tasks.extract import (  # the time limits; the CLI's pre-flight check reads them too (no Prefect there)
    CHECK_SCHEMA_TIMEOUT,
    DEFAULT_EXTRACT_TIMEOUT,
    extract_timeout,
)
from tasks.faults import fault_point
from tasks.store import ConcurrentRunError, MetricStore, RunHandle, StoreError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FRAMEWORK = "framework/demo/growth.yaml"

# A date parameter the Prefect server checks when a run is created from a deployment (it
# enforces `pattern`, not `format: date`), so "not-a-date" is refused with a clear message.
ISO_DATE_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
IsoDate = Annotated[date, Field(json_schema_extra={"pattern": ISO_DATE_PATTERN})]


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def resolve_path(path: str) -> Path:
    """A framework path as given, else relative to the project root (deployments run from a clone)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return ROOT / p if (ROOT / p).exists() else p


def _transient(task_, task_run, state) -> bool:
    """Retry only connection-level failures, never schema, usage or concurrency errors."""
    try:
        state.result()
    except SourceError as exc:
        return exc.transient
    except StoreError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


_io = dict(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=list(RETRY_DELAYS),
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
)


@task(name="open-store", **_io)
def open_store_task(url: str) -> MetricStore:
    return MetricStore.open(url)


# Timeouts: Prefect interrupts a sync task run in the main thread (every flow run here) with
# SIGALRM, elsewhere by raising in its thread between two Python instructions; a database
# driver blocked in C may only notice when its call returns. A timed-out task is not retried.
@task(name="check-schema", timeout_seconds=CHECK_SCHEMA_TIMEOUT, **_io)
def check_schema_task(cfg: FrameworkConfig, sources: extract.Sources) -> None:
    extract.check_schema(cfg, sources)


@task(name="extract", timeout_seconds=DEFAULT_EXTRACT_TIMEOUT, **_io)
def extract_task(cfg: FrameworkConfig, sources: extract.Sources, end: datetime, since: dict[str, datetime]):
    fault_point("extract")  # a test hook (tasks/faults.py): the run holds here when told to
    entities, aggregates = extract.extract_all(cfg, sources, end, since)
    records = {k: int(a["records"].sum()) for k, a in aggregates.items()}
    get_run_logger().info(
        "%s read; rows fetched: %s; source records aggregated: %s",
        "incremental" if since else "full",
        ", ".join(f"{k}={v}" for k, v in sorted(sources.rows_read.items())),
        ", ".join(f"{k}={v}" for k, v in sorted(records.items())),
    )
    return entities, aggregates


@task(name="compute", cache_policy=NO_CACHE)
def compute_task(cfg: FrameworkConfig, entities, milestones, as_of: date) -> FunnelResult:
    return compute(entities, milestones, cfg, as_of)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    cfg: FrameworkConfig, entities, milestones, stats, result: FunnelResult, as_of: date,
    previous: dict[str, tuple[int, int]] | None = None,
) -> DataQuality:
    from tasks.quality import run_quality_checks

    return DataQuality.from_checks(run_quality_checks(
        entities, milestones, stats, result, cfg, as_of, previous=previous, data_docs_dir=data_docs_dir(cfg.name, as_of),
    ))


DATA_DOCS_ENV = "GROWTH_DATA_DOCS_DIR"


def data_docs_dir(framework: str, as_of: date) -> Path:
    """Where a run's GX Data Docs go: $GROWTH_DATA_DOCS_DIR (default <GROWTH_DATA_DIR or
    data>/data-docs) / <framework slug> / <as_of>/ (a re-run of the day replaces it)."""
    return _data_part(DATA_DOCS_ENV, "data-docs") / slug(framework) / as_of.isoformat()


REPORTS_ENV = "GROWTH_REPORTS_DIR"


def reports_dir() -> Path:
    """Where a deployment run's ``report_json`` goes: $GROWTH_REPORTS_DIR (default
    <GROWTH_DATA_DIR or data>/reports)."""
    return _data_part(REPORTS_ENV, "reports")


def _data_part(env: str, name: str) -> Path:
    """$<env>, else <GROWTH_DATA_DIR or data>/<name>; absolute."""
    return Path(os.environ.get(env) or Path(os.environ.get("GROWTH_DATA_DIR", "data")) / name).resolve()


def report_target(report_json: str | None) -> str | None:
    """The file a run writes its report to, checked writable before the run does anything.
    Called from a shell (``growth run``, Python), the path as given: whoever runs it owns the
    machine. In a deployment run, the parameter comes from whoever may press "Run" in the UI
    and the file is written on the worker, so it must be a relative path without '..' that
    stays under reports_dir() once resolved (no drive, no root, no symlink out)."""
    if not report_json:
        return report_json
    target = Path(report_json)
    if deployment.id is not None:
        root, relative = reports_dir(), target
        target = root / relative
        if (relative.is_absolute() or relative.drive or relative.root or ".." in relative.parts
                or not relative.name or not target.resolve().is_relative_to(root)):
            raise UsageError(
                f"report_json: a deployment run writes its report under {REPORTS_ENV} ({root}); "
                f"give a relative path without '..', not {report_json!r}"
            )
    publish.check_writable(target, "report_json")
    return str(target)


def previous_run(store: MetricStore, framework: str, as_of: date) -> dict[str, tuple[int, int]] | None:
    """The stored run of the day before, per step (entered, reached), for the anomaly check."""
    prev = store.load_report(framework, as_of - timedelta(days=1), passed_only=True)
    if prev is None:
        return None
    return {
        s["key"]: (s["entered"], s["reached"]) for s in prev.get("steps", [])
        if s.get("tracked") and s.get("entered") is not None and s.get("reached") is not None
    }


@task(name="store-results", **_io)
def store_task(store: MetricStore, run: RunHandle, day: Day, failed_quality: bool = False) -> int:
    """Results, milestones and watermarks in one transaction: the watermark moves only with them.

    Results the quality gate blocked are stored with status ``failed_quality`` (kept out of
    trends), without milestones or watermarks: the next run reads those records again."""
    if failed_quality:
        return store.commit_results(run, day.report.to_dict(), status="failed_quality")
    return store.commit_results(
        run, day.report.to_dict(), watermarks=day.watermarks, milestones=day.milestones,
        reset_steps=day.reset_steps,
    )


SLACK_TRANSIENT = frozenset({
    "connection_error", "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
})
"""DeliveryError reasons worth another attempt of the whole delivery: Slack unreachable, rate
limits and Slack's own server errors (after the client's bounded retries). Never a refusal:
invalid_auth, channel_not_found, not_in_channel, missing_scope, invalid_blocks, ..., nor
answer_lost (a post whose answer was lost and could not be confirmed: it may be out)."""


def _slack_transient(task_, task_run, state) -> bool:
    """Retry the delivery when Slack or the store failed transiently: also when the message is
    out and only its chart upload failed (the record says the chart is owed, so the retry
    updates the message and uploads the chart). Not when the delivery is complete, nor after a
    lost answer deliver could not confirm: Slack may have posted, and could not be searched (a
    retry would post again if the search still fails)."""
    try:
        state.result()
    except DeliveryError as exc:
        return exc.reason in SLACK_TRANSIENT and not getattr(exc, "delivered", False)
    except StoreError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(
    name="publish-slack", retries=len(RETRY_DELAYS), retry_delay_seconds=list(RETRY_DELAYS),
    retry_condition_fn=_slack_transient,
    cache_policy=NO_CACHE,
)
def publish_task(
    store: MetricStore, token: str, report: Report, ui_url: str | None, chart: Path | None = None
) -> Delivery:
    """Post once per (framework, as_of, channel); a re-run updates that message, and a post
    whose record was lost (a killed run, a lost answer) is found again, not repeated
    (tasks.publish.deliver_once). When the quality gate failed, the message is the
    data-quality alert instead of the digest (a later passing run turns it into the digest).
    The funnel chart goes into the thread of the first post (or of an update, while it is owed:
    publish.CHART_OWED). The Slack client retries
    429/5xx/connection errors itself, bounded; a delivery that still failed for a transient
    reason is tried again by the task (2 retries, 2 s then 10 s): delivery is idempotent."""
    try:
        return publish.deliver_once(store, token, report, ui_url, chart)
    except DeliveryError as exc:
        try:
            sent = store.get_delivery(report.framework, date.fromisoformat(report.result.as_of), report.delivery.channel)
        except StoreError:  # cannot tell: take the message as out (not retried), Slack's reason stands
            exc.delivered = True
        else:
            exc.delivered = sent is not None and bool(sent.ts) and sent.status in {"posted", "updated"}
        raise


@dataclass(frozen=True)
class DayInputs:
    """Everything a day's run needs, resolved once at the start of a flow run."""

    cfg: FrameworkConfig
    framework_hash: str
    urls: dict[str, str]
    extract_timeout: float = DEFAULT_EXTRACT_TIMEOUT  # seconds (GROWTH_EXTRACT_TIMEOUT_SECONDS)


def prepare(
    framework_path: str, channel: str | None = None, top_n: int | None = None,
    mode: Mode | None = None, cohort: Cohort | None = None,
) -> DayInputs:
    path = resolve_path(framework_path)
    cfg = load_config(path)
    if top_n is not None or channel:
        cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={
            "top_n": top_n or cfg.report.top_n, "channel": channel or cfg.report.channel,
        })})
    text = path.read_bytes()
    digest = hashlib.sha256(text).hexdigest()[:16]
    # mode and cohort change the metrics themselves (channel and top_n only where and how
    # much is shown). The store keys everything by the framework's name: snapshots, trends,
    # the previous day of the anomaly check, milestones, watermarks and the Slack message.
    # A run computed another way is therefore its own series, named for it, and never
    # replaces (or is trended with) the day's numbers computed the file's way; its
    # framework_hash covers the overrides too, so gf_runs tells the two apart as well.
    overrides = {k: v for k, v in (("mode", mode), ("cohort", cohort)) if v is not None and v != getattr(cfg.funnel, k)}
    if overrides:
        funnel = FunnelConfig.model_validate({**cfg.funnel.model_dump(), **overrides})
        cfg = cfg.model_copy(update={"name": f"{cfg.name} ({override_label(overrides)})", "funnel": funnel})
        basis = text + b"\0" + json.dumps(overrides, sort_keys=True).encode()
        digest = hashlib.sha256(basis).hexdigest()[:16]
    return DayInputs(cfg, digest, secrets.resolve_source_urls(cfg), extract_timeout())


def override_label(overrides: dict[str, str]) -> str:
    """"ordered mode, weekly cohorts": what a run computed otherwise than its file says."""
    parts = [f"{overrides['mode']} mode"] if "mode" in overrides else []
    if "cohort" in overrides:
        parts.append(f"{overrides['cohort']}ly cohorts")
    return ", ".join(parts)


@dataclass(frozen=True)
class Day:
    """One computed day: the report, and what the store must keep for the next incremental run."""

    report: Report
    milestones: pd.DataFrame  # new or earlier milestones, steps keyed by their definition (step#hash)
    watermarks: dict[str, datetime]
    reset_steps: list[str]  # steps read in full: their stored milestones are replaced


def _read_plan(cfg: FrameworkConfig, store: MetricStore, full_refresh: bool) -> tuple[dict[str, str], dict[str, datetime], dict[str, datetime]]:
    """Per step: its stored identity, its watermark and where an incremental read starts."""
    ids = {s.key: step_definition(cfg, s.key) for s in cfg.tracked_steps[1:]}
    marks = {} if full_refresh else store.get_watermarks(cfg.name)
    late = timedelta(days=cfg.quality.late_arrival_days)
    watermark = {k: marks[i] for k, i in ids.items() if i in marks}
    return ids, watermark, {k: w - late for k, w in watermark.items()}


def _with_timeout(task_, seconds: float):
    """The task with this run's timeout; a plain function (bench/run.py runs the stages
    without orchestration) as it is."""
    return task_.with_options(timeout_seconds=seconds) if hasattr(task_, "with_options") else task_


def read_sources(
    cfg: FrameworkConfig, urls: dict[str, str], end: datetime, since: dict[str, datetime], limit: float
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """check-schema then extract, each within ``limit`` seconds (check-schema at most
    CHECK_SCHEMA_TIMEOUT); a timeout is a SourceError (exit 4) naming the limit."""
    sources = extract.open_sources(urls)
    try:
        _with_timeout(check_schema_task, min(CHECK_SCHEMA_TIMEOUT, limit))(cfg, sources)
        return _with_timeout(extract_task, limit)(cfg, sources, end, since)
    except TaskRunTimeoutError:  # a source too slow: exit 4 with the limit
        raise extract.too_slow(limit) from None
    finally:
        sources.dispose()


def compute_day(inputs: DayInputs, store: MetricStore, as_of: date, full_refresh: bool = False) -> Day:
    """Extract (incrementally where the store has milestones), compute, validate and attach
    the stored trend: the day's report and what to store, not yet stored or sent."""
    cfg = inputs.cfg
    end = as_of_end(as_of)
    ids, watermark, since = _read_plan(cfg, store, full_refresh)
    entities, aggregates = read_sources(cfg, inputs.urls, end, since, inputs.extract_timeout)
    fresh, stats = assemble(cfg, entities, aggregates)
    stored = store.load_milestones(cfg.name) if since else fresh.iloc[:0]
    keys = {ids[k]: k for k in since}
    stored = stored[stored["step"].isin(list(keys))].assign(step=lambda f: f["step"].map(keys))
    milestones, changed = merge_milestones(stored, fresh)
    milestones = milestones[milestones["reached_at"] < pd.Timestamp(end)]  # stored times of later runs
    result = compute_task(cfg, entities, milestones, as_of)
    quality = validate_task(cfg, entities, milestones, stats, result, as_of, previous_run(store, cfg.name, as_of))
    result = attach_trends(result, store.trend(cfg.name, as_of - timedelta(days=1), RUNS_AGO_NEEDED))
    status = "skipped" if quality.status == "failed" else "dry_run"
    report = Report(cfg.name, result, quality, Delivery(cfg.report.channel, status))

    marks: dict[str, datetime] = {}
    for key, agg in aggregates.items():
        newest = pd.to_datetime(agg["last_at"], utc=True, format="mixed").max() if len(agg) else pd.NaT
        candidates = [t for t in (watermark.get(key), None if pd.isna(newest) else newest.to_pydatetime()) if t]
        if candidates:
            marks[ids[key]] = max(candidates)
    reset = [ids[k] for k in ids if k not in since]
    return Day(report, changed.assign(step=changed["step"].map(ids)), marks, reset)


def gate_error(report: Report) -> QualityGateError:
    failed = [f"{c.name} ({c.target}): {c.observed}" for c in report.data_quality.failed if c.severity == "error"]
    return QualityGateError(["data-quality gate failed; digest not published:", *failed], report)


def _flow_run_name() -> str:
    as_of = flow_run.parameters.get("as_of") or yesterday()
    return f"growth-digest-{as_of}"


def artifacts(report: Report, text: str, chart: Path | None = None, chart_kept: bool = False) -> None:
    """The run's artifacts; ``chart_kept``: the chart file outlives the run (it sits next to the
    report), so the digest artifact names its path."""
    key = f"growth-{slug(report.framework)}"
    chart_line = f"\n\nFunnel chart: `{chart}`" if chart and chart_kept else ""
    create_markdown_artifact(
        markdown=markdown_code_block(text) + chart_line, key=f"{key}-digest", description="The digest"
    )
    if chart is not None:  # the chart itself, inline (a data URL: no file server needed)
        encoded = base64.b64encode(chart.read_bytes()).decode("ascii")
        create_image_artifact(
            image_url=f"data:image/png;base64,{encoded}", key=f"{key}-funnel-chart", description="Funnel chart"
        )
    rows = [
        {k: ("" if v is None else v) for k, v in s.items() if k != "trend"}
        for s in report.to_dict()["steps"]
    ]
    create_table_artifact(table=rows, key=f"{key}-funnel", description="Every step, current period")
    docs = data_docs_dir(report.framework, date.fromisoformat(report.result.as_of)) / "index.html"
    create_markdown_artifact(
        markdown=render_quality_markdown(report, docs.as_uri() if docs.exists() else None),
        key=f"{key}-data-quality", description="Data-quality gate",
    )


@flow(
    name="growth-digest", flow_run_name=_flow_run_name, validate_parameters=True,
    on_failure=[events.digest_failed],
)
def growth_digest(
    as_of: IsoDate | None = None,
    framework_path: str = DEFAULT_FRAMEWORK,
    dry_run: bool = False,
    channel: str | None = None,
    top_n: Annotated[int, Field(ge=1, le=50)] | None = None,
    report_json: str | None = None,
    full_refresh: bool = False,
    mode: Mode | None = None,
    cohort: Cohort | None = None,
) -> Report:
    """Compute the growth funnel for one day, store it, and post the lowest-converting steps.

    Args:
        as_of: The day to report for (UTC). Empty means yesterday.
        framework_path: The framework file (YAML) describing sources and steps.
        dry_run: Publish nowhere; the digest goes to the run's artifacts only.
        channel: Slack channel (name or ID); empty means the framework file's report.channel.
        top_n: How many lowest-converting steps the digest shows; empty means the framework file's.
        report_json: Also write the JSON report to this file. In a deployment run: a relative
            path, written under the worker's GROWTH_REPORTS_DIR (default data/reports).
        full_refresh: Read every source record again instead of only those since the last run.
        mode: How a step's reach is counted (independent, any_order or ordered); empty means
            the framework file's funnel.mode. Another mode is stored and posted as its own
            series, "<framework> (ordered mode)", never in place of the daily numbers.
        cohort: Cohort size of the cohort table (month or week); empty means the framework
            file's funnel.cohort. Like mode, another value is its own series.
    """
    logger = get_run_logger()
    as_of = as_of or yesterday()
    inputs = prepare(framework_path, channel, top_n, mode, cohort)
    report_json = report_target(report_json)
    # secrets once, at the start; passed on, never logged
    token = None if dry_run else secrets.resolve_slack_token()
    if not dry_run and token is None:
        logger.warning("no Slack credentials (SLACK_BOT_TOKEN or Secret block 'slack-bot-token'): dry run")
    with _chart_file(report_json) as chart:  # a temporary chart is removed once it is an artifact
        store = open_store_task(secrets.resolve_store_url())
        run = store.begin_run(inputs.cfg.name, inputs.framework_hash, as_of, _flow_run_id())
        try:
            day = compute_day(inputs, store, as_of, full_refresh)
            report = day.report
            if report.data_quality.status == "failed":
                store_task(store, run, day, failed_quality=True)  # stored, kept out of trends
                store.finish_run(run, "failed_quality", report.data_quality.status, "skipped")
                if token is not None:  # a short alert to the channel instead of the digest
                    try:
                        publish_task(store, token, report, flow_run.ui_url)
                    except DeliveryError as exc:
                        logger.error("the data-quality alert could not be delivered: %s", exc)
                chart.unlink(missing_ok=True)  # a kept chart of an earlier run is not this day's
                _finish(report, report_json, None)  # no chart of numbers known to be wrong
                raise gate_error(report)
            store_task(store, run, day)  # metrics are stored before anything is published
            chart = _render_chart(report, chart)
            if token is not None:
                try:
                    report = replace(report, delivery=publish_task(store, token, report, flow_run.ui_url, chart))
                except DeliveryError as exc:
                    report = replace(report, delivery=replace(report.delivery, status="failed"))
                    store.finish_run(run, "failed", report.data_quality.status, "failed", str(exc))
                    _finish(report, report_json, chart)
                    raise DeliveryError(exc.problems, report, exc.reason) from None
            store.finish_run(run, "succeeded", report.data_quality.status, report.delivery.status)
        except (QualityGateError, DeliveryError):
            raise
        except ConcurrentRunError:
            store.finish_run(run, "superseded")
            raise
        except Exception as exc:
            store.finish_run(run, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            store.close()
        _finish(report, report_json, chart)
        logger.info(
            "as_of %s: lowest converting %s; quality %s; delivery %s",
            as_of, ", ".join(report.result.lowest_converting) or "(none)", report.data_quality.status,
            report.delivery.status,
        )
        events.digest_completed(report, flow_run.ui_url, flow_run.id)
        return report


def _flow_run_id() -> str | None:
    run_id = flow_run.id
    return str(run_id) if run_id else None


def kept_chart_path(report_json: str) -> Path:
    """The chart kept beside a report: funnel.png in the report's directory; if the report
    itself is named funnel.png, <stem>.chart.png (the chart never overwrites the report)."""
    report = Path(report_json)
    chart = report.with_name("funnel.png")
    return report.with_name(f"{report.stem}.chart.png") if chart.name == report.name else chart


@contextmanager
def _chart_file(report_json: str | None) -> Iterator[Path]:
    """Where the funnel chart is drawn: next to the report when there is one (kept); otherwise in
    a temporary directory, removed when the run ends. Every run shows the chart as an inline
    image artifact and a posted digest uploads it, so neither needs the file afterwards."""
    if report_json:
        yield kept_chart_path(report_json)
        return
    with tempfile.TemporaryDirectory(prefix="growth-") as tmp:
        yield Path(tmp) / "funnel.png"


def _render_chart(report: Report, path: Path | None) -> Path | None:
    from tasks.chart import render_funnel_chart

    if path is None:
        return None
    try:
        return render_funnel_chart(report, path)
    except Exception as exc:  # noqa: BLE001 - a chart is never worth failing the digest
        get_run_logger().warning("the funnel chart could not be drawn: %s", exc)
        path.unlink(missing_ok=True)  # nor is an earlier run's chart, kept beside the report
        return None


def _finish(report: Report, report_json: str | None, chart: Path | None = None) -> None:
    if report_json:
        publish.write_report(report.to_json(), report_json)
    artifacts(report, render_text(report, flow_run.ui_url), chart, chart_kept=bool(report_json))

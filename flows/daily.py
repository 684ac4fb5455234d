"""The daily growth digest flow: extract -> validate -> compute -> publish. Sequencing only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from framework.config import FrameworkConfig, load_config
from framework.digest import fallback_text, render_blocks, render_text
from framework.engine import as_of_end, compute
from framework.errors import DeliveryError, QualityGateError, SourceError
from framework.milestones import assemble
from framework.report import DataQuality, Delivery, FunnelResult, Report
from tasks import extract, publish, secrets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FRAMEWORK = "framework/demo/growth.yaml"


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def resolve_path(path: str) -> Path:
    """A framework path as given, else relative to the project root (deployments run from a clone)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return ROOT / p if (ROOT / p).exists() else p


def _transient_source_failure(task_, task_run, state) -> bool:
    """Retry only connection-level source failures, never schema or usage errors."""
    try:
        state.result()
    except SourceError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001
        return False
    return False


_source_io = dict(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_transient_source_failure,
    cache_policy=NO_CACHE,
    timeout_seconds=3600,
)


@task(name="check-schema", **_source_io)
def check_schema_task(cfg: FrameworkConfig, sources: extract.Sources) -> None:
    extract.check_schema(cfg, sources)


@task(name="extract", **_source_io)
def extract_task(cfg: FrameworkConfig, sources: extract.Sources, end: datetime):
    entities, aggregates = extract.extract_all(cfg, sources, end)
    get_run_logger().info(
        "rows read: %s", ", ".join(f"{k}={v}" for k, v in sorted(sources.rows_read.items()))
    )
    return entities, aggregates


@task(name="compute", cache_policy=NO_CACHE)
def compute_task(cfg: FrameworkConfig, entities, milestones, as_of: date) -> FunnelResult:
    return compute(entities, milestones, cfg, as_of)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(cfg: FrameworkConfig, entities, milestones, stats, result: FunnelResult, as_of: date) -> DataQuality:
    from tasks.quality import run_quality_checks

    return DataQuality.from_checks(run_quality_checks(entities, milestones, stats, result, cfg, as_of))


@task(
    name="publish-slack",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=30,
    retry_condition_fn=lambda t, r, s: False,  # the Slack client retries 429/5xx itself, bounded
)
def publish_task(token: str, report: Report, ui_url: str | None) -> Delivery:
    return publish.post_message(
        token, report.delivery.channel, fallback_text(report), render_blocks(report, ui_url)
    )


def _flow_run_name() -> str:
    as_of = flow_run.parameters.get("as_of") or yesterday()
    return f"growth-digest-{as_of}"


def _artifacts(report: Report, text: str) -> None:
    key = "growth-" + "".join(c if c.isalnum() else "-" for c in report.framework.lower()).strip("-")
    create_markdown_artifact(markdown=f"```\n{text}\n```", key=f"{key}-digest", description="The digest")
    rows = [
        {k: ("" if v is None else v) for k, v in s.items()}
        for s in report.to_dict()["steps"]
    ]
    create_table_artifact(table=rows, key=f"{key}-funnel", description="Every step, current period")


@flow(name="growth-digest", flow_run_name=_flow_run_name, validate_parameters=True)
def growth_digest(
    as_of: date | None = None,
    framework_path: str = DEFAULT_FRAMEWORK,
    dry_run: bool = False,
    channel: str | None = None,
    top_n: Annotated[int, Field(ge=1, le=50)] | None = None,
    report_json: str | None = None,
) -> Report:
    """Compute the growth funnel for one day and post the lowest-converting steps.

    Args:
        as_of: The day to report for (UTC). Empty means yesterday.
        framework_path: The framework file (YAML) describing sources and steps.
        dry_run: Publish nowhere; the digest goes to the run's artifacts only.
        channel: Slack channel (name or ID); empty means the framework file's report.channel.
        top_n: How many lowest-converting steps the digest shows; empty means the framework file's.
        report_json: Also write the JSON report to this path.
    """
    logger = get_run_logger()
    as_of = as_of or yesterday()
    cfg = load_config(resolve_path(framework_path))
    if top_n is not None or channel:
        cfg = cfg.model_copy(
            update={"report": cfg.report.model_copy(update={
                "top_n": top_n or cfg.report.top_n, "channel": channel or cfg.report.channel,
            })}
        )
    # secrets once, at the start; passed on, never logged
    urls = secrets.resolve_source_urls(cfg)
    token = None if dry_run else secrets.resolve_slack_token()
    if not dry_run and token is None:
        logger.warning("no Slack credentials (SLACK_BOT_TOKEN or Secret block 'slack-bot-token'): dry run")

    end = as_of_end(as_of)
    sources = extract.open_sources(urls)
    try:
        check_schema_task(cfg, sources)
        entities, aggregates = extract_task(cfg, sources, end)
    finally:
        sources.dispose()
    milestones, stats = assemble(cfg, entities, aggregates)
    result = compute_task(cfg, entities, milestones, as_of)
    quality = validate_task(cfg, entities, milestones, stats, result, as_of)

    channel_name = cfg.report.channel
    report = Report(cfg.name, result, quality, Delivery(channel_name, "dry_run"))
    if quality.status == "failed":
        report = replace(report, delivery=Delivery(channel_name, "skipped"))
    elif token is not None:
        try:
            delivery = publish_task(token, report, flow_run.ui_url)
        except DeliveryError as exc:
            report = replace(report, delivery=Delivery(channel_name, "failed"))
            _finish(report, report_json)
            raise DeliveryError(exc.problems, report) from None
        report = replace(report, delivery=delivery)
    _finish(report, report_json)
    if quality.status == "failed":
        failed = [f"{c.name} ({c.target}): {c.observed}" for c in quality.failed if c.severity == "error"]
        raise QualityGateError(["data-quality gate failed; digest not published:", *failed], report)
    logger.info(
        "as_of %s: lowest converting %s; quality %s; delivery %s",
        as_of, ", ".join(result.lowest_converting) or "(none)", quality.status, report.delivery.status,
    )
    return report


def _finish(report: Report, report_json: str | None) -> None:
    text = render_text(report, flow_run.ui_url)
    if report_json:
        publish.write_report(report.to_json(), report_json)
    _artifacts(report, text)

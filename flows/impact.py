"""The impact flow: did a change shipped on a date move a step's conversion? Sequencing only.

extract (the steps up to the one measured, from the same sources and with the same tasks
as the daily flow) -> compute (the metric engine's cohort table of the step, reached counted
among those who entered: ``impact.cohort_rows``) -> compare before/after
(``framework.impact``) -> markdown artifact and chart -> optionally a Slack post.
The metric store is not used: the comparison is read from the sources as of ``as_of``.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import Field

from flows.daily import (
    DEFAULT_FRAMEWORK,
    IsoDate,
    _slack_transient,
    prepare,
    read_sources,
    yesterday,
)
from framework import impact
from framework.engine import as_of_end
from framework.errors import RETRY_DELAYS, DeliveryError, GrowthError
from framework.milestones import assemble
from framework.report import CohortRow, Delivery
from tasks import publish, secrets

ARTIFACT_KEY = "growth-impact"
__all__ = ["DEFAULT_FRAMEWORK", "growth_impact", "run_impact"]


@task(name="compute-cohorts", cache_policy=NO_CACHE)
def cohorts_task(cfg, entities, milestones, step: str, as_of: date) -> list[CohortRow]:
    """The step's cohort table (overall and per attribute value) as of ``as_of``: the metric
    engine's, with ``reached`` counted among those who entered (``impact.cohort_rows``)."""
    return impact.cohort_rows(entities, milestones, cfg, step, as_of)


BLIND_RETRY_SAFE = frozenset({"connection_error", "ratelimited"})
"""The reasons after which the impact post (sent without a marker, so never searched for) can
be sent again: no connection was made, or Slack rate-limited it. Not Slack's server errors
(internal_error, fatal_error: the post may have partly happened), unlike the daily digest,
whose retry searches the channel for its marker first."""


@task(
    name="publish-slack-impact", retries=len(RETRY_DELAYS), retry_delay_seconds=list(RETRY_DELAYS),
    retry_condition_fn=_slack_transient,
    cache_policy=NO_CACHE,
)
def publish_impact_task(token: str, result: impact.ImpactResult, channel: str, ui_url: str | None,
                        chart: Path | None) -> tuple[Delivery, DeliveryError | None]:
    """Post the result (chat.postMessage) and its chart into the message's thread. A failure
    where Slack cannot have posted (BLIND_RETRY_SAFE) is raised, so the task is tried again;
    never a server error or a post whose answer was lost (it may be out).
    Slack's refusal of the message is returned, not raised: the flow fails with its one-line
    message; a failed chart upload is a warning (the message is posted)."""
    text, blocks = impact.render_slack_text(result), impact.render_slack_blocks(result, ui_url)
    try:
        delivery, channel_id = publish.deliver(token, channel, text, blocks)
    except DeliveryError as exc:
        if exc.reason in BLIND_RETRY_SAFE:
            raise
        return Delivery(channel, "failed"), exc
    if chart is not None and delivery.ts:
        try:
            publish.upload_chart(token, channel_id or channel, delivery.ts, chart,
                                 f"{result.step}: conversion by cohort around {result.change_date}")
        except DeliveryError as exc:  # the message is posted; the chart is a bonus
            get_run_logger().warning("the impact chart could not be uploaded: %s", exc)
    return delivery, None


def _flow_run_name() -> str:
    params = flow_run.parameters
    return f"growth-impact-{params.get('step')}-{params.get('change_date')}"


def run_impact(
    framework_path: str,
    step: str,
    change_date: date,
    before_cohorts: int = 3,
    after_cohorts: int = 3,
    segment: str | None = None,
    as_of: date | None = None,
    dry_run: bool = True,
    channel: str | None = None,
) -> impact.ImpactResult:
    """The flow's body (inside a flow run): raises GrowthError for the user's mistakes."""
    logger = get_run_logger()
    today = yesterday() + timedelta(days=1)
    as_of = as_of or yesterday()
    inputs = prepare(framework_path, channel)
    cfg = inputs.cfg
    selection = impact.check_request(cfg, step, change_date, as_of, segment, before_cohorts, after_cohorts,
                                     today=today)
    token = None if dry_run else secrets.resolve_slack_token()
    if not dry_run and token is None:
        logger.warning("no Slack credentials (SLACK_BOT_TOKEN or Secret block 'slack-bot-token'): dry run")

    needed = impact.impact_config(cfg, step, selection)
    urls = {name: url for name, url in inputs.urls.items() if name in _sources_used(needed)}
    entities, aggregates = read_sources(needed, urls, as_of_end(as_of), {}, inputs.extract_timeout)
    milestones, _stats = assemble(needed, entities, aggregates)
    rows = cohorts_task(needed, entities, milestones, step, as_of)
    result = impact.analyze(needed, step, selection, rows, segment)  # pure; its UsageError fails the run

    with tempfile.TemporaryDirectory(prefix="growth-impact-") as scratch:  # the chart: an artifact, a post
        chart = _render_chart(result, Path(scratch))
        chart_url = None
        if chart is not None:
            chart_url = "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode("ascii")
            create_image_artifact(image_url=chart_url, key=f"{ARTIFACT_KEY}-chart",
                                  description=f"Conversion of {step} by cohort around {change_date}")
        create_markdown_artifact(markdown=impact.render_markdown(result, chart_url), key=ARTIFACT_KEY,
                                 description=f"Impact of the change on {change_date} on {step}: {result.verdict}")

        target = channel or cfg.report.channel
        delivery = Delivery(target, "dry_run")
        if token is not None:
            try:
                delivery, error = publish_impact_task(token, result, target, flow_run.ui_url, chart)
            except DeliveryError as exc:  # transient, and still failing after the task's retries
                delivery, error = Delivery(target, "failed"), exc
            if error is not None:  # the result goes with the error: the CLI still prints and writes it
                raise DeliveryError(error.problems, replace(result, delivery=delivery), error.reason)
    result = replace(result, delivery=delivery)
    logger.info("impact of %s on %s: %s", change_date, step, result.summary)
    return result


def _sources_used(cfg) -> set[str]:
    return {cfg.entity.source} | {s.source for s in cfg.tracked_steps[1:] if s.source}


def _render_chart(result: impact.ImpactResult, directory: Path) -> Path | None:
    from tasks.impact_chart import render_impact_chart

    try:
        return render_impact_chart(result, directory / "impact.png")
    except Exception as exc:  # noqa: BLE001 - a chart is never worth failing the analysis
        get_run_logger().warning("the impact chart could not be drawn: %s", exc)
        return None


@flow(name="growth-impact", flow_run_name=_flow_run_name, validate_parameters=True)
def growth_impact(
    framework_path: str,
    step: str,
    change_date: IsoDate,
    before_cohorts: Annotated[int, Field(ge=1, le=impact.MAX_COHORTS)] = 3,
    after_cohorts: Annotated[int, Field(ge=1, le=impact.MAX_COHORTS)] = 3,
    segment: str | None = None,
    as_of: IsoDate | None = None,
    dry_run: bool = True,
    channel: str | None = None,
) -> impact.ImpactResult:
    """Did the change shipped on change_date move the step? Mature cohorts before against after.

    Args:
        framework_path: The framework file (YAML) describing sources and steps.
        step: The key of the tracked step whose conversion the change was meant to move.
        change_date: The day the change shipped (UTC): entities created on or after it are "after".
        before_cohorts: How many mature cohorts just before the change to compare against.
        after_cohorts: How many mature cohorts from the change on are needed (fewer: "too early").
        segment: Also compare per value of this entity attribute (Bonferroni-corrected).
        as_of: The data's last day (UTC), which decides what is mature; at most yesterday.
            Empty means yesterday.
        dry_run: Post nothing to Slack; the result goes to the run's artifacts only.
        channel: Slack channel for the post; empty means the framework file's report.channel.
    """
    try:
        return run_impact(framework_path, step, change_date, before_cohorts, after_cohorts, segment,
                          as_of, dry_run, channel)
    except GrowthError as exc:
        # a failed run with the error's one clear message (no traceback in the log); the
        # caller of the flow receives the error itself (the CLI maps it to its exit status)
        return Failed(message="; ".join(exc.problems), data=exc)

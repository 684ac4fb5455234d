"""Prefect events a digest run emits, so Prefect automations can react to them.

``growth.digest.completed``: the run finished; the payload names the lowest-converting steps
(with their numbers), the data-quality and delivery status and the run's UI link.
``growth.digest.failed``: the run ended Failed; the payload carries the state message (the
reason, one line first). Both concern the resource ``growth.framework.<framework slug>`` and
are related to the flow run, so an automation can match either
``{"prefect.resource.id": "growth.framework.*"}`` or a single framework.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from framework.report import Report, slug

log = logging.getLogger("growth.events")

COMPLETED = "growth.digest.completed"
FAILED = "growth.digest.failed"


def framework_resource(name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"growth.framework.{slug(name)}", "prefect.resource.name": name}


def completed_payload(report: Report, ui_url: str | None) -> dict[str, Any]:
    """The lowest-converting steps in rank order, with the numbers an automation may test
    (the JSON report's values: rates as fractions rounded to 6 decimals)."""
    data = report.to_dict()
    steps = {s["key"]: s for s in data["steps"]}
    fields = ("key", "name", "conversion", "entered", "reached", "delta_pp", "p_value", "opportunity")
    lowest = [{f: steps[key][f] for f in fields} for key in data["lowest_converting"]]
    return {
        "framework": report.framework,
        "as_of": data["as_of"],
        "lowest_converting": lowest,
        "data_quality": report.data_quality.status,
        "failed_checks": [c.name for c in report.data_quality.failed],
        "delivery": report.delivery.status,
        "channel": report.delivery.channel,
        "flow_run_url": ui_url,
    }


def _flow_run_related(flow_run_id: object) -> list[dict[str, str]]:
    if not flow_run_id:
        return []
    return [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}]


def digest_completed(report: Report, ui_url: str | None, flow_run_id: object = None) -> None:
    from prefect.events import emit_event

    emit_event(
        event=COMPLETED, resource=framework_resource(report.framework),
        related=_flow_run_related(flow_run_id), payload=completed_payload(report, ui_url),
    )


def _framework_name(path: str) -> str:
    """The framework's name for the failure event; the file's stem when it cannot be read."""
    from framework.config import load_config

    try:
        return load_config(Path(path)).name
    except Exception:  # noqa: BLE001 - the file may be the very reason the run failed
        return Path(path).stem


def digest_failed(flow, flow_run, state) -> None:
    """Flow ``on_failure`` hook: emit ``growth.digest.failed`` with the state's message."""
    from prefect.events import emit_event
    from prefect.settings import get_current_settings

    try:
        params = dict(flow_run.parameters or {})
        as_of = params.get("as_of") or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        framework_path = str(params.get("framework_path") or "")
        ui = get_current_settings().ui_url
        emit_event(
            event=FAILED,
            resource=framework_resource(_framework_name(framework_path)),
            related=_flow_run_related(flow_run.id),
            payload={
                "as_of": str(as_of),
                "framework_path": framework_path,
                "reason": state.message,
                "flow_run_url": f"{ui}/flow-runs/flow-run/{flow_run.id}" if ui else None,  # as prefect.runtime
            },
        )
    except Exception as exc:  # noqa: BLE001 - a hook must never mask the run's own failure
        log.warning("could not emit %s: %s", FAILED, exc)

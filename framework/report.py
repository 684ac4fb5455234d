"""The run report: typed models and their JSON form (contract: shared/specs/cli-and-report.md).

All rates are fractions rounded to 6 decimals, counts are ints, absent values
are None (JSON null). Keys follow the contract; a few are added (never renamed).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

QualityStatus = Literal["passed", "warned", "failed"]
DeliveryStatus = Literal["posted", "updated", "dry_run", "skipped", "failed"]

DECIMALS = 6


def slug(name: str) -> str:
    """A framework's name as a key: lower case, every character other than a letter or digit a
    '-', no '-' at either end ("Prefect Growth Framework" -> prefect-growth-framework).
    Artifact keys, Data Docs directories and event resource ids use it."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _round(value: Any, significant: frozenset[str] = frozenset()) -> Any:
    """Floats to DECIMALS decimals (NaN and infinities to None), through dicts and lists; the
    values of keys in ``significant`` to DECIMALS significant figures instead (a p-value of
    3e-12 must not read as 0)."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, DECIMALS)
    if isinstance(value, dict):
        return {
            k: float(f"{v:.{DECIMALS}g}") if k in significant and isinstance(v, float) and math.isfinite(v)
            else _round(v, significant)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_round(v, significant) for v in value]
    return value


@dataclass(frozen=True)
class Period:
    """A half-open range of signup dates: ``start`` inclusive, ``end`` exclusive."""

    start: str
    end: str
    entities: int


@dataclass(frozen=True)
class TrendPoint:
    """The step's conversion in one stored run (one as_of), oldest first in ``StepResult.trend``."""

    as_of: str
    conversion: float | None


@dataclass(frozen=True)
class StepResult:
    """One framework step, current period, overall population."""

    key: str
    name: str
    position: int
    tracked: bool
    qualifying: bool
    entered: int | None = None
    reached: int | None = None
    conversion: float | None = None
    overall_conversion: float | None = None
    lost: int | None = None
    median_hours: float | None = None
    p90_hours: float | None = None
    previous_conversion: float | None = None
    delta_pp: float | None = None
    p_value: float | None = None
    target: float | None = None
    opportunity: float | None = None
    previous_entered: int | None = None
    previous_reached: int | None = None
    conversion_7_runs_ago: float | None = None
    conversion_28_runs_ago: float | None = None
    trend: tuple[TrendPoint, ...] = ()


@dataclass(frozen=True)
class CohortRow:
    """Grain: one row per cohort period x segment value (overall: None/None) x tracked step."""

    cohort: str
    segment: str | None
    value: str | None
    mature: bool
    step: str
    entered: int
    reached: int
    conversion: float | None


@dataclass(frozen=True)
class SegmentRow:
    """Grain: one row per attribute x value x tracked step, current period."""

    segment: str
    value: str
    step: str
    entered: int
    reached: int
    conversion: float | None


@dataclass(frozen=True)
class QualityCheck:
    name: str
    target: str
    severity: Literal["error", "warn"]
    success: bool
    observed: str


@dataclass(frozen=True)
class DataQuality:
    status: QualityStatus
    checks: list[QualityCheck] = field(default_factory=list)

    @staticmethod
    def from_checks(checks: list[QualityCheck]) -> DataQuality:
        if any(not c.success and c.severity == "error" for c in checks):
            status: QualityStatus = "failed"
        elif any(not c.success for c in checks):
            status = "warned"
        else:
            status = "passed"
        return DataQuality(status=status, checks=list(checks))

    @property
    def failed(self) -> list[QualityCheck]:
        return [c for c in self.checks if not c.success]


@dataclass(frozen=True)
class Delivery:
    channel: str
    status: DeliveryStatus
    ts: str | None = None


@dataclass(frozen=True)
class FunnelResult:
    """Everything the metric engine computes for one as_of."""

    as_of: str
    mode: str
    window_days: int
    entity: str
    current_period: Period
    previous_period: Period
    steps: list[StepResult]
    cohorts: list[CohortRow]
    segments: list[SegmentRow]
    ranking: list[str]
    lowest_converting: list[str]
    qualifying: list[str]
    untracked: list[dict[str, str]]


@dataclass(frozen=True)
class Report:
    framework: str
    result: FunnelResult
    data_quality: DataQuality
    delivery: Delivery

    def step(self, key: str) -> StepResult:
        for s in self.result.steps:
            if s.key == key:
                return s
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        out: dict[str, Any] = {
            "framework": self.framework,
            "as_of": r.as_of,
            "mode": r.mode,
            "window_days": r.window_days,
            "entity": r.entity,
            "current_period": asdict(r.current_period),
            "previous_period": asdict(r.previous_period),
            "steps": [asdict(s) for s in r.steps],
            "cohorts": [asdict(c) for c in r.cohorts],
            "segments": [asdict(s) for s in r.segments],
            "lowest_converting": list(r.lowest_converting),
            "ranking": list(r.ranking),
            "qualifying": list(r.qualifying),
            "untracked": [dict(u) for u in r.untracked],
            "data_quality": {
                "status": self.data_quality.status,
                "checks": [asdict(c) for c in self.data_quality.checks],
            },
            "delivery": asdict(self.delivery),
        }
        return _round(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def report_from_dict(data: dict) -> Report:
    """The framework.report.Report of a stored report dict (``MetricStore.load_report``),
    for re-sending a stored digest. Keys the models do not have are ignored."""
    def build(cls, values: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    steps = []
    for s in data.get("steps", []):
        trend = tuple(build(TrendPoint, t) for t in s.get("trend") or ())
        steps.append(build(StepResult, {**s, "trend": trend}))
    quality = data.get("data_quality") or {}
    delivery = data.get("delivery") or {}
    result = FunnelResult(
        as_of=data["as_of"],
        mode=data.get("mode", "independent"),
        window_days=data.get("window_days", 0),
        entity=data.get("entity", "entity"),
        current_period=build(Period, {"entities": 0, **data["current_period"]}),
        previous_period=build(Period, {"entities": 0, **data["previous_period"]}),
        steps=steps,
        cohorts=[build(CohortRow, c) for c in data.get("cohorts", [])],
        segments=[build(SegmentRow, c) for c in data.get("segments", [])],
        ranking=list(data.get("ranking", data.get("lowest_converting", []))),
        lowest_converting=list(data.get("lowest_converting", [])),
        qualifying=list(data.get("qualifying", [])),
        untracked=[dict(u) for u in data.get("untracked", [])],
    )
    checks = [build(QualityCheck, c) for c in quality.get("checks", [])]
    return Report(
        framework=data["framework"],
        result=result,
        data_quality=DataQuality(status=quality.get("status", "passed"), checks=checks),
        delivery=Delivery(channel=delivery.get("channel", "#growth"), status=delivery.get("status", "dry_run"),
                          ts=delivery.get("ts")),
    )

"""The growth digest: terminal text, Slack Block Kit (as plain dicts) and the quality alert.

Pure and deterministic: stdlib and ``framework.*`` only, no clock, no I/O.

Conventions (documented for the growth team):

* Rates are shown as percentages with one decimal (0.382 -> ``38.2%``), counts
  with thousands separators (``1,234``); absent values as ``—``.
* Changes are percentage points against the previous period, with an arrow:
  ``▲`` up, ``▼`` down, ``▶`` unchanged at one decimal. A change is
  *significant* when the two-proportion test gives ``p < 0.05``.
* Periods are half-open in the report (``end`` exclusive) and shown inclusive:
  ``start`` to ``end - 1 day``.
* Median time to convert: minutes below one hour, hours below one day, else days.
* Opportunity is rounded to a whole number of entities.
* Every data-derived string placed in Slack mrkdwn (including the fallback
  notification text) goes through :func:`escape_mrkdwn`, so ``<!channel>`` in
  a step name cannot mention anyone. Plain-text fields (the header) are not
  parsed for mentions by Slack and are not escaped.
* Slack limits are respected by construction and checked again at the end:
  at most 50 blocks, 3,000 characters per section text, 150 per header, 75 per
  button label. Long content is truncated with ``…`` and ``… and N more steps``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from framework.report import Period, QualityCheck, Report, StepResult
from framework.trend import TREND_RUNS, sparkline

__all__ = [
    "MAX_BLOCKS",
    "MAX_HEADER_CHARS",
    "MAX_TEXT_CHARS",
    "SIGNIFICANCE",
    "escape_markdown_cell",
    "escape_mrkdwn",
    "fallback_text",
    "fmt_count",
    "fmt_delta_pp",
    "fmt_duration",
    "fmt_pct",
    "markdown_code_block",
    "render_blocks",
    "render_quality_alert_blocks",
    "render_quality_alert_text",
    "render_text",
]

MAX_BLOCKS = 50
MAX_TEXT_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_BUTTON_CHARS = 75
MAX_URL_CHARS = 3000
SIGNIFICANCE = 0.05
DASH = "—"
ELLIPSIS = "…"
FAILED_BANNER = "DATA QUALITY FAILED — digest not published"

# Widths of step names: terminal table, Slack monospace table, prose.
TEXT_NAME_WIDTH = 48
BLOCK_NAME_WIDTH = 24
PROSE_NAME_WIDTH = 120
CHECK_FIELD_WIDTH = 300


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal: 0.382 -> '38.2%'; None -> '—'."""
    if value is None:
        return DASH
    text = f"{value * 100:.1f}"
    if text == "-0.0":
        text = "0.0"
    return f"{text}%"


def fmt_count(value: int | float | None) -> str:
    """An integer count with thousands separators: 1234 -> '1,234'; None -> '—'."""
    if value is None:
        return DASH
    return f"{int(value):,}"


def _round1(value: float) -> float:
    rounded = round(value, 1)
    return 0.0 if rounded == 0 else rounded


def fmt_delta_pp(delta_pp: float | None) -> str:
    """Signed points with one decimal: 4.0 -> '+4.0', -3.14 -> '-3.1', ~0 -> '0.0'."""
    if delta_pp is None:
        return DASH
    rounded = _round1(delta_pp)
    return "0.0" if rounded == 0 else f"{rounded:+.1f}"


def _arrow(delta_pp: float) -> str:
    rounded = _round1(delta_pp)
    if rounded > 0:
        return "▲"
    if rounded < 0:
        return "▼"
    return "▶"


def fmt_duration(hours: float | None) -> str:
    """Human time: '42 min' below an hour, '5.3 h' below a day, else '3.1 d'."""
    if hours is None:
        return DASH
    minutes = round(hours * 60)
    if minutes < 1:
        return "<1 min"
    if minutes < 60:
        return f"{minutes} min"
    if round(hours, 1) < 24:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def _fmt_p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def plural(noun: str, count: float = 2) -> str:
    if count == 1:
        return noun
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if len(noun) > 1 and noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def truncate(text: str, width: int) -> str:
    """At most ``width`` characters, ending in '…' when cut; newlines flattened."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)].rstrip() + ELLIPSIS


def period_label(period: Period) -> str:
    """'2026-10-03 to 2026-10-30' for the half-open [2026-10-03, 2026-10-31)."""
    try:
        last = date.fromisoformat(period.end) - timedelta(days=1)
    except ValueError:
        return f"{period.start} to before {period.end}"
    return f"{period.start} to {last.isoformat()}"


def escape_mrkdwn(text: str) -> str:
    """Escape Slack's control characters (&, <, >) so data cannot mention or link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code_safe(text: str) -> str:
    """Text safe inside a ``` block: no backticks that could close it."""
    return text.replace("`", "'")


# --------------------------------------------------------------------------- report access


def _steps_by_key(report: Report) -> dict[str, StepResult]:
    return {s.key: s for s in report.result.steps}


def _lowest(report: Report) -> list[StepResult]:
    by_key = _steps_by_key(report)
    return [by_key[k] for k in report.result.lowest_converting if k in by_key]


def _qualifying(report: Report) -> list[StepResult]:
    keys = set(report.result.qualifying)
    return [s for s in report.result.steps if s.key in keys or s.qualifying]


def _untracked(report: Report) -> list[tuple[StepResult, str]]:
    proposed = {u.get("key", ""): u.get("proposed_metric", "") for u in report.result.untracked}
    return [(s, proposed.get(s.key, "")) for s in report.result.steps if not s.tracked]


def _last_tracked(report: Report) -> StepResult | None:
    tracked = [s for s in report.result.steps if s.tracked]
    return tracked[-1] if tracked else None


def _no_ranking_reason(report: Report) -> str:
    entities = plural(report.result.entity)
    rankable = [s for s in report.result.steps if s.tracked and s.position > 1 and not s.qualifying]
    if not rankable:
        return (
            "No step qualifies for ranking: there is no tracked, non-qualifying step after signup."
        )
    return (
        "No step qualifies for ranking: every tracked step had too few "
        f"{entities} entering it in the current period (below the minimum sample) "
        "or no conversion."
    )


def _rank_of(report: Report) -> dict[str, int]:
    return {key: i for i, key in enumerate(report.result.lowest_converting, start=1)}


# --------------------------------------------------------------------------- phrases


def _delta_phrase(step: StepResult) -> str:
    if step.delta_pp is None:
        return "no previous-period conversion to compare"
    rounded = _round1(step.delta_pp)
    text = f"{_arrow(step.delta_pp)} {abs(rounded):.1f} pp vs previous period"
    if step.p_value is None:
        return text
    if step.p_value < SIGNIFICANCE:
        return f"{text} (significant, {_fmt_p(step.p_value)})"
    return f"{text} (not significant, {_fmt_p(step.p_value)})"


def _flow_phrase(step: StepResult, entity: str) -> str:
    head = f"{fmt_count(step.entered)} → {fmt_count(step.reached)} {plural(entity)}"
    if step.lost is None:
        return head
    if step.lost >= 0:
        return f"{head}, {fmt_count(step.lost)} lost"
    return f"{head}, {fmt_count(-step.lost)} more reached than entered (non-linear journeys)"


def _time_phrase(step: StepResult) -> str:
    if step.median_hours is None:
        return "median time to convert: n/a"
    return f"median time to convert {fmt_duration(step.median_hours)}"


def _opportunity_phrase(report: Report, step: StepResult, name_width: int) -> str:
    if step.target is None:
        return "opportunity: no target (none configured, no mature cohort to compare)"
    target = fmt_pct(step.target)
    if step.opportunity is None:
        return f"opportunity: n/a (target {target})"
    if step.conversion is not None and step.conversion >= step.target:
        return f"already at or above its {target} target"
    last = _last_tracked(report)
    last_name = truncate(last.name, name_width) if last is not None else "the last step"
    entity = report.result.entity
    whole = int(step.opportunity + 0.5)
    if whole == 0 and step.opportunity > 0:
        return f"<1 more {entity} would reach {last_name} if this step hit {target}"
    amount = f"+{fmt_count(whole)} {plural(entity, whole)}"
    verb = "reaches" if whole == 1 else "reach"
    return f"{amount} {verb} {last_name} if this step hit {target}"


def _step_lines(report: Report, step: StepResult, rank: int, name_width: int) -> list[str]:
    """Title and detail lines of one lowest-converting step (raw text, not escaped)."""
    entity = report.result.entity
    title = (
        f"{rank}. Step {step.position} · {truncate(step.name, name_width)} — "
        f"{fmt_pct(step.conversion)}"
    )
    return [
        title,
        _delta_phrase(step),
        f"{_flow_phrase(step, entity)} · {_time_phrase(step)}",
        _opportunity_phrase(report, step, name_width),
    ]


def _check_line(check: QualityCheck) -> str:
    return (
        f"{truncate(check.name, CHECK_FIELD_WIDTH)} ({check.severity}) — observed: "
        f"{truncate(check.observed, CHECK_FIELD_WIDTH)}; target: "
        f"{truncate(check.target, CHECK_FIELD_WIDTH)}"
    )


def _failed_checks(report: Report) -> tuple[list[QualityCheck], list[QualityCheck]]:
    failed = report.data_quality.failed
    errors = [c for c in failed if c.severity == "error"]
    warns = [c for c in failed if c.severity != "error"]
    return errors, warns


def _quality_summary(report: Report) -> str:
    dq = report.data_quality
    total = len(dq.checks)
    n_failed = len(dq.failed)
    if n_failed == 0:
        return f"Data quality: {dq.status} ({total} {plural('check', total)}, all passed)"
    return f"Data quality: {dq.status} ({n_failed} of {total} {plural('check', total)} failed)"


def _delivery_line(report: Report) -> str:
    d = report.delivery
    channel = d.channel or "(no channel)"
    if d.status == "dry_run":
        return f"Delivery: dry run — not posted to {channel}"
    if d.status == "posted":
        return f"Delivery: posted to {channel}" + (f" (ts {d.ts})" if d.ts else "")
    if d.status == "updated":
        return f"Delivery: updated the message in {channel}" + (f" (ts {d.ts})" if d.ts else "")
    if d.status == "skipped":
        return f"Delivery: skipped — the data-quality gate blocked posting to {channel}"
    if d.status == "failed":
        return f"Delivery: FAILED to post to {channel} (the metrics are stored)"
    return f"Delivery: {d.status} ({channel})"


def _period_lines(report: Report) -> tuple[str, str]:
    r = report.result
    entities = plural(r.entity)
    cur, prev = r.current_period, r.previous_period
    return (
        f"Current period: signups {period_label(cur)}, "
        f"{fmt_count(cur.entities)} {plural(r.entity, cur.entities)}",
        f"Previous period: signups {period_label(prev)}, "
        f"{fmt_count(prev.entities)} {entities if prev.entities != 1 else r.entity}",
    )


# --------------------------------------------------------------------------- funnel table


def _table(report: Report, name_width: int, compact: bool) -> list[str]:
    """Aligned rows of the whole funnel (raw text). ``compact`` for Slack on a phone."""
    ranks = _rank_of(report)
    untracked = dict((s.key, m) for s, m in _untracked(report))
    names: list[str] = []
    for s in report.result.steps:
        if compact:
            suffix = " (q)" if s.qualifying else (f" ◀{ranks[s.key]}" if s.key in ranks else "")
        else:
            suffix = " (qualifying)" if s.qualifying else ""
        base = truncate(s.name, max(4, name_width - len(suffix)))
        names.append(base + suffix)
    width = max([len("Step")] + [len(n) for n in names])
    pos_w = max([1] + [len(str(s.position)) for s in report.result.steps])

    if compact:
        headers = ["Reached", "Conv", "Overall", "Δpp"]
    else:
        headers = ["Entered", "Reached", "Conv", "Overall", "Δpp"]
    with_trend = any(len(s.trend) > 1 for s in report.result.steps)
    if with_trend:
        headers += ["Trend"] if compact else ["7 runs ago", "28 runs ago", "Trend"]
    cells: list[list[str] | None] = []
    for s in report.result.steps:
        if not s.tracked:
            cells.append(None)
            continue
        row = [
            fmt_count(s.reached),
            fmt_pct(s.conversion),
            fmt_pct(s.overall_conversion),
            fmt_delta_pp(s.delta_pp),
        ]
        if not compact:
            row.insert(0, fmt_count(s.entered))
        if with_trend:
            line_ = sparkline([p.conversion for p in s.trend]).ljust(TREND_RUNS)
            row += [line_] if compact else [fmt_pct(s.conversion_7_runs_ago), fmt_pct(s.conversion_28_runs_ago), line_]
        cells.append(row)
    widths = [len(h) for h in headers]
    for row in cells:
        if row is not None:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(pos: str, name: str, values: list[str]) -> str:
        nums = "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        return f"{pos.rjust(pos_w)} {name.ljust(width)}  {nums}".rstrip()

    out = [line("#", "Step", headers)]
    for s, name, row in zip(report.result.steps, names, cells, strict=True):
        if row is None:
            if compact:
                out.append(f"{str(s.position).rjust(pos_w)} {name.ljust(width)}  untracked")
            else:
                metric = truncate(untracked.get(s.key, "") or "none proposed", PROSE_NAME_WIDTH)
                out.append(
                    f"{str(s.position).rjust(pos_w)} {name.ljust(width)}  "
                    f"untracked — proposed metric: {metric}"
                )
            continue
        text = line(str(s.position), name, row)
        if not compact and s.key in ranks:
            text += f"  ◀ lowest #{ranks[s.key]}"
        out.append(text)
    return out


# --------------------------------------------------------------------------- text digest


def render_text(report: Report, ui_url: str | None = None) -> str:
    """The terminal / dry-run digest, as a growth analyst reads it."""
    r = report.result
    out: list[str] = []
    errors, warns = _failed_checks(report)
    if report.data_quality.status == "failed":
        out += [FAILED_BANNER, "=" * len(FAILED_BANNER)]
        out += [f"  ✗ {_check_line(c)}" for c in errors]
        out.append("")

    out.append(f"{report.framework} — growth digest for {r.as_of}")
    out.append(f"Mode: {r.mode} · window: {r.window_days} days · entity: {r.entity}")
    out += list(_period_lines(report))
    out.append("")

    out.append("Lowest-converting steps")
    lowest = _lowest(report)
    if not lowest:
        out.append(f"  {_no_ranking_reason(report)}")
    for rank, step in enumerate(lowest, start=1):
        lines = _step_lines(report, step, rank, PROSE_NAME_WIDTH)
        out.append(f"  {lines[0]}")
        out += [f"     {x}" for x in lines[1:]]
    out.append("")

    out.append("The whole funnel")
    out += [f"  {x}" for x in _table(report, TEXT_NAME_WIDTH, compact=False)]
    out.append("")

    out.append("Qualifying steps (intentional cliffs)")
    qualifying = _qualifying(report)
    if not qualifying:
        out.append("  none")
    for s in qualifying:
        out.append(
            f"  Step {s.position} · {truncate(s.name, PROSE_NAME_WIDTH)} — {_qualifying_numbers(s, r.entity)}"
        )
    out.append("")

    out.append("Untracked steps")
    untracked = _untracked(report)
    if not untracked:
        out.append("  none")
    for s, metric in untracked:
        metric = truncate(metric, PROSE_NAME_WIDTH) if metric else "none proposed"
        out.append(
            f"  Step {s.position} · {truncate(s.name, PROSE_NAME_WIDTH)} — proposed metric: {metric}"
        )
    out.append("")

    out.append(_quality_summary(report))
    out += [f"  ✗ {_check_line(c)}" for c in errors]
    if warns:
        out.append(f"  Warnings ({len(warns)}): the numbers stand; read them with these")
    out += [f"  ! {_check_line(c)}" for c in warns]
    out.append(_delivery_line(report))
    if ui_url:
        out.append(f"Flow run: {ui_url}")
    return "\n".join(out) + "\n"


def _qualifying_numbers(step: StepResult, entity: str) -> str:
    if not step.tracked:
        return "untracked"
    return f"{fmt_pct(step.conversion)} · {_flow_phrase(step, entity)} · Δ {fmt_delta_pp(step.delta_pp)} pp"


# --------------------------------------------------------------------------- Block Kit


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Last-resort cut to ``limit`` characters without splitting an &entity; or a code block."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.count("```") % 2 == 1:
        cut = cut[: max(0, limit - 5)]
        amp = cut.rfind("&")
        if amp != -1 and ";" not in cut[amp:]:
            cut = cut[:amp]
        return cut + ELLIPSIS + "\n```"
    return cut + ELLIPSIS


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def _fit_lines(head: str, lines: list[str], noun: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``head`` + as many ``lines`` as fit in ``limit`` + '… and N more <noun>s'."""
    taken: list[str] = []
    size = len(head)
    for i, item in enumerate(lines):
        rest = len(lines) - i - 1
        reserve = len(f"\n… and {rest} more {plural(noun)}") if rest else 0
        if size + 1 + len(item) + reserve > limit:
            break
        taken.append(item)
        size += 1 + len(item)
    text = "\n".join([head, *taken])
    if len(taken) < len(lines):
        n = len(lines) - len(taken)
        text += f"\n… and {n} more {plural(noun, n)}"
    return text


def _header_block(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_CHARS), "emoji": True},
    }


def _header_text(prefix: str, report: Report, suffix: str) -> str:
    fixed = len(prefix) + len(suffix)
    name = truncate(report.framework, max(10, MAX_HEADER_CHARS - fixed))
    return truncate(f"{prefix}{name}{suffix}", MAX_HEADER_CHARS)


def _context_block(texts: list[str]) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(t)} for t in texts[:10]],
    }


def _actions_block(ui_url: str | None) -> dict[str, Any] | None:
    if not ui_url or len(ui_url) > MAX_URL_CHARS:
        return None
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open the flow run", "emoji": True},
                "url": ui_url,
                "action_id": "open_flow_run",
            }
        ],
    }


def _population_context(report: Report) -> dict[str, Any]:
    cur, prev = _period_lines(report)
    r = report.result
    return _context_block(
        [
            escape_mrkdwn(f"{cur} · {prev}"),
            escape_mrkdwn(f"Mode {r.mode} · {r.window_days}-day window"),
        ]
    )


def _quality_block_text(report: Report) -> str:
    dq = report.data_quality
    icon = {"passed": ":white_check_mark:", "warned": ":warning:", "failed": ":x:"}.get(
        dq.status, ":grey_question:"
    )
    errors, warns = _failed_checks(report)
    lines = [f"• ✗ {escape_mrkdwn(_check_line(c))}" for c in errors]
    if warns:
        lines.append(f"*Warnings ({len(warns)})*: the numbers stand; read them with these")
    lines += [f"• ! {escape_mrkdwn(_check_line(c))}" for c in warns]
    return _fit_lines(f"{icon} *{escape_mrkdwn(_quality_summary(report))}*", lines, "check")


def render_blocks(report: Report, ui_url: str | None = None) -> list[dict[str, Any]]:
    """The Slack digest as Block Kit dicts (JSON-serialisable, within Slack's limits)."""
    r = report.result
    head: list[dict[str, Any]] = [
        _header_block(_header_text("", report, f" · growth digest {r.as_of}")),
        _population_context(report),
    ]
    if report.data_quality.status == "failed":
        errors, _ = _failed_checks(report)
        lines = [f"• {escape_mrkdwn(_check_line(c))}" for c in errors]
        head.append(_section(_fit_lines(f":rotating_light: *{FAILED_BANNER}*", lines, "check")))

    # Everything after the lowest steps: funnel, qualifying, untracked, quality, actions.
    tail: list[dict[str, Any]] = [{"type": "divider"}, _section(_funnel_text(report))]
    qualifying = _qualifying(report)
    if qualifying:
        lines = [
            f"• Step {s.position} · *{escape_mrkdwn(truncate(s.name, PROSE_NAME_WIDTH))}* — "
            f"{escape_mrkdwn(_qualifying_numbers(s, r.entity))}"
            for s in qualifying
        ]
        tail.append(_section(_fit_lines("*Qualifying steps (intentional cliffs)*", lines, "step")))
    untracked = _untracked(report)
    if untracked:
        lines = [
            f"• Step {s.position} · *{escape_mrkdwn(truncate(s.name, PROSE_NAME_WIDTH))}* — "
            f"proposed metric: {escape_mrkdwn(truncate(m, PROSE_NAME_WIDTH) if m else 'none proposed')}"
            for s, m in untracked
        ]
        tail.append(_section(_fit_lines("*Untracked steps*", lines, "step")))
    tail.append(_section(_quality_block_text(report)))
    actions = _actions_block(ui_url)
    if actions is not None:
        tail.append(actions)

    lowest = _lowest(report)
    middle: list[dict[str, Any]] = [_section("*Lowest-converting steps*")]
    if not lowest:
        middle[0] = _section(
            f"*Lowest-converting steps*\n{escape_mrkdwn(_no_ranking_reason(report))}"
        )
    budget = MAX_BLOCKS - len(head) - len(tail) - len(middle)
    shown = lowest if len(lowest) <= budget else lowest[: max(0, budget - 1)]
    for rank, step in enumerate(shown, start=1):
        lines = [escape_mrkdwn(x) for x in _step_lines(report, step, rank, PROSE_NAME_WIDTH)]
        middle.append(_section(f"*{lines[0]}*\n" + "\n".join(lines[1:])))
    if len(shown) < len(lowest):
        n = len(lowest) - len(shown)
        middle.append(_section(f"… and {n} more {plural('step', n)} (see the whole funnel)"))

    blocks = head + middle + tail
    return blocks[:MAX_BLOCKS]


def _funnel_text(report: Report) -> str:
    rows = [escape_mrkdwn(_code_safe(x)) for x in _table(report, BLOCK_NAME_WIDTH, compact=True)]
    legend = "\n_◀n: n-th lowest converting · (q): qualifying · Δpp: vs previous period_"
    head = "*The whole funnel*\n```\n" + rows[0]
    taken: list[str] = []
    for i, row in enumerate(rows[1:], start=1):
        rest = len(rows) - 1 - i
        reserve = len(f"\n… and {rest} more steps") if rest else 0
        size = len(head) + sum(len(x) + 1 for x in taken) + len(row) + 1 + reserve
        if size + len("\n```") + len(legend) > MAX_TEXT_CHARS:
            break
        taken.append(row)
    text = "\n".join([head, *taken])
    missing = len(rows) - 1 - len(taken)
    if missing:
        text += f"\n… and {missing} more {plural('step', missing)}"
    return text + "\n```" + legend


def fallback_text(report: Report) -> str:
    """One-line notification text (Slack mrkdwn-escaped)."""
    r = report.result
    if report.data_quality.status == "failed":
        errors, _ = _failed_checks(report)
        names = ", ".join(truncate(c.name, 60) for c in errors[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        return escape_mrkdwn(
            f"Growth digest {r.as_of} not published: data quality failed ({names}{more})"
        )
    lowest = _lowest(report)
    if lowest:
        parts = ", ".join(f"{truncate(s.name, 60)} {fmt_pct(s.conversion)}" for s in lowest[:5])
        text = f"Growth digest {r.as_of}: lowest converting {parts}"
    else:
        text = f"Growth digest {r.as_of}: no step qualifies for ranking"
    if report.data_quality.status == "warned":
        n = len(report.data_quality.failed)
        text += f" (data quality warned: {n} {plural('check', n)} failed)"
    return escape_mrkdwn(text)


# --------------------------------------------------------------------------- quality alert


def render_quality_alert_text(report: Report, ui_url: str | None = None) -> str:
    """Text of the alert sent instead of the digest when the quality gate fails."""
    r = report.result
    errors, warns = _failed_checks(report)
    out = [
        FAILED_BANNER,
        f"{report.framework} · as of {r.as_of}",
        f"The data-quality gate blocked the growth digest: {len(errors)} "
        f"{plural('check', len(errors))} failed.",
        "Failed checks:",
    ]
    out += [f"  ✗ {_check_line(c)}" for c in errors] or ["  none"]
    if warns:
        out.append("Warnings:")
        out += [f"  ! {_check_line(c)}" for c in warns]
    cur, _ = _period_lines(report)
    out.append(cur)
    if ui_url:
        out.append(f"Flow run: {ui_url}")
    return "\n".join(out) + "\n"


def render_quality_alert_blocks(report: Report, ui_url: str | None = None) -> list[dict[str, Any]]:
    """Block Kit of the quality alert: failed checks with observed values and targets."""
    r = report.result
    errors, warns = _failed_checks(report)
    blocks: list[dict[str, Any]] = [
        _header_block(
            _header_text(":rotating_light: Data quality failed · ", report, f" · {r.as_of}")
        ),
        _section(
            f"*{FAILED_BANNER}*\nThe data-quality gate blocked the growth digest for "
            f"*{escape_mrkdwn(r.as_of)}*: {len(errors)} {plural('check', len(errors))} failed."
        ),
        _section(
            _fit_lines(
                "*Failed checks*",
                [f"• ✗ {escape_mrkdwn(_check_line(c))}" for c in errors] or ["none"],
                "check",
            )
        ),
    ]
    if warns:
        blocks.append(
            _section(
                _fit_lines(
                    "*Warnings*", [f"• ! {escape_mrkdwn(_check_line(c))}" for c in warns], "check"
                )
            )
        )
    blocks.append(_population_context(report))
    actions = _actions_block(ui_url)
    if actions is not None:
        blocks.append(actions)
    return blocks


_MARKDOWN_SPECIAL = frozenset("\\`*_[]|")


def escape_markdown_cell(text: str) -> str:
    """Text from the data inside a markdown table cell: no table breaks, no HTML, no mentions,
    no links, images, emphasis or code (markdown's punctuation is backslash-escaped)."""
    text = "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in str(text))
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("\r", " ").replace("\n", " ")


def markdown_code_block(text: str) -> str:
    """``text`` as a fenced code block whose fence is longer than any run of backticks in it,
    so that text from the data or the framework file (a step name with ```) cannot close it."""
    longest = run = 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def render_quality_markdown(report: Report, data_docs_url: str | None = None) -> str:
    """The data-quality summary (a Prefect markdown artifact): the gate's status, every
    failed or warned check with its observed value, and a link to the run's GX Data Docs."""
    dq = report.data_quality
    lines = [f"**Data quality: {dq.status}** ({len(dq.checks)} {plural('check', len(dq.checks))})", ""]
    flagged = [c for c in dq.checks if not c.success]
    if flagged:
        lines += ["| check | severity | target | observed |", "|---|---|---|---|"]
        lines += [
            f"| {escape_markdown_cell(c.name)} | {c.severity} | {escape_markdown_cell(c.target)} "
            f"| {escape_markdown_cell(c.observed)} |"
            for c in flagged
        ]
    else:
        lines.append("Every check passed.")
    if data_docs_url:
        lines += ["", f"Great Expectations Data Docs: <{data_docs_url}>"]
    return "\n".join(lines)

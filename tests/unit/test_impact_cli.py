"""`growth impact`'s own checks and outputs, without a flow run: the checks that need no
data (exit 2 before Prefect starts) and the files written from a result."""

from __future__ import annotations

from datetime import date

import pytest

import flows.cli
from flows.cli import main
from tests.conftest import DEMO_FRAMEWORK

TODAY = date(2026, 12, 4)


@pytest.fixture()
def today(monkeypatch: pytest.MonkeyPatch) -> date:
    monkeypatch.setattr(flows.cli, "_today", lambda: TODAY)
    return TODAY


def _impact(*extra: str, change_date: str = "2026-07-03") -> list[str]:
    return ["impact", "--framework", str(DEMO_FRAMEWORK), "--step", "first_deployment",
            "--change-date", change_date, "--dry-run", *extra]


@pytest.mark.parametrize("as_of", ["2026-12-04", "2027-01-31"])
def test_an_as_of_after_yesterday_exits_2_before_prefect(today, capsys, as_of: str) -> None:
    assert main(_impact("--as-of", as_of)) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"impact: as_of {as_of} is not a past day (today is 2026-12-04, UTC): its data is not complete "
        "yet; the latest as_of is yesterday, 2026-12-03"
    )


def test_a_change_date_in_the_future_exits_2(today, capsys) -> None:
    assert main(_impact(change_date="2026-12-07")) == 2  # as_of: yesterday
    err = capsys.readouterr().err
    assert err.strip() == ("impact: the change date 2026-12-07 is in the future (today is 2026-12-04, UTC): "
                           "there is nothing to measure yet")


# --------------------------------------------------------------------------- --json and its chart


def _result():
    from framework.config import load_config
    from framework.impact import analyze, check_request
    from framework.report import CohortRow

    cfg = load_config(DEMO_FRAMEWORK)
    sel = check_request(cfg, "first_deployment", date(2026, 7, 3), date(2026, 11, 30))
    counts = {"2026-04": (100, 40), "2026-05": (100, 40), "2026-06": (100, 40), "2026-07": (100, 45),
              "2026-08": (100, 50), "2026-09": (100, 50), "2026-10": (100, 50)}
    rows = [CohortRow(c, None, None, True, "first_deployment", e, r, r / e) for c, (e, r) in counts.items()]
    return analyze(cfg, "first_deployment", sel, rows)


@pytest.mark.parametrize(
    ("name", "chart"),
    [("impact.json", "impact.chart.png"), ("x.png", "x.chart.png"), ("x.PNG", "x.chart.png"),
     ("x.chart.png", "x.chart.chart.png"), ("result", "result.chart.png"), (".json", ".json.chart.png")],
)
def test_the_chart_path_is_a_sibling_never_the_json_path(tmp_path, name: str, chart: str) -> None:
    from flows.cli import impact_chart_path

    got = impact_chart_path(tmp_path / name)
    assert got == tmp_path / chart and got.name.lower() != name.lower()


def _run_impact(monkeypatch, result, tmp_path, json_name: str) -> tuple[int, object]:
    """growth impact with the flow and the source check stood in: the CLI's own handling."""
    import flows.impact

    monkeypatch.setattr(flows.cli, "_preflight", lambda cfg: None)
    monkeypatch.setattr(flows.cli, "_quiet_runtime", lambda: None)
    monkeypatch.setattr(flows.impact, "growth_impact", lambda **kwargs: result)
    out = tmp_path / json_name
    return main(_impact("--as-of", "2026-11-30", "--json", str(out))), out


def test_json_named_png_is_not_overwritten_by_the_chart(monkeypatch, tmp_path, capsys) -> None:
    import json

    result = _result()
    code, out = _run_impact(monkeypatch, result, tmp_path, "x.png")
    assert code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["verdict"] == "improved"
    chart = tmp_path / "x.chart.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert f"result: {out} (chart: {chart})" in capsys.readouterr().err


def test_a_chart_that_fails_is_a_warning_and_the_exit_status_stays(monkeypatch, tmp_path, capsys) -> None:
    import json

    import tasks.impact_chart

    def broken(result, path):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(tasks.impact_chart, "render_impact_chart", broken)
    code, out = _run_impact(monkeypatch, _result(), tmp_path, "impact.json")
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["verdict"] == "improved"
    assert "Verdict: improved" in captured.out
    assert captured.err.strip().splitlines() == [
        f"result: {out}",
        f"warning: the impact chart could not be drawn to {tmp_path / 'impact.chart.png'}: no fonts today",
    ]
    assert not (tmp_path / "impact.chart.png").exists()


def test_an_unwritable_json_path_exits_2_before_the_analysis(today, capsys, tmp_path) -> None:
    # a directory where the JSON file should go: refused in a second, not after the whole run
    assert main(_impact("--json", str(tmp_path))) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("--json") and "Traceback" not in err, err

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

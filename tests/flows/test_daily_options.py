"""The daily flow's run options, on small demo databases: mode and cohort overrides."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from flows.daily import growth_digest
from framework.config import load_config
from tasks.secrets import source_env_var
from tasks.seed import seed_demo
from tasks.store import MetricStore
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
ACCOUNTS = 600
NAME = load_config(DEMO_FRAMEWORK).name


@pytest.fixture(scope="module")
def demo_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("demo")
    urls = {"app": f"sqlite:///{root / 'app.db'}", "events": f"sqlite:///{root / 'events.db'}"}
    seed_demo(urls["app"], urls["events"], accounts=ACCOUNTS, seed=5, end_date=END)
    return urls


@pytest.fixture
def sources(demo_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """The demo sources and a store of the test's own; returns the store URL."""
    for name, url in demo_urls.items():
        monkeypatch.setenv(source_env_var(name), url)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("GROWTH_STORE_URL", store)
    return store


def test_mode_and_cohort_overrides_are_their_own_series_in_the_store(sources: str) -> None:
    as_file = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True)
    assert (as_file.framework, as_file.result.mode) == (NAME, "independent")
    assert all("-W" not in r["cohort"] for r in as_file.to_dict()["cohorts"])

    other = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, mode="ordered", cohort="week")
    assert other.result.mode == "ordered"
    assert other.framework == f"{NAME} (ordered mode, weekly cohorts)"
    assert {r["cohort"][4:6] for r in other.to_dict()["cohorts"]} == {"-W"}
    # the override's numbers did not replace the day's numbers computed the file's way
    with MetricStore.open(sources) as store:
        assert store.load_report(NAME, END)["mode"] == "independent"
        assert store.load_report(other.framework, END)["mode"] == "ordered"
    engine = sa.create_engine(sources)
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("SELECT framework, framework_hash FROM gf_runs")).all())
    engine.dispose()
    assert len(set(hashes.values())) == 2

    # the file's own values given explicitly are no override at all
    same = growth_digest(as_of=END, framework_path=str(DEMO_FRAMEWORK), dry_run=True, mode="independent", cohort="month")
    assert same.framework == NAME and same.result.mode == "independent"

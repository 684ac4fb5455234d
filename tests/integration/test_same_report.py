"""The same demo data loaded into SQLite, PostgreSQL and MariaDB gives the same report,
field by field (steps, cohorts, segments, ranking, quality outcome)."""

from __future__ import annotations

from datetime import date

import pytest

from framework.config import load_config
from framework.engine import as_of_end, compute
from framework.milestones import assemble
from framework.report import DataQuality, Delivery, Report
from tasks import extract
from tasks.quality import run_quality_checks
from tasks.seed import seed_demo
from tests.conftest import DEMO_FRAMEWORK

END = date(2026, 11, 30)
ACCOUNTS, SEED = 1200, 21


def _report(urls: dict[str, str]) -> dict:
    cfg = load_config(DEMO_FRAMEWORK, env={})
    sources = extract.open_sources(urls)
    try:
        extract.check_schema(cfg, sources)
        entities, aggregates = extract.extract_all(cfg, sources, as_of_end(END))
    finally:
        sources.dispose()
    milestones, stats = assemble(cfg, entities, aggregates)
    result = compute(entities, milestones, cfg, END)
    quality = DataQuality.from_checks(run_quality_checks(entities, milestones, stats, result, cfg, END))
    data = Report(cfg.name, result, quality, Delivery("#growth", "dry_run")).to_dict()
    data["data_quality"] = {
        "status": quality.status, "failed": sorted(c.name for c in quality.checks if not c.success)
    }
    return data


@pytest.fixture(scope="module")
def sqlite_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # one database, like the servers below (with two, the events database has its own
    # workspace dimension, which holds workspaces the app database lacks)
    url = f"sqlite:///{tmp_path_factory.mktemp('same') / 'demo.db'}"
    seed_demo(url, None, accounts=ACCOUNTS, seed=SEED, end_date=END)
    return _report({"app": url, "events": url})


def _assert_same(reference: dict, other: dict) -> None:
    for key in ("steps", "cohorts", "segments", "ranking", "lowest_converting", "current_period",
                "previous_period", "data_quality"):
        assert other[key] == reference[key], key


@pytest.mark.postgres
def test_postgresql_gives_the_sqlite_report(sqlite_report: dict, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    seed_demo(scoped, None, accounts=ACCOUNTS, seed=SEED, end_date=END)
    _assert_same(sqlite_report, _report({"app": scoped, "events": scoped}))


@pytest.mark.mariadb
def test_mariadb_gives_the_sqlite_report(sqlite_report: dict, mariadb_database: tuple[str, str]) -> None:
    url, database = mariadb_database
    scoped = url.rsplit("/", 1)[0] + f"/{database}"
    seed_demo(scoped, None, accounts=ACCOUNTS, seed=SEED, end_date=END)
    _assert_same(sqlite_report, _report({"app": scoped, "events": scoped}))

"""Shared test set-up: markers by folder, quiet third-party start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet, deterministic start-up for Prefect and Great Expectations in every test process.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parent.parent
DEMO_FRAMEWORK = ROOT / "framework" / "demo" / "growth.yaml"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "flows"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test gets back the environment it started with: `growth` commands called in
    process (flows.cli.main) set GROWTH_STORE_URL, source overrides and logging variables
    for their run, which must not leak into the next test."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture()
def slack():
    """A running Slack Web API stand-in (see tests/support/slack_standin.py)."""
    from tests.support.slack_standin import SlackStandIn

    server = SlackStandIn().start()
    try:
        yield server
    finally:
        server.stop()

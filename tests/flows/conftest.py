"""One Prefect test harness (temporary server and database) per test session,
and a metric store per session unless a test chooses its own."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session", autouse=True)
def session_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'growth.db'}"
    previous = os.environ.get("GROWTH_STORE_URL")
    os.environ["GROWTH_STORE_URL"] = url
    yield url
    if previous is None:
        os.environ.pop("GROWTH_STORE_URL", None)
    else:
        os.environ["GROWTH_STORE_URL"] = previous


@pytest.fixture(scope="session", autouse=True)
def session_data_docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """GX Data Docs of the session's runs go to a temporary directory, not the checkout's data/."""
    path = str(tmp_path_factory.mktemp("data-docs"))
    previous = os.environ.get("GROWTH_DATA_DOCS_DIR")
    os.environ["GROWTH_DATA_DOCS_DIR"] = path
    yield path
    if previous is None:
        os.environ.pop("GROWTH_DATA_DOCS_DIR", None)
    else:
        os.environ["GROWTH_DATA_DOCS_DIR"] = previous

"""Real database servers for integration tests: skipped locally with a reason when absent, never in CI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import IN_CI

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _require(url: str, what: str) -> sa.Engine:
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        engine.dispose()
        message = f"{what} is not reachable at {engine.url.render_as_string(hide_password=True)}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(f"{message} (CI must run these tests; .ci/run starts the service)")
        pytest.skip(message)
    return engine


@pytest.fixture()
def pg_schema() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL schema, dropped afterwards. Yields (url, schema)."""
    engine = _require(PG_URL, "PostgreSQL")
    schema = f"gf_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield PG_URL, schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture()
def mariadb_database() -> Iterator[tuple[str, str]]:
    """A fresh MariaDB database, dropped afterwards. Yields (url, database)."""
    engine = _require(MARIADB_URL, "MariaDB")
    name = f"gf_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    try:
        yield MARIADB_URL, name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        engine.dispose()

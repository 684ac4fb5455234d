"""Malformed or unreachable source and store URLs that hold a password: every failure is a
clear exit-4 error that shows the URL with the password hidden, never the password, and never
an unhandled exception (found here: a store URL with a port that is not a number raised a bare
ValueError; a URL that is only a secret was echoed as the "scheme" of the store)."""

from __future__ import annotations

import pytest

from framework.errors import SourceError
from tasks import extract
from tasks.store import MetricStore, StoreError

SECRET = "SECRETpw9"

BAD_URLS = {
    "port not a number": f"postgresql+psycopg://u:{SECRET}@host:notaport/db",
    "unknown dialect": f"nosuchdialect://u:{SECRET}@h/db",
    "unknown driver": f"postgresql+nosuchdriver://u:{SECRET}@h/db",
    "only the secret": SECRET,
    "bad query option": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db?sslmode=bogus",
    "refused (PostgreSQL)": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db",
    "refused (MariaDB)": f"mysql+pymysql://u:{SECRET}@127.0.0.1:1/db",
    "percent-encoded password": f"postgresql+psycopg://u:{SECRET}%40x@127.0.0.1:1/db",
    "broken IPv6 host": f"postgresql+psycopg://u:{SECRET}@[::1:5432/db",
}
@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_source_url_failures_hide_the_password(case: str) -> None:
    with pytest.raises(SourceError) as err:
        sources = extract.open_sources({"app": BAD_URLS[case]})
        try:
            with extract._reading("app", sources.engines["app"]) as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            sources.dispose()
    assert err.value.exit_code == 4 and str(err.value).startswith("source 'app' (")
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("case", sorted(BAD_URLS))
def test_store_url_failures_hide_the_password(case: str) -> None:
    with pytest.raises(StoreError) as err:
        MetricStore.open(BAD_URLS[case])
    assert err.value.exit_code == 4 and str(err.value).startswith("metric store (")
    assert SECRET not in str(err.value)

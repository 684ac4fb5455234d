"""Alembic environment of the metric store (programmatic use only, no alembic.ini).

`tasks.store.migrate` runs it with an open connection in
``config.attributes["connection"]`` (inside a transaction that holds the
migration lock); the version table is ``gf_alembic_version``, in the default
schema of that connection (on PostgreSQL: the first schema of search_path).
As a fallback (e.g. ad-hoc use), ``sqlalchemy.url`` is read from the config.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from tasks.store import VERSION_TABLE, metadata

config = context.config


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

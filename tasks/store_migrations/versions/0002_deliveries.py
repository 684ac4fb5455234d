"""Deliveries (one Slack message per framework x as_of x channel) and the full report JSON per snapshot.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gf_deliveries",
        sa.Column("framework", sa.Text, primary_key=True),
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("channel", sa.Text, primary_key=True),
        sa.Column("channel_id", sa.Text),
        sa.Column("ts", sa.Text),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("first_posted_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    with op.batch_alter_table("gf_snapshots") as batch:
        batch.add_column(sa.Column("report_json", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("gf_snapshots") as batch:
        batch.drop_column("report_json")
    op.drop_table("gf_deliveries")

"""Snapshot status: ``succeeded`` or ``failed_quality`` (stored, kept out of trends).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gf_snapshots") as batch:
        batch.add_column(sa.Column("status", sa.String(32), nullable=False, server_default="succeeded"))


def downgrade() -> None:
    with op.batch_alter_table("gf_snapshots") as batch:
        batch.drop_column("status")
